/**
 * Plugins as docs/adapters.md shows them, in the compiled gateway (`node dist/main.js`, built in a fresh clone) and from
 * source (`node --import tsx src/main.ts`, what `npm run dev` runs):
 *  - a TypeScript plugin loads in the compiled gateway (`PLUGINS_DIR=./plugins … translate`, and `start`);
 *  - a plugin in a folder outside the repository, with no node_modules, imports `iomt-fhir-gateway/sdk` and gets the
 *    running gateway's own SDK (one TranslationError class, not a copy);
 *  - a plugin Node loads as CommonJS (where no module hook reaches) is reported with how to make it an ES module.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, Observation } from 'fhir/r4';
import type { Reading } from '../../src/core/contract.js';
import { loadPlugins } from '../../src/adapters/plugins.js';
import { TranslationError } from '../../src/core/contract.js';
import { initValidation } from '../../src/fhir/validate.js';
import { eventually, postJson, startRedis, type TestRedis } from '../helpers/harness.js';
import { type FreshClone, freshClone } from './fresh-clone.js';

const HR = {
  deviceId: 'HR-OUT-1',
  patientId: 'MRN-OUT-1',
  timestamp: '2026-11-23T10:00:00Z',
  measurements: [{ code: 'MDC_PULS_RATE_NON_INV', value: 61, unit: 'bpm' }],
};

/** A TypeScript plugin (type annotations, `import type`) importing the SDK by the package name. */
const TS_PLUGIN = `import { definePlugin, fromMeasurements, TranslationError } from 'iomt-fhir-gateway/sdk';
import type { InboundMessage, TranslationContext } from 'iomt-fhir-gateway/sdk';

interface Strap { deviceId: string; patientId: string; timestamp: string; bpm: number }

export default definePlugin({
  id: 'outside-ts',
  description: 'a heart-rate strap, in TypeScript, outside the repository',
  translate(message: InboundMessage, context: TranslationContext) {
    const b = message.body as Strap;
    if (typeof b.bpm !== 'number') {
      const error = TranslationError.of('bpm must be a number', '$.bpm');
      (globalThis as { outsidePluginError?: unknown }).outsidePluginError = error;
      throw error;
    }
    return fromMeasurements({ ...b, measurements: [{ code: 'MDC_PULS_RATE_NON_INV', value: b.bpm, unit: 'bpm' }] }, message, context);
  },
  samples: [{ name: 'strap', body: { deviceId: 'S-1', patientId: 'P-1', timestamp: '2026-11-23T10:00:00Z', bpm: 60 } }],
});
`;

/** The same in plain JavaScript, as a single .mjs file. */
const JS_PLUGIN = `import { definePlugin, fromMeasurements } from 'iomt-fhir-gateway/sdk';
export default definePlugin({
  id: 'outside-js',
  description: 'measurements, in JavaScript, outside the repository',
  translate: (message, context) => fromMeasurements(message.body, message, context),
  samples: [{ name: 'hr', body: ${JSON.stringify(HR)} }],
});
`;

