/**
 * Issue 13: one vendor template must not freeze the gateway. A real gateway process (the CLI, from source) with real
 * Redis and EHR; a vendor registers templates that get past every static check (no regex, no calls, within the size
 * limits) but cost about half a second each on a large payload. The message is refused (422, kept with the refusals)
 * once the time budget is spent, /healthz keeps answering meanwhile, and the adapter takes the next message.
 *
 * Bounds are generous (the budget is 500 ms; the refusal is asserted within 10 s, /healthz within 1 s) against a
 * cost of many seconds (tens of seconds) when templates run in the event loop.
 */
import { strict as assert } from 'node:assert';
import { spawnGateway, startEhr, startRedis, type ChildGateway, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call } from '../devices/wire.js';

const TEMPLATES = 60;
const BUDGET_MS = 500;

const deviceMapping = {
  templateType: 'CollectionContent',
  template: Array.from({ length: TEMPLATES }, (_, i) => ({
    templateType: 'JsonPathContent',
    template: {
      typeName: 'spo2',
      typeMatchExpression: `$..[?(@.spo2 != null && @.k${i} == 1)]`,
      deviceIdExpression: '$.device',
      patientIdExpression: '$.patient',
      timestampExpression: '$.time',
      values: [{ valueName: 'spo2', valueExpression: '$.spo2', required: true }],
    },
  })),
};
const fhirMapping = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'spo2',
        periodInterval: 0,
        codes: [
          { system: 'http://loinc.org', code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry' },
          { system: 'http://loinc.org', code: '2708-6', display: 'Oxygen saturation in Arterial blood' },
        ],
        value: { valueName: 'spo2', valueType: 'Quantity', unit: '%', code: '%', system: 'http://unitsofmeasure.org' },
      },
    },
  ],
};
const sample = (minute = 0) => ({
  device: 'OX-1',
  patient: 'MRN-B1',
  time: `2026-11-23T08:${String(minute).padStart(2, '0')}:00Z`,
  spo2: 97,
  k0: 1,
});
/** About 420 KB of nested objects: each `$..[?(…)]` template walks every node of it. */
const hostile = { readings: Array.from({ length: 12000 }, (_, i) => ({ a: i, b: { c: 'x', d: [1, 2] } })) };

describe('vendor templates: a hard time budget per message, off the event loop (real gateway process)', function () {
  this.timeout(120_000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: ChildGateway;
  let url: string;
  let vendorKey: string;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = spawnGateway(
      {
        REDIS_URL: redis.url,
        FHIR_BASE_URL: ehr.url,
        ADMIN_API_KEY: ADMIN,
        UNKNOWN_PATIENT_POLICY: 'create',
        TEMPLATE_BUDGET_MS: String(BUDGET_MS),
      },
      'all',
    );
    url = await gw.url;
    assert.equal((await call(url, 'POST', '/api/vendors', ADMIN, { id: 'acme' })).status, 201);
    vendorKey = (await call(url, 'POST', '/api/vendors/acme/credentials', ADMIN)).body.key;
    const reg = await call(url, 'POST', '/api/adapters', vendorKey, { id: 'acme-slow', deviceMapping, fhirMapping, samples: [sample()] });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('refuses the message when the budget is spent (422, not retryable, kept), and /healthz answers meanwhile', async () => {
    let probing = true;
    let worst = 0;
    let probes = 0;
    const probe = (async () => {
      while (probing) {
        const t = performance.now();
        const r = await fetch(`${url}/healthz`);
        await r.text();
        assert.equal(r.status, 200);
        worst = Math.max(worst, performance.now() - t);
        probes++;
        await new Promise((res) => setTimeout(res, 25));
      }
    })();
    const t0 = performance.now();
    const r = await call(url, 'POST', '/ingest/acme-slow', vendorKey, hostile);
    const elapsed = performance.now() - t0;
    probing = false;
    await probe;
    assert.equal(r.status, 422, JSON.stringify(r.body));
    const text = JSON.stringify(r.body);
    assert.match(text, /did not finish this message within its time budget/);
    assert.match(text, new RegExp(`TEMPLATE_BUDGET_MS=${BUDGET_MS}`));
    assert.equal(r.headers.get('retry-after'), null);
    assert.ok(elapsed < 10_000, `refused after ${Math.round(elapsed)} ms`);
    assert.ok(probes >= 3, `only ${probes} /healthz probes ran`);
    assert.ok(worst < 1000, `/healthz took ${Math.round(worst)} ms at worst while the template ran`);
    console.log(`      refused after ${Math.round(elapsed)} ms; /healthz: ${probes} probes, worst ${Math.round(worst)} ms`);

    const refusals = await call(url, 'GET', '/api/refusals?adapter=acme-slow', ADMIN);
    assert.equal(refusals.status, 200);
    assert.match(JSON.stringify(refusals.body), /time budget/);
  });

  it('takes the next message through the same adapter (the worker was replaced)', async () => {
    const r = await call(url, 'POST', '/ingest/acme-slow', vendorKey, sample(1));
    assert.equal(r.status, 202, JSON.stringify(r.body));
  });

  it('bounds $translate (the dry run) the same way', async () => {
    const r = await call(url, 'POST', '/api/adapters/acme-slow/$translate', vendorKey, hostile);
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.match(JSON.stringify(r.body), /TEMPLATE_BUDGET_MS/);
  });
});
