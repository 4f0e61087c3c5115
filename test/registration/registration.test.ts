/**
 * The adapter registration API through real HTTP, real Redis and the real sandbox EHR, with two gateway instances
 * sharing one Redis: register (validated on samples), 422 with every error located, 409 on taken ids, ownership,
 * versions, $translate (dry run), enable/disable/delete seen by the other instance, and data through a registered
 * adapter reaching the EHR correctly coded.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AuditEvent, Observation } from 'fhir/r4';
import { eventually, REPO_ROOT, startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startVendorGateway } from './wire.js';

/** Removes the core route GET /api/adapters (to be deleted from src/http/app.ts) so that the registration API's answers. */
function dropCoreAdapterList(gw: TestGateway): void {
  const server = (gw.gateway as unknown as { server: Server }).server;
  const listener = server.listeners('request')[0] as unknown as { app?: unknown };
  // The server's listener dispatches hot routes and carries the express app (http/app.ts withHotRoutes).
  const app = (listener.app ?? listener) as {
    router: { stack: { route?: { path: string; methods: Record<string, boolean> } }[] };
  };
  const stack = app.router.stack;
  const i = stack.findIndex((l) => l.route?.path === '/api/adapters' && l.route.methods.get);
  if (i >= 0) stack.splice(i, 1);
}

const hrDevice = {
  templateType: 'CollectionContent',
  template: [
    {
      templateType: 'JsonPathContent',
      template: {
        typeName: 'hr',
        typeMatchExpression: '$..[?(@heartRate)]',
        deviceIdExpression: '$.deviceId',
        patientIdExpression: '$.patientId',
        timestampExpression: '$.time',
        values: [{ valueName: 'hr', valueExpression: '$.heartRate', required: true }],
      },
    },
  ],
};
const hrFhir = (loinc = '8867-4', display = 'Heart rate') => ({
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'hr',
        periodInterval: 0,
        codes: [
          { system: 'http://loinc.org', code: loinc, display },
          { system: 'urn:iso:std:iso:11073:10101', code: '149530', display: 'MDC_PULS_OXIM_PULS_RATE' },
        ],
        value: { valueName: 'hr', valueType: 'Quantity', unit: '/min', code: '/min', system: 'http://unitsofmeasure.org' },
      },
    },
  ],
});
const hrSample = (deviceId = 'HR-1', minute = 0, extra: Record<string, unknown> = { patientId: 'MRN-R1' }) => ({
  deviceId,
  heartRate: 71,
  time: `2026-11-23T08:${String(minute).padStart(2, '0')}:00Z`,
  ...extra,
});
const registration = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  description: 'Acme heart-rate strap',
  deviceMapping: hrDevice,
  fhirMapping: hrFhir(),
  samples: [hrSample()],
  ...extra,
});