describe('plugins in the compiled gateway and from outside the repository', function () {
  this.timeout(120000);
  let clone: FreshClone;
  let outside: string;
  let payloads: string;

  before(() => {
    clone = freshClone({ build: true });
    outside = mkdtempSync(join(tmpdir(), 'gw-outside-plugins-'));
    // A plugin package: a folder with package.json ("type": "module") and TypeScript source, no node_modules.
    mkdirSync(join(outside, 'outside-ts'));
    writeFileSync(join(outside, 'outside-ts', 'package.json'), JSON.stringify({ name: 'outside-ts', type: 'module', main: 'index.ts' }));
    writeFileSync(join(outside, 'outside-ts', 'index.ts'), TS_PLUGIN);
    writeFileSync(join(outside, 'outside-js.mjs'), JS_PLUGIN);
    payloads = mkdtempSync(join(tmpdir(), 'gw-outside-payloads-'));
    writeFileSync(
      join(payloads, 'strap.json'),
      JSON.stringify({ deviceId: 'S-2', patientId: 'P-2', timestamp: '2026-11-23T11:00:00Z', bpm: 58 }),
    );
    writeFileSync(join(payloads, 'hr.json'), JSON.stringify(HR));
  });
  after(() => {
    clone?.remove();
    if (outside) rmSync(outside, { recursive: true, force: true });
    if (payloads) rmSync(payloads, { recursive: true, force: true });
  });

  function run(args: string[], env: Record<string, string>, cwd = clone.dir) {
    const r = spawnSync(process.execPath, args, {
      cwd,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_LEVEL: 'silent', ...env },
      encoding: 'utf8',
      timeout: 60000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  }

  function firstCode(out: string): string | undefined {
    return (JSON.parse(out) as Reading[])[0]?.observations[0]?.code.coding?.[0]?.code;
  }

  it('compiled: PLUGINS_DIR=./plugins node dist/main.js translate loads the TypeScript example plugin', () => {
    const r = run(['dist/main.js', 'translate', '--adapter', 'example-ble-bp', 'plugins/example-vendor/samples/cuff-reading.json'], {
      PLUGINS_DIR: './plugins',
    });
    assert.equal(r.code, 0, r.err + r.out);
    assert.doesNotMatch(r.err, /plugin not loaded/);
    const codes = (JSON.parse(r.out) as Reading[]).flatMap((t) => t.observations.map((o) => o.code.coding?.[0]?.code));
    assert.ok(codes.includes('85354-9'), `the blood-pressure panel among ${codes.join(', ')}`);
  });

  for (const [mode, args] of [
    ['compiled (node dist/main.js)', ['dist/main.js']],
    ['from source (node --import tsx src/main.ts)', ['--import', 'tsx', 'src/main.ts']],
  ] as const) {
    it(`${mode}: plugins outside the repository import iomt-fhir-gateway/sdk (TypeScript package and .mjs)`, () => {
      const ts = run([...args, 'translate', 'outside-ts', join(payloads, 'strap.json')], { PLUGINS_DIR: outside });
      assert.equal(ts.code, 0, ts.err + ts.out);
      assert.doesNotMatch(ts.err, /plugin not loaded/);
      assert.equal(firstCode(ts.out), '8867-4');
      const js = run([...args, 'translate', 'outside-js', join(payloads, 'hr.json')], { PLUGINS_DIR: outside });
      assert.equal(js.code, 0, js.err + js.out);
      assert.equal(firstCode(js.out), '8867-4');
    });
  }

  it('a plugin loaded as CommonJS is reported with how to make it an ES module', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-cjs-plugin-'));
    try {
      writeFileSync(join(dir, 'loose.ts'), TS_PLUGIN.replace("'outside-ts'", "'loose-ts'"));
      const r = run(['dist/main.js', 'translate', 'loose-ts', join(payloads, 'strap.json')], { PLUGINS_DIR: dir });
      assert.equal(r.code, 1, 'the adapter is not there');
      assert.match(r.err, /plugin not loaded: .*loose\.ts: cannot import: .*iomt-fhir-gateway\/sdk.*loaded as CommonJS.*"type": "module"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('in process: the plugin gets the running gateway SDK (its TranslationError is the gateway class)', async () => {
    initValidation();
    const r = await loadPlugins({ dir: outside });
    assert.deepEqual(r.errors, []);
    const adapter = r.adapters.find((a) => a.id === 'outside-ts');
    assert.ok(adapter);
    const message = {
      body: { deviceId: 'S', patientId: 'P', timestamp: '2026-11-23T10:00:00Z' },
      channel: 'http',
      receivedAt: '2026-11-23T10:00:00Z',
    };
    assert.throws(
      () => adapter.translate(message, { deviceIdentifierSystem: 'urn:d', patientIdentifierSystem: 'urn:p' }),
      (e: unknown) => {
        assert.ok(e instanceof TranslationError);
        assert.equal(e, (globalThis as { outsidePluginError?: unknown }).outsidePluginError, 'the very error the plugin threw');
        return true;
      },
    );
  });

  describe('compiled: node dist/main.js start with PLUGINS_DIR outside the repository', () => {
    let redis: TestRedis;
    before(async () => {
      redis = await startRedis();
    });
    after(async () => {
      await redis?.stop();
    });

    it('serves the TypeScript plugin: listed, and its data reaches the sandbox EHR', async () => {
      const child = spawn(process.execPath, ['dist/main.js', 'start'], {
        cwd: clone.dir,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          PLUGINS_DIR: outside,
          REDIS_URL: redis.url,
          PORT: '0',
          MLLP_ENABLED: 'false',
          SANDBOX_PERSIST: 'false',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (out += b.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      try {
        const url = await eventually(() => /"url":"(http:[^"]+)"[^\n]*"msg":"gateway started"/.exec(out)?.[1], 60000, 'the gateway');
        assert.doesNotMatch(out, /plugin not loaded/);
        const listed = (await (await fetch(`${url}/api/adapters/outside-ts`)).json()) as { source: string };
        assert.equal(listed.source, 'plugin');
        const r = await postJson(`${url}/ingest/outside-ts`, {
          deviceId: 'S-9',
          patientId: 'P-9',
          timestamp: '2026-11-23T12:00:00Z',
          bpm: 57,
        });
        assert.equal(r.status, 202, JSON.stringify(r.body));
        await eventually(
          async () => {
            const b = (await (await fetch(`${url}/sandbox/fhir/Observation?code=http://loinc.org|8867-4`)).json()) as Bundle;
            return b.entry?.some((e) => (e.resource as Observation).valueQuantity?.value === 57);
          },
          20000,
          'the Observation in the sandbox EHR',
        );
      } finally {
        child.kill('SIGTERM');
        await exited;
      }
    });
  });
});
