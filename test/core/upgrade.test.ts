/**
 * Data written by the previous version (one `translation` per job instead of `translations`) is still in Redis after
 * an upgrade: waiting jobs, dead letters and readings held for review must be delivered, listed and replayed.
 */
import { strict as assert } from 'node:assert';
import request from 'supertest';
import type { Observation } from 'fhir/r4';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { ADMIN, call, reading as dmReading, startDmGateway, type DmGateway } from '../devices/wire.js';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';

const context = { deviceIdentifierSystem: 'urn:iomt-gateway:device-id', patientIdentifierSystem: 'urn:iomt-gateway:patient-id' };
const oldJob = (deviceId: string, minute: number) => ({
  adapterId: 'measurements',
  channel: 'http',
  receivedAt: '2026-11-23T09:00:00Z',
  translation: measurementsAdapter.translate(
    {
      body: {
        deviceId,
        patientId: 'MRN-UP',
        timestamp: `2026-11-23T09:${String(minute).padStart(2, '0')}:00Z`,
        measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 95, unit: '%' }],
      },
      channel: 'http',
      receivedAt: '2026-11-23T09:00:00Z',
    },
    context,
  )[0],
});

describe('upgrade: jobs, dead letters and held readings of the previous version', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  const observed = async (minute: number) =>
    (await ehr.search<Observation>('Observation', { _count: '100' })).some(
      (o) => o.effectiveDateTime === `2026-11-23T09:${String(minute).padStart(2, '0')}:00Z`,
    );

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      UNKNOWN_DEVICE_POLICY: 'hold',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('delivers a waiting job of the previous version', async () => {
    await gw.gateway.queue!.bull.add(oldJob('UP-1', 1) as never, { jobId: 'old-job-1' });
    await eventually(() => observed(1), 20000, 'the old job delivered');
    assert.equal((await request(gw.url).get('/api/dead-letters').set('authorization', `Bearer ${ADMIN}`)).body.total, 0);
  });

  it('lists and replays a dead letter of the previous version', async () => {
    const redisClient = gw.gateway.queue!.redis;
    const dl = {
      id: 'old-dl-1',
      jobId: 'old-dl-1',
      reason: 'EHR answered HTTP 400',
      kind: 'rejected',
      attempts: 1,
      deadAt: '2026-11-23T09:30:00Z',
      job: oldJob('UP-2', 2),
    };
    await redisClient.multi().set('gw:dlq:old-dl-1', JSON.stringify(dl)).zadd('gw:dlq:index', Date.parse(dl.deadAt), dl.id).exec();
    const list = await request(gw.url).get('/api/dead-letters').set('authorization', `Bearer ${ADMIN}`);
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.items[0].summary, { readings: 1, devices: 1, observations: 1, patients: 0, codes: ['2708-6'] });
    await request(gw.url).post('/api/dead-letters/old-dl-1/retry').set('authorization', `Bearer ${ADMIN}`).expect(202);
    await eventually(() => observed(2), 20000, 'the replayed old dead letter delivered');
  });

  it('releases a reading held by the previous version when the device is activated', async () => {
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, dmReading('UP-3', {}, 3))).status, 202);
    // Rewrite the held reading as the previous version stored it.
    const redisClient = gw.gateway.queue!.redis;
    await redisClient.lset('gw:dev:held:UP-3', 0, JSON.stringify(oldJob('UP-3', 3)));
    const held = await call(gw.url, 'GET', '/api/devices/UP-3/held', ADMIN);
    assert.equal(held.body.readings[0].translations.length, 1);
    const act = await call(gw.url, 'POST', '/api/devices/UP-3/activate', ADMIN);
    assert.equal(act.status, 200, JSON.stringify(act.body));
    assert.equal(act.body.releasedReadings, 1);
    await eventually(() => observed(3), 20000, 'the old held reading delivered');
  });
});