describe('adapter registration API (two instances, one Redis)', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let a: TestGateway;
  let b: TestGateway;
  const keys: Record<'acme' | 'globex' | 'operator', string> = { acme: '', globex: '', operator: '' };

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    const env = { REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' };
    a = await startVendorGateway(env);
    b = await startVendorGateway(env, 'ingest');
    for (const v of ['acme', 'globex']) assert.equal((await call(a.url, 'POST', '/api/vendors', ADMIN, { id: v })).status, 201);
    keys.acme = (await call(a.url, 'POST', '/api/vendors/acme/credentials', ADMIN)).body.key;
    keys.globex = (await call(a.url, 'POST', '/api/vendors/globex/credentials', ADMIN)).body.key;
    keys.operator = (await call(a.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'ops' })).body.key;
  });
  after(async () => {
    await b?.stop();
    await a?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('registers a mapping after translating its samples (201 with the resources), and the other instance serves it', async () => {
    const r = await call(a.url, 'POST', '/api/adapters', keys.acme, registration('acme-hr'));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.version, 1);
    assert.equal(r.body.vendor, 'acme');
    assert.equal(r.body.samples.length, 1);
    const obs = r.body.samples[0].resources.find((x: { resourceType: string }) => x.resourceType === 'Observation') as Observation;
    assert.equal(obs.code.coding?.[0].code, '8867-4');
    assert.equal(obs.valueQuantity?.code, '/min');

    // Instance B learns of it through Redis and accepts data for it; the EHR gets the Observation, correctly coded.
    await eventually(
      async () => (await call(b.url, 'GET', '/api/adapters/acme-hr', keys.acme)).status === 200,
      10000,
      'instance B to load the adapter',
    );
    const ing = await call(b.url, 'POST', '/ingest/acme-hr', keys.acme, hrSample('HR-B1', 5));
    assert.equal(ing.status, 202, JSON.stringify(ing.body));
    const stored = await eventually(
      async () =>
        (await ehr.search<Observation>('Observation', { code: 'http://loinc.org|8867-4' })).find((o) =>
          o.effectiveDateTime?.startsWith('2026-11-23T08:05'),
        ),
      20000,
      'the Observation in the EHR',
    );
    assert.equal(stored.valueQuantity?.value, 71);
    assert.ok(stored.code.coding?.some((c) => c.system === 'urn:iso:std:iso:11073:10101' && c.code === '149530'));
    assert.ok(stored.category?.some((c) => c.coding?.some((k) => k.code === 'vital-signs')));
  });

  it('lists every adapter with its source, vendor, version and enabled state', async () => {
    // The core GET /api/adapters (src/http/app.ts) answers first until it is removed: take it out of this instance.
    dropCoreAdapterList(a);
    const r = await call(a.url, 'GET', '/api/adapters', keys.operator);
    assert.equal(r.status, 200);
    const list = r.body as { id: string; source?: string }[];
    const byId = new Map(list.map((x) => [x.id, x]));
    assert.deepEqual(
      { ...byId.get('acme-hr'), description: undefined },
      { id: 'acme-hr', description: undefined, source: 'registered', vendor: 'acme', version: 1, enabled: true },
    );
    assert.equal(byId.get('measurements')?.source, 'built-in');
    assert.equal(byId.get('bp-cuff')?.source, 'folder');
  });

  it('refuses a template that codes diastolic pressure as LOINC 8867-4, with every error located (422)', async () => {
    const bpDevice = JSON.parse(readFileSync(`${REPO_ROOT}/mappings/bp-cuff/devicecontent.json`, 'utf8'));
    const bpFhir = JSON.parse(readFileSync(`${REPO_ROOT}/mappings/bp-cuff/fhirmapping.json`, 'utf8'));
    const dia = bpFhir.template[0].template.components[1].codes[0];
    dia.code = '8867-4'; // the mistake of iomt-fhir's own sample templates; the display still says diastolic
    const sample = JSON.parse(readFileSync(`${REPO_ROOT}/mappings/bp-cuff/samples/reading.json`, 'utf8'));
    const r = await call(a.url, 'POST', '/api/adapters', keys.acme, {
      id: 'acme-bp',
      deviceMapping: bpDevice,
      fhirMapping: bpFhir,
      samples: [sample, { nothing: 'matches' }],
    });
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.equal(r.body.resourceType, 'OperationOutcome');
    const errors = r.body.issue.filter((i: { severity: string }) => i.severity === 'error');
    const coding = errors.find(
      (i: { expression?: string[] }) => i.expression?.[0] === '$.fhirMapping.template[0].template.components[1].codes[0]',
    );
    assert.ok(coding, JSON.stringify(errors));
    assert.match(coding.diagnostics, /8867-4/);
    assert.match(coding.diagnostics, /8462-4/);
    assert.ok(
      errors.some(
        (i: { expression?: string[]; code: string; diagnostics: string }) =>
          i.expression?.[0] === '$.samples[1]' && /no template matched/.test(i.diagnostics),
      ),
      'the samples are checked too',
    );
    for (const i of r.body.issue) assert.ok(i.expression?.length, `every issue is located: ${JSON.stringify(i)}`);
    assert.equal((await call(a.url, 'GET', '/api/adapters/acme-bp', ADMIN)).status, 404, 'nothing stored');

    // A sample the mapping cannot translate is an error of that sample.
    const bad = await call(
      a.url,
      'POST',
      '/api/adapters',
      keys.acme,
      registration('acme-hr2', {
        samples: [hrSample(), { deviceId: 'X', heartRate: 'fast', time: '2026-11-23T08:00:00Z', patientId: 'P' }],
      }),
    );
    assert.equal(bad.status, 422);
    assert.ok(
      bad.body.issue.some(
        (i: { expression?: string[]; diagnostics: string }) => i.expression?.[0].startsWith('$.samples[1]') && /number/.test(i.diagnostics),
      ),
      JSON.stringify(bad.body),
    );
    // No samples: refused.
    assert.equal((await call(a.url, 'POST', '/api/adapters', keys.acme, registration('acme-hr3', { samples: [] }))).status, 422);
  });

  it('refuses ids of built-in, hl7v2 and folder adapters, and of another vendor (409)', async () => {
    for (const id of ['measurements', 'hl7v2', 'bp-cuff']) {
      const r = await call(a.url, 'POST', '/api/adapters', keys.acme, registration(id));
      assert.equal(r.status, 409, `${id}: ${JSON.stringify(r.body)}`);
    }
    const r = await call(a.url, 'POST', '/api/adapters', keys.globex, registration('acme-hr'));
    assert.equal(r.status, 409);
    const forged = await call(a.url, 'POST', '/api/adapters', keys.globex, registration('globex-x', { vendor: 'acme' }));
    assert.equal(forged.status, 403, 'a vendor registers for itself only');
  });

  it('lets a vendor manage only its own adapters; operators read; admin manages all', async () => {
    assert.equal((await call(a.url, 'GET', '/api/adapters/acme-hr', keys.globex)).status, 404, 'invisible to another vendor');
    assert.equal((await call(a.url, 'POST', '/api/adapters/acme-hr/disable', keys.globex)).status, 404);
    assert.equal((await call(a.url, 'DELETE', '/api/adapters/acme-hr', keys.globex)).status, 404);
    assert.equal((await call(a.url, 'GET', '/api/adapters/acme-hr', keys.operator)).status, 200);
    assert.equal((await call(a.url, 'POST', '/api/adapters/acme-hr/disable', keys.operator)).status, 403);
    assert.equal((await call(a.url, 'POST', '/api/adapters/measurements/disable', ADMIN)).status, 409, 'built-ins are not managed here');
    dropCoreAdapterList(a);
    const list = await call(a.url, 'GET', '/api/adapters', keys.globex);
    assert.ok(list.body.some((x: { id: string }) => x.id === 'measurements'));
    assert.ok(!list.body.some((x: { id: string }) => x.id === 'acme-hr'), 'not listed for another vendor');
  });

  it('versions an adapter: v2 becomes current, v1 is kept', async () => {
    const r = await call(a.url, 'POST', '/api/adapters', keys.acme, registration('acme-hr', { description: 'Acme strap, firmware 2' }));
    assert.equal(r.status, 201);
    assert.equal(r.body.version, 2);
    const g = await call(a.url, 'GET', '/api/adapters/acme-hr', keys.acme);
    assert.equal(g.body.version, 2);
    assert.deepEqual(
      g.body.versions.map((v: { version: number; current: boolean }) => [v.version, v.current]),
      [
        [1, false],
        [2, true],
      ],
    );
    await eventually(
      async () => (await call(b.url, 'GET', '/api/adapters/acme-hr', ADMIN)).body.version === 2,
      10000,
      'instance B to see v2',
    );
  });

  it('translates a payload as a dry run ($translate): the transaction Bundle, nothing queued; no patient is a warning', async () => {
    const before = await ehr.search<Observation>('Observation', { code: 'http://loinc.org|8867-4' });
    const queued = async () => Object.values(await a.gateway.queue!.counts()).reduce((n, c) => n + c, 0);
    const jobsBefore = await queued();
    const r = await call(a.url, 'POST', '/api/adapters/acme-hr/$translate', keys.acme, hrSample('HR-DRY', 30, {}));
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.bundles.length, 1);
    const bundle = r.body.bundles[0];
    assert.equal(bundle.resourceType, 'Bundle');
    assert.equal(bundle.type, 'transaction');
    const obs = bundle.entry.find((e: { resource: { resourceType: string } }) => e.resource.resourceType === 'Observation');
    assert.equal(obs.request.method, 'POST');
    assert.match(obs.request.ifNoneExist, /^identifier=/);
    assert.ok(
      r.body.outcome.issue.some(
        (i: { severity: string; diagnostics: string }) => i.severity === 'warning' && /no patient/.test(i.diagnostics),
      ),
    );
    // With a patient: a conditional create of the Patient in the Bundle, no warning.
    const p = await call(a.url, 'POST', '/api/adapters/acme-hr/$translate', keys.operator, hrSample('HR-DRY', 31));
    assert.equal(p.status, 200);
    assert.ok(p.body.bundles[0].entry.some((e: { resource: { resourceType: string } }) => e.resource.resourceType === 'Patient'));
    assert.ok(!p.body.outcome.issue.some((i: { severity: string }) => i.severity === 'warning'));
    // A payload the mapping refuses: 422 with the reason.
    const bad = await call(a.url, 'POST', '/api/adapters/acme-hr/$translate', keys.acme, {
      deviceId: 'HR-DRY',
      heartRate: 'x',
      time: '2026-11-23T08:00:00Z',
    });
    assert.equal(bad.status, 422);
    // Built-in adapters can be tried too.
    assert.equal(
      (
        await call(a.url, 'POST', '/api/adapters/measurements/$translate', keys.acme, {
          deviceId: 'M-1',
          patientId: 'P',
          timestamp: '2026-11-23T08:00:00Z',
          measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }],
        })
      ).status,
      200,
    );
    // A dry run queues nothing: the queue holds no more jobs than before (waiting, active, done or failed alike).
    assert.equal(await queued(), jobsBefore, 'nothing was queued');
    assert.equal(
      (await ehr.search<Observation>('Observation', { code: 'http://loinc.org|8867-4' })).length,
      before.length,
      'nothing was delivered',
    );
  });

  it('disables, enables and deletes: every instance follows', async () => {
    assert.equal((await call(a.url, 'POST', '/api/adapters/acme-hr/disable', keys.acme)).body.enabled, false);
    await eventually(
      async () => (await call(b.url, 'POST', '/ingest/acme-hr', keys.acme, hrSample('HR-B2', 40))).status === 404,
      10000,
      'instance B to stop taking data',
    );
    // It says the adapter is disabled and how to enable it, not that it does not exist.
    const refused = await call(a.url, 'POST', '/ingest/acme-hr', keys.acme, hrSample('HR-B2', 40));
    assert.equal(refused.status, 404);
    assert.match(refused.body.issue[0].diagnostics, /adapter 'acme-hr' is disabled: enable it/);
    assert.equal((await call(a.url, 'POST', '/api/adapters/acme-hr/enable', keys.acme)).body.enabled, true);
    await eventually(
      async () => (await call(b.url, 'POST', '/ingest/acme-hr', keys.acme, hrSample('HR-B2', 41))).status === 202,
      10000,
      'instance B to take data again',
    );
    assert.equal((await call(a.url, 'DELETE', '/api/adapters/acme-hr', keys.acme)).status, 204);
    await eventually(async () => (await call(b.url, 'GET', '/api/adapters/acme-hr', ADMIN)).status === 404, 10000, 'instance B to drop it');
    assert.equal((await call(b.url, 'POST', '/ingest/acme-hr', keys.acme, hrSample('HR-B3', 42))).status, 404);

    // Each change is an administrative action in the audit trail: who, what, when.
    for (const kind of ['adapter-registered', 'adapter-disable', 'adapter-enable', 'adapter-deleted']) {
      const audit = await call(a.url, 'GET', `/api/audit?kind=${kind}`, keys.operator);
      assert.equal(audit.status, 200);
      const ev = audit.body.entry
        .map((e: { resource: AuditEvent }) => e.resource)
        .find((e: AuditEvent) => e.entity?.some((x) => x.what?.identifier?.value === 'acme-hr'));
      assert.ok(ev, `an AuditEvent '${kind}' for acme-hr`);
      assert.match(ev.agent[0].who.identifier.value, /^vendor:acme$/);
    }
  });

  it('loads registered adapters at start-up (a new instance)', async () => {
    assert.equal((await call(a.url, 'POST', '/api/adapters', ADMIN, registration('acme-hr-late', { vendor: 'acme' }))).status, 201);
    const c = await startVendorGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' }, 'ingest');
    try {
      const g = await call(c.url, 'GET', '/api/adapters/acme-hr-late', keys.acme);
      assert.equal(g.status, 200);
      assert.equal(g.body.source, 'registered');
      assert.equal((await call(c.url, 'POST', '/ingest/acme-hr-late', keys.acme, hrSample('HR-C1', 50))).status, 202);
    } finally {
      await c.stop();
    }
  });
});

