/**
 * Decommissioning wipes what it says it wipes: credentials, patient and location assignment, held readings,
 * configuration and telemetry; the FHIR Device becomes inactive without a patient; a report says what, when, by whom.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import type { Device, Observation } from 'fhir/r4';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from './wire.js';

const SYSTEM = 'urn:iomt-gateway:device-id';

describe('decommissioning', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'hold' });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('an active, assigned device with keys, configuration and telemetry', async () => {
    const id = 'DECOM-1';
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' });
    await call(gw.url, 'POST', `/api/devices/${id}/activate`, ADMIN);
    await call(gw.url, 'PUT', `/api/devices/${id}/assignment`, ADMIN, { patientId: 'MRN-DECOM', locationId: 'WARD-9' });
    const k1 = (await call(gw.url, 'POST', `/api/devices/${id}/credentials`, ADMIN)).body;
    const k2 = (await call(gw.url, 'POST', `/api/devices/${id}/credentials`, ADMIN)).body;
    await call(gw.url, 'PUT', `/api/devices/${id}/config`, ADMIN, { samplingIntervalS: 10 });
    assert.equal(
      (await call(gw.url, 'POST', '/ingest/measurements', k1.key, reading(id, { battery: 50, patientId: 'MRN-DECOM' }))).status,
      202,
    );
    await eventually(
      async () => (await ehr.search<Device>('Device', { identifier: `${SYSTEM}|${id}` }))[0]?.patient,
      20000,
      'Device.patient',
    );

    const op = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'biomed' })).body;
    const r = await call(gw.url, 'POST', `/api/devices/${id}/decommission`, op.key);
    assert.equal(r.status, 200);
    assert.equal(r.body.state, 'decommissioned');

    const rep = await call(gw.url, 'GET', `/api/devices/${id}/decommission-report`, ADMIN);
    assert.equal(rep.status, 200);
    assert.equal(rep.body.deviceId, id);
    assert.deepEqual(rep.body.by, { role: 'operator', id: 'biomed', keyId: op.keyId });
    assert.equal(rep.body.previousState, 'active');
    assert.deepEqual(rep.body.wiped.credentials, [k1.keyId, k2.keyId].sort());
    assert.equal(rep.body.wiped.patientAssignment, true);
    assert.equal(rep.body.wiped.locationAssignment, true);
    assert.equal(rep.body.wiped.configuration, true);
    assert.equal(rep.body.wiped.telemetry, true);
    assert.ok(Date.parse(rep.body.decommissionedAt) > 0);
    assert.ok(!JSON.stringify(rep.body).includes('MRN-DECOM'), 'the report names no patient');

    for (const k of [k1.key, k2.key])
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', k, reading(id, {}, 1))).status, 401, 'keys revoked');
    assert.equal((await call(gw.url, 'GET', `/api/devices/${id}/credentials`, ADMIN)).body.length, 0);
    const rec = await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN);
    assert.equal(rec.body.assignment, undefined);
    assert.equal(rec.body.telemetry.messages, 0);
    assert.equal(rec.body.telemetry.battery, undefined);
    assert.equal((await call(gw.url, 'GET', `/api/devices/${id}/config`, ADMIN)).status, 404);
    const dev = await eventually(
      async () => {
        const d = (await ehr.search<Device>('Device', { identifier: `${SYSTEM}|${id}` }))[0];
        return d?.status === 'inactive' ? d : undefined;
      },
      20000,
      'the FHIR Device inactive',
    );
    assert.equal(dev.patient, undefined);
    assert.equal(dev.location, undefined);
    const client = new IORedis.default(redis.url);
    try {
      const left = (await client.keys(`*${id}*`)).sort();
      // The delivery worker's last-written registry version stays (a number, no PHI): a late, older lifecycle update
      // must not bring the decommissioned Device back to life in the EHR.
      assert.deepEqual(
        left,
        [`gw:dev:fhirver:${SYSTEM}|${id}`, `gw:dev:rec:${id}`, `gw:dev:report:${id}`],
        'only the record, the report and the written version remain',
      );
      assert.ok(!(await client.get(`gw:dev:rec:${id}`))?.includes('MRN-DECOM'));
    } finally {
      client.disconnect();
    }
    assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/credentials`, ADMIN)).status, 409, 'no new keys');
    assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 409, 'terminal');
    const audit = await call(gw.url, 'GET', `/api/audit?kind=device-decommission&entity=${id}`, ADMIN);
    assert.equal(audit.body.total, 1);
    assert.equal(audit.body.entry[0].resource.action, 'D');
    // Each key the decommissioning revoked is in the device's own history.
    const revoked = await call(gw.url, 'GET', `/api/audit?kind=credential-revoked&entity=${id}`, ADMIN);
    assert.equal(revoked.body.total, 2, JSON.stringify(revoked.body));
  });

  it("a device key's rotation is in the device's audit history", async () => {
    const id = 'DECOM-ROT';
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id })).status, 201);
    const k = (await call(gw.url, 'POST', `/api/devices/${id}/credentials`, ADMIN)).body;
    assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/credentials/${k.keyId}/rotate`, ADMIN)).status, 201);
    const rotated = await call(gw.url, 'GET', `/api/audit?kind=credential-rotated&entity=${id}`, ADMIN);
    assert.equal(rotated.body.total, 1);
  });

  it('a transition answers with the telemetry the device has, not zero', async () => {
    const id = 'DECOM-TEL';
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' })).status, 201);
    assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 200);
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 50))).status, 202);
    const r = await call(gw.url, 'POST', `/api/devices/${id}/suspend`, ADMIN);
    assert.equal(r.status, 200);
    assert.equal(r.body.telemetry.messages, 1);
  });

  it('a held (auto-registered) device: its held readings are deleted, never delivered', async () => {
    const id = 'DECOM-HELD';
    for (const m of [40, 41, 42]) assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, m))).status, 202);
    assert.equal((await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN)).body.heldReadings, 3);
    const r = await call(gw.url, 'POST', `/api/devices/${id}/decommission`, ADMIN);
    assert.equal(r.status, 200);
    assert.equal(r.body.decommissionReport.wiped.heldReadings, 3);
    assert.equal(r.body.decommissionReport.previousState, 'registered');
    assert.equal((await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN)).body.heldReadings, 0);
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 43))).status, 403, 'refused, no longer held');
    await eventually(
      async () => (await ehr.search<Device>('Device', { identifier: `${SYSTEM}|${id}` }))[0]?.status === 'inactive',
      20000,
      'the FHIR Device inactive',
    );
    const obs = (await ehr.search<Observation>('Observation', { _count: '1000' })).filter((o) =>
      /T10:4[0-3]/.test(o.effectiveDateTime ?? ''),
    );
    assert.equal(obs.length, 0);
  });

  it('a device that was never decommissioned has no report (404)', async () => {
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'DECOM-NOT' });
    assert.equal((await call(gw.url, 'GET', '/api/devices/DECOM-NOT/decommission-report', ADMIN)).status, 404);
  });
});
