/**
 * The validator indexes the R4 data types and the resource types the gateway validates (fhir/validate.ts), parsed in a
 * child process so that this process never holds the 37 MB of JSON; a resource that needs another type (a contained
 * resource) makes it index every type, and is then validated as before. Each case runs in a fresh process: the index
 * is per process.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, startRedis } from '../helpers/harness.js';

function inFreshProcess(body: string, env: Record<string, string> = {}): unknown {
  const script = `
    const v = await import('./src/fhir/validate.ts');
    const out = {};
    ${body}
    process.stdout.write(JSON.stringify(out));
  `;
  return JSON.parse(
    execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      env: { ...process.env, ...env },
    }),
  );
}

const DEVICE = { resourceType: 'Device', identifier: [{ system: 'urn:t', value: 'd1' }], status: 'active' };
const WITH_CONTAINED = {
  resourceType: 'Observation',
  status: 'final',
  code: { text: 'x' },
  contained: [{ resourceType: 'Specimen', id: 's1', status: 'available' }],
  specimen: { reference: '#s1' },
  valueString: 'y',
};

describe('validation: the R4 definitions indexed', function () {
  this.timeout(60_000);

  it("indexes the gateway's own types, and validates with them", () => {
    const out = inFreshProcess(`
      v.initValidation();
      out.after = v.validationDefinitions();
      out.valid = v.validate(${JSON.stringify(DEVICE)}).length;
      out.invalid = v.validate({ ...${JSON.stringify(DEVICE)}, status: 42 }).map((i) => i.severity);
      out.still = v.validationDefinitions();
    `);
    assert.deepEqual(out, { after: 'gateway', valid: 0, invalid: ['error'], still: 'gateway' });
  });

  it('indexes every type at the first resource that contains another type, and validates it', () => {
    const out = inFreshProcess(`
      v.initValidation();
      out.valid = v.validate(${JSON.stringify(WITH_CONTAINED)}).length;
      out.after = v.validationDefinitions();
      const bad = ${JSON.stringify(WITH_CONTAINED)};
      bad.contained[0].status = 'bogus-status-with spaces';
      bad.contained[0].unknownElement = 1;
      out.invalid = v.validate(bad).length > 0;
    `);
    assert.deepEqual(out, { valid: 0, after: 'all', invalid: true });
  });

  it('a worker indexes them at start when it forwards audit events (it validates each), and not otherwise', async () => {
    const redis = await startRedis();
    // No mappings: checking a mapping's samples at start validates, and would index the definitions anyway.
    const mappings = mkdtempSync(join(tmpdir(), 'gw-no-mappings-'));
    try {
      const worker = (auditForward: boolean) =>
        inFreshProcess(
          `
          const { startGateway } = await import('./test/helpers/harness.ts');
          const gw = await startGateway({ REDIS_URL: process.env.T_REDIS, FHIR_BASE_URL: 'http://127.0.0.1:9/fhir', AUDIT_FORWARD: '${auditForward}', MAPPINGS_DIR: process.env.T_MAPPINGS }, 'worker');
          out.atStart = v.validationDefinitions();
          await gw.stop();
        `,
          { T_REDIS: redis.url, T_MAPPINGS: mappings },
        );
      assert.deepEqual(worker(true), { atStart: 'gateway' });
      assert.deepEqual(worker(false), { atStart: 'none' });
    } finally {
      await redis.stop();
      rmSync(mappings, { recursive: true, force: true });
    }
  });
});
