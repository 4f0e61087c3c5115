/**
 * TypeScript plugins: the example vendor plugin (BLE blood-pressure characteristic, base64) loaded from PLUGINS_DIR,
 * through the real gateway to the sandbox EHR over HTTP; loading problems reported with their source; a plugin from an
 * installed package (PLUGIN_PACKAGES) built without the SDK module (foreign TranslationError kept); the CLI helper.
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Observation } from 'fhir/r4';
import { AdapterRegistry } from '../../src/adapters/registry.js';
import { checkPluginSamples, loadPlugins, loadPluginsInto } from '../../src/adapters/plugins.js';
import { definePlugin, isPluginAdapter } from '../../src/adapters/sdk.js';
import { TranslationError } from '../../src/core/contract.js';
import { initValidation } from '../../src/fhir/validate.js';
import examplePlugin, { decodeBloodPressure, sfloat } from '../../plugins/example-vendor/index.js';
import { eventually, REPO_ROOT, startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startVendorGateway } from '../registration/wire.js';

const PLUGINS = join(REPO_ROOT, 'plugins');
const CTX = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:patient' };
const msg = (body: unknown, attributes?: Record<string, string>) => ({
  body,
  channel: 'http',
  receivedAt: '2026-11-23T12:00:00Z',
  attributes,
});

describe('plugin SDK and the example vendor plugin', () => {
  before(() => initValidation());

  it('decodes IEEE 11073 SFLOAT and the GATT blood-pressure characteristic', () => {
    assert.equal(sfloat(0x0079), 121);
    assert.equal(sfloat(0xf0a1), 16.1);
    assert.equal(sfloat(0x0fff), -1);
    assert.equal(sfloat(0x07ff), undefined, 'NaN');
    const m = decodeBloodPressure(Buffer.from('BnkATwBdAOoHCxcIHgBAAA==', 'base64'));
    assert.deepEqual(m, { unit: 'mmHg', systolic: 121, diastolic: 79, mean: 93, localTime: '2026-11-23T08:30:00', pulse: 64 });
  });

  it('translates into a correctly coded blood-pressure panel and pulse, device id from the channel when the payload has none', () => {
    assert.ok(isPluginAdapter(examplePlugin));
    assert.deepEqual(checkPluginSamples(examplePlugin, CTX), []);
    const [t] = examplePlugin.translate(msg({ patientId: 'P1', data: 'BIIAUgD/B0gA' }, { deviceId: 'BLE-T1' }), CTX);
    assert.equal(t.devices[0].identifier?.[0].value, 'BLE-T1');
    const panel = t.observations.find((o) => o.code.coding?.[0].code === '85354-9')!;
    assert.equal(panel.effectiveDateTime, '2026-11-23T12:00:00Z', 'a cuff without a clock: the receive time');
    assert.deepEqual(
      panel.component?.map((c) => [c.code.coding?.[0].code, c.valueQuantity?.value, c.valueQuantity?.code]),
      [
        ['8480-6', 130, 'mm[Hg]'],
        ['8462-4', 82, 'mm[Hg]'],
      ],
    );
    const pulse = t.observations.find((o) => o.code.coding?.[0].code === '8867-4')!;
    assert.equal(pulse.valueQuantity?.value, 72);
  });

  it('refuses what it cannot decode with a located TranslationError', () => {
    const cases: [unknown, RegExp, string][] = [
      [{ deviceId: 'X', data: 'BnkA' }, /too short/, '$.data'],
      [{ deviceId: 'X', data: '***' }, /base64/, '$.data'],
      [{ data: 'BIIAUgD/B0gA' }, /deviceId is required/, '$.deviceId'],
      [{ deviceId: 'X', data: 'BnkATwBdAOoHCxcIHgBAAA==' }, /timeZoneOffsetMinutes/, '$.timeZoneOffsetMinutes'],
      [{ deviceId: 'X', characteristic: '2A18', data: 'BIIAUgD/B0gA' }, /not supported/, '$.characteristic'],
    ];
    for (const [body, re, where] of cases) {
      assert.throws(
        () => examplePlugin.translate(msg(body), CTX),
        (e: unknown) => {
          assert.ok(e instanceof TranslationError);
          const i = e.outcome.issue.find((x) => re.test(x.diagnostics ?? ''));
          assert.ok(i, `${JSON.stringify(body)}: ${JSON.stringify(e.outcome)}`);
          assert.equal(i.expression?.[0], where);
          return true;
        },
      );
    }
  });

  it('definePlugin refuses unusable definitions at import time', () => {
    assert.throws(() => definePlugin({ id: 'Bad Id', description: 'x', translate: () => [] }), /must match/);
    assert.throws(() => definePlugin({ id: 'ok', description: '', translate: () => [] }), /description/);
  });
});

describe('plugin loading (PLUGINS_DIR, PLUGIN_PACKAGES)', () => {
  let dir: string;
  before(() => {
    initValidation();
    dir = mkdtempSync(join(tmpdir(), 'gw-plugins-'));
    const sdk = JSON.stringify(join(REPO_ROOT, 'src/adapters/sdk.ts'));
    writeFileSync(join(dir, 'not-a-plugin.mjs'), 'export default { id: "x", translate() { return []; } };\n');
    writeFileSync(join(dir, 'broken.mjs'), 'export default definePlugin(;\n');
    writeFileSync(
      join(dir, 'bad-sample.ts'),
      `import { definePlugin, fromMeasurements } from ${sdk};
export default definePlugin({ id: 'bad-sample', description: 'heart rate in mmHg', translate: (m, c) => fromMeasurements(m.body, m, c),
  samples: [{ name: 'hr', body: { deviceId: 'D', patientId: 'P', timestamp: '2026-11-23T10:00:00Z', measurements: [{ code: 'MDC_PULS_RATE_NON_INV', value: 60, unit: 'mmHg' }] } }] });
`,
    );
    writeFileSync(join(dir, 'README.md'), 'not a module\n');
    // An installed package that does not import the SDK: marks its adapter itself and throws its own TranslationError.
    const pkg = join(dir, 'app', 'node_modules', 'acme-iomt-plugin');
    mkdirSync(pkg, { recursive: true });
    writeFileSync(
      join(pkg, 'package.json'),
      JSON.stringify({ name: 'acme-iomt-plugin', version: '1.0.0', main: 'index.js', type: 'module' }),
    );
    writeFileSync(
      join(pkg, 'index.js'),
      `class TranslationError extends Error { constructor(outcome) { super('refused'); this.name = 'TranslationError'; this.outcome = outcome; } }
export const adapters = [{ id: 'acme-pkg', description: 'from a package', apiVersion: 1, samples: [{ name: 'keep-alive', body: { sample: true } }], [Symbol.for('iomt-gateway.plugin')]: true,
  translate(m) { if (m.body && m.body.sample) return [{ devices: [{ resourceType: 'Device', identifier: [{ system: 'urn:test:device', value: 'ACME-1' }], status: 'active' }], observations: [] }]; throw new TranslationError({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'value', diagnostics: 'acme says no', expression: ['$.x'] }] }); } }];
`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the repository plugins folder', async () => {
    const r = await loadPlugins({ dir: PLUGINS });
    assert.deepEqual(r.errors, []);
    assert.deepEqual(
      r.adapters.map((a) => a.id),
      ['example-ble-bp'],
    );
  });

  it('reports every broken plugin with its source and loads the rest', async () => {
    const r = await loadPlugins({ dir, packages: ['acme-iomt-plugin', 'no-such-plugin-package'], resolveFrom: join(dir, 'app') });
    const errorOf = (name: string) =>
      r.errors
        .filter((e) => e.source.endsWith(name))
        .map((e) => e.message)
        .join('\n');
    assert.match(errorOf('not-a-plugin.mjs'), /not made with definePlugin/);
    assert.match(errorOf('broken.mjs'), /cannot import/);
    assert.match(errorOf('bad-sample.ts'), /not loaded: sample 'hr'.*unit/);
    assert.match(errorOf('no-such-plugin-package'), /cannot import/);
    assert.ok(!r.errors.some((e) => e.source.endsWith('README.md')));
    assert.deepEqual(
      r.adapters.map((a) => a.id),
      ['acme-pkg'],
    );
    // Its own TranslationError class: the OperationOutcome reaches the sender as the gateway's TranslationError.
    assert.throws(
      () => r.adapters[0].translate(msg({}), CTX),
      (e: unknown) => e instanceof TranslationError && e.status === 422 && e.outcome.issue[0].diagnostics === 'acme says no',
    );
  });

  it('loadPluginsInto (for the CLI) registers plugins of PLUGINS_DIR and refuses taken ids', async () => {
    const registry = new AdapterRegistry();
    const raw = new Map<string, string | string[] | undefined>([
      ['PLUGINS_DIR', PLUGINS],
      ['PLUGIN_PACKAGES', undefined],
    ]);
    const r = await loadPluginsInto(registry, { raw, ...CTX });
    assert.deepEqual(r, { ids: ['example-ble-bp'], errors: [] });
    assert.ok(registry.get('example-ble-bp'));
    const again = await loadPluginsInto(registry, { raw, ...CTX });
    assert.deepEqual(again.ids, []);
    assert.match(again.errors[0].message, /already taken/);
  });
});

describe('plugin adapter through the real gateway to the sandbox EHR', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startVendorGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept', PLUGINS_DIR: PLUGINS });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('ingests a BLE payload over HTTP and delivers the blood-pressure panel', async () => {
    const r = await call(gw.url, 'POST', '/ingest/example-ble-bp', ADMIN, {
      deviceId: 'BLE-H1',
      patientId: 'MRN-PL1',
      characteristic: '2A35',
      data: 'BnkATwBdAOoHCxcIHgBAAA==',
      timeZoneOffsetMinutes: -300,
    });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const panel = await eventually(
      async () =>
        (await ehr.search<Observation>('Observation', { code: 'http://loinc.org|85354-9' })).find(
          (o) => o.effectiveDateTime === '2026-11-23T08:30:00-05:00',
        ),
      20000,
      'the panel in the EHR',
    );
    assert.ok(panel.code.coding?.some((c) => c.system === 'urn:iso:std:iso:11073:10101' && c.code === '150020'));
    assert.ok(panel.subject?.reference?.startsWith('Patient/'));
    const bad = await call(gw.url, 'POST', '/ingest/example-ble-bp', ADMIN, { deviceId: 'BLE-H1', data: 'BnkA' });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.issue[0].expression[0], '$.data');
  });

  it('is listed with source plugin and can be tried with $translate', async () => {
    const one = await call(gw.url, 'GET', '/api/adapters/example-ble-bp', ADMIN);
    assert.equal(one.status, 200);
    assert.equal(one.body.source, 'plugin');
    assert.equal(one.body.vendor, 'example-vendor');
    const dry = await call(gw.url, 'POST', '/api/adapters/example-ble-bp/$translate', ADMIN, { deviceId: 'BLE-H2', data: 'BIIAUgD/B0gA' });
    assert.equal(dry.status, 200, JSON.stringify(dry.body));
    assert.ok(
      dry.body.outcome.issue.some((i: { severity: string }) => i.severity === 'warning'),
      'no patient: a warning',
    );
  });
});
