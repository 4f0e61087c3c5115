/**
 * The command line as README.md and docs/adapters.md show it, run as a user runs it (the CLI, from source, in a child
 * process): each documented form works, and a usage error says how to call it.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import type { Reading } from '../../src/core/contract.js';
import { REPO_ROOT } from '../helpers/harness.js';

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 60000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const SAMPLE = 'mappings/pulse-oximeter/samples/single-spo2.json';

describe('documented commands', function () {
  this.timeout(120000);

  for (const [name, args] of [
    ['translate <folder> <payload> (docs/adapters.md)', ['translate', 'mappings/pulse-oximeter', SAMPLE]],
    [
      'translate <id> <payload> --mappings --attr (docs/adapters.md)',
      ['translate', 'pulse-oximeter', SAMPLE, '--mappings', './mappings', '--attr', 'deviceId=OX-1'],
    ],
    ['translate <id> <payload> (README.md)', ['translate', 'pulse-oximeter', SAMPLE]],
    ['translate --adapter <id> <payload>', ['translate', '--adapter', 'pulse-oximeter', SAMPLE]],
  ] as const) {
    it(`${name}: prints the SpO2 Observation, exit 0`, () => {
      const r = cli(...args);
      assert.equal(r.code, 0, r.err);
      const readings = JSON.parse(r.out) as Reading[];
      assert.equal(readings[0].observations[0].code.coding?.[0]?.code, '2708-6');
    });
  }

  it('translate with a wrong call: exit 2 and the usage', () => {
    const r = cli('translate', SAMPLE);
    assert.equal(r.code, 2);
    assert.match(r.err, /usage: iomt-gateway translate <mapping-folder \| adapter-id> <payload\.json>/);
  });

  it('send-hl7 without --port sends to 127.0.0.1:2575 (no usage error)', () => {
    const r = cli('send-hl7', '--timeout-ms', '2000', 'test/hl7v2/fixtures/pcd01-monitor.hl7');
    assert.doesNotMatch(r.err, /usage/, 'the default port is taken, not a usage error');
    // Nothing listens there in the tests (or a gateway does, and answers): either way it went to 127.0.0.1:2575.
    assert.ok(/127\.0\.0\.1:2575/.test(r.err) || /ACKs:/.test(r.err + r.out), r.err + r.out);
  });
});
