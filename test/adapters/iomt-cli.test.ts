/** The vendor CLI functions: translate a payload, validate a mapping folder; exit codes and printed results. */
import { strict as assert } from 'node:assert';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Reading } from '../../src/core/contract.js';
import { translateCommand, validateMappingCommand } from '../../src/adapters/mapping/index.js';
import { mappingsDir } from './helpers.js';

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => void out.push(t), err: (t: string) => void err.push(t) }, out, err };
}

describe('vendor CLI', () => {
  let tmp: string;
  before(() => {
    tmp = mkdtempSync(path.join(tmpdir(), 'cli-test-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('translate <folder> <payload>: prints the resources, exit 0', async () => {
    const c = capture();
    const code = await translateCommand([path.join(mappingsDir, 'bp-cuff'), path.join(mappingsDir, 'bp-cuff/samples/reading.json')], c.io);
    assert.equal(code, 0, c.err.join('\n'));
    const trs = JSON.parse(c.out.join('')) as Reading[];
    assert.deepEqual(
      trs[0].observations.map((o) => o.code.coding?.[0]?.code),
      ['85354-9', '8867-4'],
    );
  });

  it('translate <id> --mappings <dir>: finds the mapping by id', async () => {
    const c = capture();
    const code = await translateCommand(
      ['thermometer', path.join(mappingsDir, 'thermometer/samples/export.json'), '--mappings', mappingsDir],
      c.io,
    );
    assert.equal(code, 0, c.err.join('\n'));
    assert.equal((JSON.parse(c.out.join('')) as Reading[])[0].observations[0].valueQuantity?.code, 'Cel');
  });

  it('translate: a payload the mapping refuses prints the OperationOutcome, exit 1', async () => {
    const payload = path.join(tmp, 'bad.json');
    writeFileSync(
      payload,
      JSON.stringify({ deviceSerial: 'BP-1', patientId: 'P', measuredAt: '2026-11-23T07:30:00Z', systolic: 'high', diastolic: 80 }),
    );
    const c = capture();
    assert.equal(await translateCommand([path.join(mappingsDir, 'bp-cuff'), payload], c.io), 1);
    const oo = JSON.parse(c.err.join(''));
    assert.equal(oo.resourceType, 'OperationOutcome');
    assert.deepEqual(oo.issue[0].expression, ['$.systolic']);
  });

  it('translate: unknown target or unreadable payload, exit 2', async () => {
    const c = capture();
    assert.equal(await translateCommand(['no-such-adapter', 'x.json', '--mappings', mappingsDir], c.io), 2);
    assert.match(c.err.join(''), /neither a mapping folder nor a known adapter id/);
    assert.equal(await translateCommand([path.join(mappingsDir, 'bp-cuff'), path.join(tmp, 'missing.json')], c.io), 2);
    assert.equal(await translateCommand([], c.io), 2);
  });

  it('validate-mapping <folder>: ok with exit 0; every error with file and path, exit 1', async () => {
    const ok = capture();
    assert.equal(await validateMappingCommand([path.join(mappingsDir, 'cgm')], ok.io), 0);
    assert.deepEqual(ok.out, ['cgm: ok, 1/1 samples translate and validate']);
    const broken = path.join(tmp, 'acme-bp');
    cpSync(path.join(mappingsDir, 'bp-cuff'), broken, { recursive: true });
    // The iomt-fhir mistake: the diastolic component coded 8867-4 (Heart rate).
    writeFileSync(
      path.join(broken, 'fhirmapping.json'),
      readFileSync(path.join(mappingsDir, 'bp-cuff/fhirmapping.json'), 'utf8').replace('"8462-4"', '"8867-4"'),
    );
    const bad = capture();
    assert.equal(await validateMappingCommand([broken], bad.io), 1);
    assert.ok(
      bad.err.some((l) =>
        l.startsWith(
          "acme-bp/fhirmapping.json $.template[0].template.components: LOINC 85354-9 'Blood pressure panel with all children optional' (R4 profile bp) requires component DiastolicBP",
        ),
      ),
      bad.err.join('\n'),
    );
    assert.ok(
      bad.err.some((l) =>
        l.startsWith(
          'acme-bp/fhirmapping.json $.template[0].template.components[1].codes[1]: MDC 150022 (MDC_PRESS_BLD_NONINV_DIA) pairs with LOINC 8462-4',
        ),
      ),
      bad.err.join('\n'),
    );
    assert.match(bad.out.join(''), /^acme-bp: \d+ error\(s\)/);
  });

  it('validate-mapping <mappings folder>: validates every mapping in it', async () => {
    const c = capture();
    assert.equal(await validateMappingCommand([mappingsDir], c.io), 0, c.err.join('\n'));
    assert.match(
      c.out.join(''),
      /^9 mapping\(s\) loaded: activity-tracker, bp-cuff, cgm, ecg-waveform, glucose-meter, pulse-oximeter, respiratory-rate, thermometer, weight-scale; 0 error\(s\), 0 warning\(s\)$/,
    );
  });
});
