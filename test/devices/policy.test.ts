/**
 * Unknown devices: UNKNOWN_DEVICE_POLICY reject (default) / hold / accept, per channel and per MLLP sending facility.
 * Held readings are kept in Redis and delivered when the device is activated.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from './wire.js';
import type { InboundMessage } from '../../src/core/contract.js';

describe('unknown device policy', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  const gws: DmGateway[] = [];
  const obsOf = async (minute: number) =>
    (await ehr.search<Observation>('Observation', { _count: '1000' })).filter(
      (o) => o.effectiveDateTime === `2026-11-23T10:${String(minute).padStart(2, '0')}:00Z`,
    );

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    for (const g of gws) await g.stop();
    await ehr?.stop();
    await redis?.stop();
  });
  const start = async (env: Record<string, string>) => {
    const g = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, ...env });
    gws.push(g);
    return g;
  };

  it('reject (the default): 403 naming the policy; nothing registered', async () => {
    const gw = await start({ QUEUE_NAME: 'p-reject' });
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('UNK-R1'));
    assert.equal(r.status, 403);
    assert.match(r.body.issue[0].diagnostics, /unknown device 'UNK-R1'.*UNKNOWN_DEVICE_POLICY=reject/);
    assert.equal((await call(gw.url, 'GET', '/api/devices/UNK-R1', ADMIN)).status, 404);
  });

  it('accept: auto-registered as active and delivered', async () => {
    const gw = await start({ QUEUE_NAME: 'p-accept', UNKNOWN_DEVICE_POLICY: 'accept' });
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('UNK-A1', {}, 11))).status, 202);
    const d = await call(gw.url, 'GET', '/api/devices/UNK-A1', ADMIN);
    assert.equal(d.body.state, 'active');
    assert.equal(d.body.autoRegistered, 'accept');
    assert.equal(d.body.adapter, 'measurements');
    await eventually(async () => (await obsOf(11)).length === 1, 20000, 'the observation');
  });

  it('hold: auto-registered as registered, data kept (202) and delivered once the device is activated', async () => {
    const gw = await start({ QUEUE_NAME: 'p-hold', UNKNOWN_DEVICE_POLICY: 'hold' });
    for (const m of [21, 22]) {
      const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('UNK-H1', {}, m));
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.equal(r.body.readings, 0, 'held, not queued');
    }
    const d = await call(gw.url, 'GET', '/api/devices/UNK-H1', ADMIN);
    assert.equal(d.body.state, 'registered');
    assert.equal(d.body.autoRegistered, 'hold');
    assert.equal(d.body.heldReadings, 2);
    assert.equal((await obsOf(21)).length, 0, 'nothing delivered while held');
    const review = await call(gw.url, 'GET', '/api/devices/UNK-H1/held', ADMIN);
    assert.equal(review.status, 200);
    assert.equal(review.body.total, 2);
    assert.deepEqual(
      review.body.readings.map(
        (j: { translations: { observations: Observation[] }[] }) => j.translations[0].observations[0].effectiveDateTime,
      ),
      ['2026-11-23T10:21:00Z', '2026-11-23T10:22:00Z'],
    );
    const bad = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('UNK-H1', { patientId: undefined }, 23));
    assert.equal(bad.status, 422, 'held data is validated like queued data');
    const act = await call(gw.url, 'POST', '/api/devices/UNK-H1/activate', ADMIN);
    assert.equal(act.status, 200);
    assert.equal(act.body.releasedReadings, 2);
    await eventually(async () => (await obsOf(21)).length === 1 && (await obsOf(22)).length === 1, 20000, 'the held observations');
    assert.equal((await call(gw.url, 'GET', '/api/devices/UNK-H1', ADMIN)).body.heldReadings, 0);
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('UNK-H1', {}, 24))).status, 202, 'active now');
    const ev = await call(gw.url, 'GET', '/api/audit?kind=held-data-released&entity=UNK-H1', ADMIN);
    assert.equal(ev.body.total, 1);
  });

  it('a registered device (not auto-registered under hold) is refused, not held', async () => {
    const gw = await start({ QUEUE_NAME: 'p-hold2', UNKNOWN_DEVICE_POLICY: 'hold' });
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'PROCURED-1' });
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('PROCURED-1'))).status, 403);
  });

  it('per channel (UNKNOWN_DEVICE_POLICY_HTTP/_MLLP/_MQTT) and per MLLP sending facility, through the guard', async () => {
    const gw = await start({
      QUEUE_NAME: 'p-chan',
      UNKNOWN_DEVICE_POLICY: 'reject',
      UNKNOWN_DEVICE_POLICY_HTTP: 'accept',
      UNKNOWN_DEVICE_POLICY_MQTT: 'hold',
      UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES: 'ICU_A=accept,WARD_3=hold',
    });
    const guard = gw.dm.guard!;
    const adapter = gw.gateway.registry.get('measurements')!;
    const ctx = { deviceIdentifierSystem: 'urn:iomt-gateway:device-id', patientIdentifierSystem: 'urn:iomt-gateway:patient-id' };
    const msg = (channel: string, id: string, attributes: Record<string, string> = {}): InboundMessage => ({
      body: reading(id),
      channel,
      receivedAt: new Date().toISOString(),
      attributes,
    });
    const cases: { channel: string; facility?: string; policy: string }[] = [
      { channel: 'http', policy: 'accept' },
      { channel: 'mqtt', policy: 'hold' },
      { channel: 'mllp', policy: 'reject' },
      { channel: 'mllp', facility: 'ICU_A', policy: 'accept' },
      { channel: 'mllp', facility: 'WARD_3', policy: 'hold' },
      { channel: 'mllp', facility: 'OTHER', policy: 'reject' },
    ];
    for (const [i, c] of cases.entries()) {
      const id = `CH-${i}`;
      const m = msg(c.channel, id, c.facility ? { sendingFacility: c.facility } : {});
      assert.equal(guard.policyFor(m), c.policy, `${c.channel} ${c.facility ?? ''}`);
      const ts = adapter.translate(m, ctx);
      if (c.policy === 'reject') {
        await assert.rejects(guard.decide('measurements', m, ts), (e: { status: number }) => e.status === 403);
        continue;
      }
      const decision = await guard.decide('measurements', m, ts);
      const admitted = await decision.commit();
      await decision.pending;
      assert.equal(admitted.length, c.policy === 'accept' ? 1 : 0);
      const d = await call(gw.url, 'GET', `/api/devices/${id}`, ADMIN);
      assert.equal(d.body.state, c.policy === 'accept' ? 'active' : 'registered');
      assert.equal(d.body.telemetry.lastChannel, c.channel);
    }
  });
});
