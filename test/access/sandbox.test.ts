/**
 * The sandbox EHR holds delivered readings (PHI): with ADMIN_API_KEY set it takes an operator or admin credential,
 * while the gateway's own delivery to it over HTTP keeps working (it presents a key made for this process).
 */
import { strict as assert } from 'node:assert';
import type { Bundle, Observation } from 'fhir/r4';
import { eventually, startRedis, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';

describe('the sandbox EHR behind access control', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let gw: DmGateway;

  before(async () => {
    redis = await startRedis();
    // No FHIR_BASE_URL: the gateway serves the sandbox at /sandbox/fhir and delivers to it.
    gw = await startDmGateway({ REDIS_URL: redis.url, UNKNOWN_DEVICE_POLICY: 'accept' });
  });
  after(async () => {
    await gw?.stop();
    await redis?.stop();
  });

  it('refuses reads without an operator credential, and the gateway still delivers to it', async () => {
    const op = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'sandbox-reader' })).body.key as string;
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'SBX-1', adapter: 'measurements' })).status, 201);
    assert.equal((await call(gw.url, 'POST', '/api/devices/SBX-1/activate', ADMIN)).status, 200);
    // A device key files readings only for its assigned patient (DEVICE_PATIENT_BINDING=assigned-only).
    assert.equal((await call(gw.url, 'PUT', '/api/devices/SBX-1/assignment', ADMIN, { patientId: 'MRN-T1' })).status, 200);
    const device = (await call(gw.url, 'POST', '/api/devices/SBX-1/credentials', ADMIN)).body.key as string;

    const anonymous = await call(gw.url, 'GET', '/sandbox/fhir/Observation');
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.resourceType, 'OperationOutcome');
    assert.equal((await call(gw.url, 'GET', '/sandbox/fhir/Patient', 'gw_0123456789abcdef_notarealkeynotarealkey')).status, 401);
    assert.equal((await call(gw.url, 'GET', '/sandbox/fhir/Observation', device)).status, 403, 'a device key does not read the EHR');
    const write = await call(gw.url, 'POST', '/sandbox/fhir/Patient', undefined, { resourceType: 'Patient' }, 'application/fhir+json');
    assert.equal(write.status, 401, 'nor can anyone write to it without a credential');

    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', device, reading('SBX-1'))).status, 202);
    const delivered = await eventually(
      async () => {
        const r = await call(gw.url, 'GET', '/sandbox/fhir/Observation', op);
        return r.status === 200 && ((r.body as Bundle).entry ?? []).length > 0 && (r.body as Bundle);
      },
      20000,
      'the reading delivered to the sandbox',
    );
    const obs = delivered.entry?.[0]?.resource as Observation;
    assert.equal(obs.code.coding?.[0]?.code, '2708-6');
    assert.equal((await call(gw.url, 'GET', '/sandbox/fhir/Observation', ADMIN)).status, 200, 'admin reads too');
    assert.equal((await call(gw.url, 'GET', '/api/status', op)).body.deadLetters, 0, 'no delivery was refused');
  });
});
