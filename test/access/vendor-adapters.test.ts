/**
 * A vendor credential ingests through its own vendor's registered adapters and the shared ones (built-in, folder,
 * plugin), never through another vendor's: that answers exactly as an unknown adapter (404), also on replay. Device
 * credentials are bound to their device, not to an adapter, and keep working.
 */
import { strict as assert } from 'node:assert';
import { startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';

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
const hrFhir = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'hr',
        periodInterval: 0,
        codes: [
          { system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' },
          { system: 'urn:iso:std:iso:11073:10101', code: '149530', display: 'MDC_PULS_OXIM_PULS_RATE' },
        ],
        value: { valueName: 'hr', valueType: 'Quantity', unit: '/min', code: '/min', system: 'http://unitsofmeasure.org' },
      },
    },
  ],
};
const hr = (deviceId: string, minute = 0) => ({
  deviceId,
  patientId: 'MRN-V1',
  heartRate: 71,
  time: `2026-11-23T08:${String(minute).padStart(2, '0')}:00Z`,
});

describe("a vendor cannot ingest through another vendor's adapter", function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  const keys: Record<string, string> = {};

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' });
    for (const v of ['acme', 'globex']) {
      assert.equal((await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: v })).status, 201);
      keys[v] = (await call(gw.url, 'POST', `/api/vendors/${v}/credentials`, ADMIN)).body.key;
    }
    keys.operator = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'replayer' })).body.key;
    const reg = await call(gw.url, 'POST', '/api/adapters', keys.acme, {
      id: 'acme-hr',
      deviceMapping: hrDevice,
      fhirMapping: hrFhir,
      samples: [hr('HR-S')],
    });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it("answers another vendor's registered adapter as an unknown one, and lets the owner, admin and built-ins through", async () => {
    const foreign = await call(gw.url, 'POST', '/ingest/acme-hr', keys.globex, hr('HR-G1'));
    const unknown = await call(gw.url, 'POST', '/ingest/no-such-adapter', keys.globex, hr('HR-G1'));
    assert.equal(foreign.status, 404);
    assert.equal(foreign.body.resourceType, 'OperationOutcome');
    assert.equal(
      foreign.body.issue[0].diagnostics.replace('acme-hr', 'X'),
      unknown.body.issue[0].diagnostics.replace('no-such-adapter', 'X'),
      'the same answer as for an adapter that does not exist',
    );
    assert.equal((await call(gw.url, 'GET', '/api/devices/HR-G1', ADMIN)).status, 404, 'nothing was registered');

    assert.equal((await call(gw.url, 'POST', '/ingest/acme-hr', keys.acme, hr('HR-A1'))).status, 202, 'the owner');
    assert.equal((await call(gw.url, 'POST', '/ingest/acme-hr', ADMIN, hr('HR-ADM'))).status, 202, 'admin');
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', keys.globex, reading('G-M1'))).status, 202, 'a built-in adapter');

    // Replayed by an operator, the refusal is replayed with the vendor's rights: refused again.
    const id = foreign.headers.get('x-refused-id');
    assert.ok(id, 'kept like any refusal of an unknown adapter');
    const replay = await call(gw.url, 'POST', `/api/refusals/${id}/replay`, keys.operator);
    assert.equal(replay.status, 422);
    assert.equal(replay.body.result, 'refused');
    assert.equal((await call(gw.url, 'GET', '/api/devices/HR-G1', ADMIN)).status, 404);
  });

  it('a device credential keeps sending through the adapter its device speaks', async () => {
    assert.equal((await call(gw.url, 'POST', '/api/devices', keys.acme, { id: 'HR-D1', adapter: 'acme-hr' })).status, 201);
    assert.equal((await call(gw.url, 'POST', '/api/devices/HR-D1/activate', keys.acme)).status, 200);
    // A device key files readings only for its assigned patient (DEVICE_PATIENT_BINDING=assigned-only).
    assert.equal((await call(gw.url, 'PUT', '/api/devices/HR-D1/assignment', ADMIN, { patientId: 'MRN-V1' })).status, 200);
    const device = (await call(gw.url, 'POST', '/api/devices/HR-D1/credentials', keys.acme)).body.key as string;
    assert.equal((await call(gw.url, 'POST', '/ingest/acme-hr', device, hr('HR-D1'))).status, 202);
  });
});