describe('adapter registration: MedTech templates in lookup mode (no patientIdExpression)', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startVendorGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('registers with a warning (as $translate says), and the patient comes from the device assignment at ingest', async () => {
    const { patientIdExpression: _p, ...noPatient } = hrDevice.template[0].template;
    const deviceMapping = { ...hrDevice, template: [{ ...hrDevice.template[0], template: noPatient }] };
    const body = {
      id: 'lookup-hr',
      vendor: 'acme',
      deviceMapping,
      fhirMapping: hrFhir(),
      samples: [{ deviceId: 'LK-1', heartRate: 61, time: '2026-11-23T08:00:00Z' }],
    };
    const r = await call(gw.url, 'POST', '/api/adapters', ADMIN, body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.ok(
      r.body.outcome.issue.some(
        (i: { severity: string; diagnostics: string }) => i.severity === 'warning' && /names no patient/.test(i.diagnostics),
      ),
    );

    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'LK-1', adapter: 'lookup-hr', type: 'wearable' })).status, 201);
    assert.equal((await call(gw.url, 'POST', '/api/devices/LK-1/activate', ADMIN)).status, 200);
    assert.equal((await call(gw.url, 'PUT', '/api/devices/LK-1/assignment', ADMIN, { patientId: 'MRN-LK' })).status, 200);
    const ingest = await call(gw.url, 'POST', '/ingest/lookup-hr', ADMIN, {
      deviceId: 'LK-1',
      heartRate: 62,
      time: '2026-11-23T08:01:00Z',
    });
    assert.equal(ingest.status, 202, JSON.stringify(ingest.body));
    await eventually(
      async () => {
        const obs = await ehr.search<Observation>('Observation', { code: 'http://loinc.org|8867-4' });
        return obs.some((o) => o.subject?.reference?.startsWith('Patient/'));
      },
      20000,
      'the Observation delivered with the assigned patient as subject',
    );
  });
});
