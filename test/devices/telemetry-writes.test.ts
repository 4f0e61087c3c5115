/**
 * Device telemetry (DeviceRegistry.seenMany) on a real Redis: the messages that arrive while a telemetry write is in
 * flight are written together, in one script, and each device's hash ends as if every message had been written alone:
 * messages counted, the last time and channel, battery and signal with their times. A failed write refuses every
 * message in it, and the next messages are written again.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { DeviceRegistry, type SeenDevice } from '../../src/devices/registry.js';
import { startRedis, type TestRedis } from '../helpers/harness.js';

describe('device telemetry: messages in flight together are written together', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let admin: IORedis.default;
  let client: IORedis.default;
  before(async () => {
    redis = await startRedis();
    admin = new IORedis.default(redis.url);
  });
  beforeEach(() => {
    client = new IORedis.default(redis.url);
  });
  afterEach(async () => {
    client.disconnect();
    await admin.flushall();
  });
  after(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  const one = (id: string, readings = 1, telemetry: SeenDevice['telemetry'] = {}): SeenDevice => ({ id, readings, telemetry });

  it('writes a lone message at once, and the messages of one burst in fewer writes, every count right', async () => {
    const registry = new DeviceRegistry(client);
    await registry.seenMany([one('cuff-1', 2, { battery: 80 })], '2026-12-01T10:00:00.000Z', 'http');
    assert.deepEqual(registry.seenStats, { writes: 1, messages: 1 });

    await admin.config('RESETSTAT');
    // 60 messages at once (as 60 requests in flight): 3 devices, each in 20 of them, one of them with two devices.
    const sent: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      const at = new Date(Date.UTC(2026, 11, 1, 11, 0, i)).toISOString();
      const devices = i === 59 ? [one(`cuff-${i % 3}`, 1, { signal: -70 }), one('hub-9', 20)] : [one(`cuff-${i % 3}`, 1, { battery: i })];
      sent.push(registry.seenMany(devices, at, i % 2 ? 'mqtt' : 'http'));
    }
    await Promise.all(sent);
    assert.equal(registry.seenStats.messages, 61);
    const scripts = Number(/cmdstat_eval(?:sha)?:calls=(\d+)/.exec((await admin.info('commandstats')) as string)?.[1] ?? 0);
    assert.ok(scripts >= 1 && scripts <= 2, `60 messages took ${scripts} scripts in Redis: the burst was not gathered`);
    assert.equal(registry.seenStats.writes - 1, scripts);

    const t = await registry.telemetry(['cuff-0', 'cuff-1', 'cuff-2', 'hub-9']);
    const raw = async (id: string) => admin.hgetall(`gw:dev:tel:${id}`);
    assert.equal((await raw('cuff-1')).messages, String(20 + 2), 'the first message counted its two readings, the burst 20');
    assert.equal((await raw('cuff-0')).messages, '20');
    assert.equal((await raw('cuff-2')).messages, '20');
    assert.equal((await raw('hub-9')).messages, '20');
    // The last message of each device wins, as it does written alone.
    assert.equal(t.get('cuff-2')?.lastSeen, '2026-12-01T11:00:59.000Z');
    assert.equal(t.get('cuff-2')?.lastChannel, 'mqtt');
    assert.equal((await raw('cuff-2')).signal, '-70');
    assert.equal((await raw('cuff-2')).battery, '56', 'battery from its last message that had one');
    assert.equal((await raw('cuff-2')).batteryAt, '2026-12-01T11:00:56.000Z');
    assert.equal(t.get('cuff-0')?.lastSeen, '2026-12-01T11:00:57.000Z');
    assert.equal((await raw('cuff-0')).battery, '57');
    assert.equal(t.get('hub-9')?.lastSeen, '2026-12-01T11:00:59.000Z');
    assert.equal((await raw('hub-9')).battery, undefined);
  });

  it('refuses every message of a write Redis did not take, and writes the next ones', async () => {
    const registry = new DeviceRegistry(client);
    const eval_ = client.eval.bind(client);
    let fail = true;
    (client as unknown as { eval: (...a: unknown[]) => Promise<unknown> }).eval = (...a: unknown[]) =>
      fail
        ? Promise.reject(new Error("READONLY You can't write against a read only replica."))
        : (eval_ as (...x: unknown[]) => Promise<unknown>)(...a);
    const first = registry.seenMany([one('a')], '2026-12-01T10:00:00.000Z', 'http');
    const burst = [1, 2, 3].map((i) => registry.seenMany([one(`b${i}`)], '2026-12-01T10:00:01.000Z', 'http'));
    const results = await Promise.allSettled([first, ...burst]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected', 'rejected', 'rejected'],
    );
    fail = false;
    await registry.seenMany([one('c')], '2026-12-01T10:00:02.000Z', 'http');
    assert.equal((await admin.hgetall('gw:dev:tel:c')).messages, '1');
    assert.equal(await admin.exists('gw:dev:tel:a', 'gw:dev:tel:b1'), 0);
  });
});
