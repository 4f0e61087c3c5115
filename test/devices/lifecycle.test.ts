/**
 * The device lifecycle through the API: every transition (legal and illegal), the FHIR Device each one writes
 * (conditional update through the queue), data refused from devices that are not active, patient assignment,
 * registration (single and bulk), remote configuration.
 */
import { strict as assert } from 'node:assert';
import type { Device, Observation, Patient } from 'fhir/r4';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from './wire.js';
import { deviceRegistryVersion } from '../../src/devices/fhir.js';
import { DEVICE_ACTIONS, DEVICE_STATES, nextState, type DeviceAction, type DeviceState } from '../../src/devices/model.js';

const SYSTEM = 'urn:iomt-gateway:device-id';
/** Actions that bring a freshly registered device to each state. */
const PATH_TO: Record<DeviceState, DeviceAction[]> = {
  registered: [],
  active: ['activate'],
  suspended: ['activate', 'suspend'],
  decommissioned: ['decommission'],
};
const LEGAL: Record<string, DeviceState> = {
  'registered activate': 'active',
  'registered decommission': 'decommissioned',
  'active suspend': 'suspended',
  'active decommission': 'decommissioned',
  'suspended activate': 'active',
  'suspended decommission': 'decommissioned',
};

describe('device lifecycle', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  let n = 0;

  const fhirDevice = async (id: string) => (await ehr.search<Device>('Device', { identifier: `${SYSTEM}|${id}` }))[0];
  const newDevice = async (state: DeviceState, extra: Record<string, unknown> = {}) => {
    const id = `LC-${++n}`;
    const r = await call(gw.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements', type: 'pulse-oximeter', ...extra });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.state, 'registered');
    for (const a of PATH_TO[state]) assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/${a}`, ADMIN)).status, 200);
    return id;
  };

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('the transition table is what the model says (closed set)', () => {
    for (const s of DEVICE_STATES) for (const a of DEVICE_ACTIONS) assert.equal(nextState(s, a), LEGAL[`${s} ${a}`], `${s} ${a}`);
  });

  for (const from of DEVICE_STATES) {
    for (const action of DEVICE_ACTIONS) {
      const to = LEGAL[`${from} ${action}`];
      it(`${from} --${action}--> ${to ?? '409 (illegal)'}`, async () => {
        const id = await newDevice(from);
        const r = await call(gw.url, 'POST', `/api/devices/${id}/${action}`, ADMIN);
        const after = await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN);
        if (!to) {
          assert.equal(r.status, 409);
          assert.equal(r.body.resourceType, 'OperationOutcome');
          assert.equal(r.body.issue[0].code, 'conflict');
          assert.match(r.body.issue[0].diagnostics, new RegExp(`is ${from}: '${action}' is not allowed`));
          assert.equal(after.body.state, from, 'unchanged');
          return;
        }
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.state, to);
        assert.equal(after.body.state, to);
        const status = to === 'active' ? 'active' : 'inactive';
        await eventually(async () => (await fhirDevice(id))?.status === status, 20000, `FHIR Device ${id} ${status}`);
      });
    }
  }

  it('writes the FHIR Device idempotently: one resource per device however many transitions', async () => {
    const id = await newDevice('registered', {
      identifiers: { serialNumber: 'SN-77', eui64: '00-11-22-33-44-55-66-77', udi: '(01)00884838033215' },
      manufacturer: 'Acme',
      model: 'OX-1',
      firmwareVersion: '2.3.1',
    });
    for (const a of ['activate', 'suspend', 'activate', 'suspend', 'activate'] as const)
      assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/${a}`, ADMIN)).status, 200);
    const d = await eventually(
      async () => {
        const found = await ehr.search<Device>('Device', { identifier: `${SYSTEM}|${id}` });
        return found.length === 1 && found[0].status === 'active' ? found[0] : undefined;
      },
      20000,
      'the Device back to active',
    );
    assert.equal(d.serialNumber, 'SN-77');
    assert.equal(d.manufacturer, 'Acme');
    assert.equal(d.modelNumber, 'OX-1');
    assert.equal(d.version?.[0]?.value, '2.3.1');
    assert.equal(d.udiCarrier?.[0]?.carrierHRF, '(01)00884838033215');
    assert.ok(
      d.identifier?.some((i) => i.value === '00-11-22-33-44-55-66-77'),
      'EUI-64 in the canonical form (the PHD IG form HL7 data carries)',
    );
    assert.equal((await ehr.search<Device>('Device', { identifier: `${SYSTEM}|${id}` })).length, 1);
    const rec = (await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN)).body;
    assert.equal(rec.version, 6, 'one version per change');
    await eventually(async () => deviceRegistryVersion((await fhirDevice(id))!) === rec.version, 20000, 'the last version written');
  });

  const refusals: { state: DeviceState; reason: RegExp }[] = [
    { state: 'registered', reason: /is registered: only an active device may send data/ },
    { state: 'suspended', reason: /is suspended: only an active device may send data/ },
    { state: 'decommissioned', reason: /is decommissioned: only an active device may send data/ },
  ];
  for (const c of refusals) {
    it(`refuses data of a ${c.state} device with 403 and the reason; counts it as an error of the device`, async () => {
      const id = await newDevice(c.state);
      const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id));
      assert.equal(r.status, 403);
      assert.match(r.body.issue[0].diagnostics, c.reason);
      if (c.state !== 'decommissioned') assert.equal((await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN)).body.telemetry.errors, 1);
    });
  }

  it('accepts data of an active device and records last seen, messages, battery and signal', async () => {
    const id = await newDevice('active');
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id, { battery: 42, rssi: -67 }))).status, 202);
    const r = await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN);
    assert.equal(r.body.telemetry.messages, 1);
    assert.equal(r.body.telemetry.battery, 42);
    assert.equal(r.body.telemetry.signal, -67);
    assert.ok(r.body.telemetry.lastSeen);
    assert.equal(r.body.connectivity, 'online');
    const seen = await call(
      gw.url,
      'GET',
      `/api/devices?lastSeenAfter=${encodeURIComponent(new Date(Date.now() - 60000).toISOString())}`,
      ADMIN,
    );
    assert.ok(seen.body.some((d: { id: string }) => d.id === id));
  });

  it('assignment: readings without a patient get the assigned patient; the Device names patient and location; unassign', async () => {
    const id = await newDevice('active');
    const a = await call(gw.url, 'PUT', `/api/devices/${id}/assignment`, ADMIN, { patientId: 'MRN-ASSIGNED-9', locationId: 'ICU-4-BED-2' });
    assert.equal(a.status, 200);
    assert.equal(a.body.assignment.patientId, 'MRN-ASSIGNED-9');
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id, { patientId: undefined }, 5))).status, 202);
    const mine = await eventually(
      async () => {
        const obs = (await ehr.search<Observation>('Observation', { _count: '1000' })).filter(
          (o) => o.effectiveDateTime === '2026-11-23T10:05:00Z',
        );
        return obs.length ? obs : undefined;
      },
      20000,
      'the observation',
    );
    const patients = await ehr.search<Patient>('Patient', { identifier: 'urn:iomt-gateway:patient-id|MRN-ASSIGNED-9' });
    assert.equal(patients.length, 1, 'the assigned patient was used as the subject');
    assert.ok(mine.some((o) => o.subject?.reference === `Patient/${patients[0].id}`));
    await eventually(async () => (await fhirDevice(id))?.patient?.identifier?.value === 'MRN-ASSIGNED-9', 20000, 'Device.patient');
    assert.equal((await fhirDevice(id))?.location?.identifier?.value, 'ICU-4-BED-2');
    const un = await call(gw.url, 'DELETE', `/api/devices/${id}/assignment`, ADMIN);
    assert.equal(un.status, 200);
    assert.equal(un.body.assignment, undefined);
    await eventually(async () => !(await fhirDevice(id))?.patient, 20000, 'Device.patient removed');
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id, { patientId: undefined }, 6));
    assert.equal(r.status, 422, 'no patient any more: the vital sign has no subject');
  });

  it('assignment is refused for a device that is not active, and for bad input', async () => {
    const id = await newDevice('registered');
    assert.equal((await call(gw.url, 'PUT', `/api/devices/${id}/assignment`, ADMIN, { patientId: 'MRN-X' })).status, 409);
    const act = await newDevice('active');
    assert.equal((await call(gw.url, 'PUT', `/api/devices/${act}/assignment`, ADMIN, { patientId: 42 })).status, 400);
    assert.equal((await call(gw.url, 'PUT', '/api/devices/NOPE/assignment', ADMIN, { patientId: 'MRN-X' })).status, 404);
    const nulls = await call(gw.url, 'PUT', `/api/devices/${act}/assignment`, ADMIN, { patientId: null, locationId: null });
    assert.equal(nulls.status, 200);
    assert.equal(nulls.body.assignment, undefined);
  });

  it('registration: 201 with the record; duplicate 409; invalid 422 with every issue', async () => {
    const ok = await call(gw.url, 'POST', '/api/devices', ADMIN, {
      id: 'REG-1',
      identifiers: { serialNumber: 'S-1' },
      manufacturer: 'Acme',
      model: 'M',
      type: 'scale',
      adapter: 'measurements',
      owner: 'Biomed',
      department: 'Cardiology',
      firmwareVersion: '1.0',
    });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.state, 'registered');
    assert.equal(ok.body.department, 'Cardiology');
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'REG-1' })).status, 409);
    const bad = await call(gw.url, 'POST', '/api/devices', ADMIN, {
      id: 'bad id!',
      identifiers: { eui64: 'xyz' },
      manufacturer: 7,
      adapter: 'nope',
    });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.issue.length, 4, JSON.stringify(bad.body));
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, 'id\nx', 'text/plain')).status, 415);
  });

  it('bulk registration from CSV and from JSON: one result per row', async () => {
    const csv =
      'id,serialNumber,eui64,manufacturer,model,type,adapter\r\nBULK-1,S1,0011223344556601,Acme,"OX, 2",pulse-oximeter,measurements\r\nBULK-2,S2,,Acme,OX,pulse-oximeter,measurements\r\nbad id,S3,,,,,\r\nBULK-1,S1,,,,,\r\n';
    const r = await call(gw.url, 'POST', '/api/devices/bulk', ADMIN, csv);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.created, 2);
    assert.deepEqual(
      r.body.results.map((x: { status: number }) => x.status),
      [201, 201, 422, 409],
    );
    assert.equal((await call(gw.url, 'GET', '/api/devices/BULK-1', ADMIN)).body.model, 'OX, 2');
    const j = await call(gw.url, 'POST', '/api/devices/bulk', ADMIN, [{ id: 'BULK-3', type: 'scale' }, { id: 'BULK-3' }, { nope: true }]);
    assert.deepEqual(
      j.body.results.map((x: { status: number }) => x.status),
      [201, 409, 422],
    );
    assert.equal((await call(gw.url, 'POST', '/api/devices/bulk', ADMIN, 'serial\nS1\n')).status, 400, 'a CSV without an id column');
    const scales = await call(gw.url, 'GET', '/api/devices?type=scale&state=registered', ADMIN);
    assert.ok(scales.body.some((d: { id: string }) => d.id === 'BULK-3'));
    assert.ok(scales.body.every((d: { type: string; state: string }) => d.type === 'scale' && d.state === 'registered'));
    assert.equal((await call(gw.url, 'GET', '/api/devices?state=bogus', ADMIN)).status, 400);
  });

  it('remote configuration: set by an operator, fetched by the device with its own key (version, last fetched)', async () => {
    const id = await newDevice('active');
    const op = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'cfg-op' })).body.key;
    const key = (await call(gw.url, 'POST', `/api/devices/${id}/credentials`, ADMIN)).body.key;
    assert.equal((await call(gw.url, 'GET', '/api/devices/me/config', key)).status, 404, 'nothing set yet');
    const v1 = await call(gw.url, 'PUT', `/api/devices/${id}/config`, op, { samplingIntervalS: 60, thresholds: { spo2Low: 90 } });
    assert.equal(v1.status, 200);
    assert.equal(v1.body.version, 1);
    const v2 = await call(gw.url, 'PUT', `/api/devices/${id}/config`, ADMIN, { settings: { samplingIntervalS: 30 } });
    assert.equal(v2.body.version, 2);
    const got = await call(gw.url, 'GET', '/api/devices/me/config', key);
    assert.equal(got.status, 200);
    assert.equal(got.body.deviceId, id);
    assert.equal(got.body.version, 2);
    assert.deepEqual(got.body.settings, { samplingIntervalS: 30 });
    assert.ok(got.body.lastFetchedAt);
    const seen = await call(gw.url, 'GET', `/api/devices/${id}/config`, op);
    assert.equal(seen.body.lastFetchedBy, `device:${id}`);
    assert.equal((await call(gw.url, 'PUT', `/api/devices/${id}/config`, op, [1, 2])).status, 400);
  });

  it('exposes device counts per state as metrics, without ids or PHI', async () => {
    await gw.dm.monitor.check();
    const m = await call(gw.url, 'GET', '/metrics', ADMIN);
    assert.match(m.body, /iomt_devices\{state="active"\} [1-9]/);
    assert.match(m.body, /iomt_devices_offline \d+/);
    assert.ok(!m.body.includes('MRN-'));
  });
});
