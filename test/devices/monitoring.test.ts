/**
 * Monitoring: offline detection (threshold per device type, small here; polled, never timed), the webhook for state
 * changes and offline alerts, and a failing webhook that never blocks.
 */
import { strict as assert } from 'node:assert';
import express from 'express';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from './wire.js';
import type { DeviceEvent } from '../../src/devices/notify.js';

describe('device monitoring', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  let hook: Server;
  const events: DeviceEvent[] = [];

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    const app = express();
    app.post('/hook', express.json(), (req, res) => {
      events.push(req.body as DeviceEvent);
      res.status(204).end();
    });
    hook = await new Promise<Server>((res) => {
      const s = app.listen(0, '127.0.0.1', () => res(s));
    });
    gw = await startDmGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      DEVICE_OFFLINE_AFTER_MS_BY_TYPE: 'quick-sensor=2000',
      DEVICE_OFFLINE_CHECK_INTERVAL_MS: '100',
      DEVICE_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`,
    });
  });
  after(async () => {
    await gw?.stop();
    hook?.close();
    await ehr?.stop();
    await redis?.stop();
  });

  it('a device silent for longer than its type allows is offline (API, metrics, one webhook alert); data brings it back', async () => {
    for (const [id, type] of [
      ['MON-QUICK', 'quick-sensor'],
      ['MON-SLOW', 'bedside-monitor'],
    ]) {
      await call(gw.url, 'POST', '/api/devices', ADMIN, { id, type, adapter: 'measurements' });
      await call(gw.url, 'POST', `/api/devices/${id}/activate`, ADMIN);
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id))).status, 202);
    }
    const quick = await call(gw.url, 'GET', '/api/devices/MON-QUICK', ADMIN);
    assert.equal(quick.body.offlineAfterMs, 2000);
    assert.equal((await call(gw.url, 'GET', '/api/devices/MON-SLOW', ADMIN)).body.offlineAfterMs, 900000, 'the default');
    await eventually(
      async () => (await call(gw.url, 'GET', '/api/devices?status=offline', ADMIN)).body.some((d: { id: string }) => d.id === 'MON-QUICK'),
      20000,
      'MON-QUICK offline',
    );
    const offline = (await call(gw.url, 'GET', '/api/devices?status=offline', ADMIN)).body.map((d: { id: string }) => d.id);
    assert.ok(!offline.includes('MON-SLOW'));
    assert.equal((await call(gw.url, 'GET', '/api/devices/MON-QUICK', ADMIN)).body.connectivity, 'offline');
    await eventually(() => events.some((e) => e.event === 'device.offline' && e.deviceId === 'MON-QUICK'), 20000, 'the offline webhook');
    await eventually(
      async () => /iomt_devices_offline [1-9]/.test((await call(gw.url, 'GET', '/metrics', ADMIN)).body),
      20000,
      'the offline gauge',
    );
    await gw.dm.monitor.check();
    await gw.dm.monitor.check();
    assert.equal(events.filter((e) => e.event === 'device.offline' && e.deviceId === 'MON-QUICK').length, 1, 'one alert per silence');
    // Data brings it back; silence again alerts again.
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('MON-QUICK', {}, 1))).status, 202);
    assert.equal((await call(gw.url, 'GET', '/api/devices/MON-QUICK', ADMIN)).body.connectivity, 'online');
    await eventually(
      () => events.filter((e) => e.event === 'device.offline' && e.deviceId === 'MON-QUICK').length === 2,
      20000,
      'a second alert',
    );
  });

  it('state changes are announced on the webhook, without patient data', async () => {
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'MON-HOOK' });
    await call(gw.url, 'POST', '/api/devices/MON-HOOK/activate', ADMIN);
    await call(gw.url, 'PUT', '/api/devices/MON-HOOK/assignment', ADMIN, { patientId: 'MRN-HOOK-1' });
    await call(gw.url, 'POST', '/api/devices/MON-HOOK/suspend', ADMIN);
    await eventually(() => events.some((e) => e.deviceId === 'MON-HOOK' && e.to === 'suspended'), 20000, 'the suspend event');
    const mine = events.filter((e) => e.deviceId === 'MON-HOOK');
    assert.deepEqual(
      mine.map((e) => [e.event, e.from, e.to]),
      [
        ['device.registered', undefined, 'registered'],
        ['device.state-changed', 'registered', 'active'],
        ['device.state-changed', 'active', 'suspended'],
      ],
    );
    assert.ok(!JSON.stringify(events).includes('MRN-HOOK-1'));
  });

  it('a failing webhook is logged and never blocks the action', async () => {
    const closed = express().listen(0, '127.0.0.1');
    await new Promise((r) => closed.once('listening', r));
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    const g = await startDmGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      QUEUE_NAME: 'mon-2',
      DEVICE_WEBHOOK_URL: `http://127.0.0.1:${port}/nowhere`,
    });
    try {
      assert.equal((await call(g.url, 'POST', '/api/devices', ADMIN, { id: 'MON-FAIL' })).status, 201);
      assert.equal((await call(g.url, 'POST', '/api/devices/MON-FAIL/activate', ADMIN)).status, 200);
      await eventually(
        () => g.logs.some((l) => l.includes('device webhook failed') && l.includes('MON-FAIL')),
        20000,
        'the failure log line',
      );
    } finally {
      await g.stop();
    }
  });
});
