/**
 * The sandbox reads the R4 StructureDefinitions only when the validator has not indexed them in the same process (a
 * gateway with the sandbox on indexes all of them for validation at start, so the sandbox of role all used to parse
 * the same 37 MB twice). Each case runs in a fresh process: the index is per process.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { REPO_ROOT } from '../helpers/harness.js';

function inFreshProcess(validateFirst: boolean): { structureDefinitions: string; searchParameters: boolean; found: number } {
  const script = `
    ${validateFirst ? "const { initValidation } = await import('./src/fhir/validate.ts'); initValidation({ allTypes: true });" : ''}
    const { createSandboxEhr, sandboxDefinitions } = await import('./src/sandbox/sandbox.ts');
    const ehr = await createSandboxEhr();
    await ehr.repo.createResource({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, identifier: [{ system: 'urn:t', value: '1' }] });
    const found = await ehr.repo.searchResources({ resourceType: 'Observation', filters: [{ code: 'identifier', operator: 'eq', value: 'urn:t|1' }] });
    process.stdout.write(JSON.stringify({ ...sandboxDefinitions(), found: found.length }));
  `;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

describe('sandbox: R4 definitions read once per process', function () {
  this.timeout(60_000);

  it('reuses the definitions the validator indexed, and still serves and searches resources', () => {
    assert.deepEqual(inFreshProcess(true), { structureDefinitions: 'reused', searchParameters: true, found: 1 });
  });

  it('reads them itself when it runs alone (a test EHR, or before validation)', () => {
    assert.deepEqual(inFreshProcess(false), { structureDefinitions: 'read', searchParameters: true, found: 1 });
  });
});
