/**
 * KeyLocks (src/delivery/locks.ts) against a real, throwaway redis-server: the locks that serialise EHR writes for the
 * same device or patient across worker processes. Holds it to all-or-nothing acquisition, release of its own keys
 * only, expiry, `hold` after a timed-out transaction, and waiting for (or giving up on) a busy key. Where a test needs
 * one request to come before another it orders them on the Redis connection, not by sleeping; the only waits are for
 * locks to expire, with a deadline far longer than any TTL here.
 */
import { strict as assert } from 'node:assert';
import type { Redis } from 'ioredis';
import { startRedis, type TestRedis } from '../helpers/harness.js';
import { connectRedis } from '../../src/queue/queue.js';
import { KeyLocks, LockBusyError } from '../../src/delivery/locks.js';

const PREFIX = 'gw:lock:';
/** Long enough that no lock expires during a test on any machine, unless the test says so. */
const LONG = 10 * 60_000;
/** A wait that only a lock that never frees can run out. */
const PATIENT = 60_000;

describe('KeyLocks: per-key locks in Redis', function () {
  this.timeout(2 * PATIENT);
  let server: TestRedis;
  let redis: Redis;
  let locks: KeyLocks;

  before(async () => {
    server = await startRedis();
    redis = connectRedis(server.url);
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });
  beforeEach(async () => {
    await redis.flushdb();
    locks = new KeyLocks(redis);
  });

  const held = async (...keys: string[]) => Promise.all(keys.map(async (k) => (await redis.exists(PREFIX + k)) === 1));
  const busy = (p: Promise<unknown>) => assert.rejects(p, LockBusyError);

  it('takes every key of a job, deduplicated, under its prefix', async () => {
    const release = await locks.acquire(['dev:1', 'pat:1', 'dev:1'], LONG, 0);
    assert.deepEqual((await redis.keys(`${PREFIX}*`)).sort(), [`${PREFIX}dev:1`, `${PREFIX}pat:1`]);
    const [a, b] = await redis.mget(`${PREFIX}dev:1`, `${PREFIX}pat:1`);
    assert.ok(a && a === b, 'one token for all keys of the acquisition');
    await release();
  });

  it('takes all keys or none: a job that finds one key busy holds none of the others', async () => {
    const first = await locks.acquire(['dev:1'], LONG, 0);
    await busy(locks.acquire(['dev:2', 'dev:1', 'pat:9'], LONG, 0));
    assert.deepEqual(await held('dev:1', 'dev:2', 'pat:9'), [true, false, false]);
    // And the keys it did not get are free for others.
    const other = await locks.acquire(['dev:2', 'pat:9'], LONG, 0);
    await other();
    await first();
  });

  it('release frees the keys at once', async () => {
    const release = await locks.acquire(['dev:1', 'pat:1'], LONG, 0);
    await release();
    assert.deepEqual(await held('dev:1', 'pat:1'), [false, false]);
    const again = await locks.acquire(['dev:1', 'pat:1'], LONG, 0);
    await again();
  });

  it('release frees only its own keys: a lock that expired and was taken by another job stays taken', async () => {
    const release = await locks.acquire(['dev:1', 'dev:2'], LONG, 0);
    await redis.del(`${PREFIX}dev:1`); // as if its TTL had run out
    const other = await locks.acquire(['dev:1'], LONG, 0);
    await release();
    assert.deepEqual(await held('dev:1', 'dev:2'), [true, false], "the other job's key survives; its own is gone");
    await other();
    assert.deepEqual(await held('dev:1'), [false]);
  });

  it('sets the TTL on every key, and an expired lock can be taken again', async () => {
    await locks.acquire(['dev:1', 'pat:1'], LONG, 0);
    for (const k of ['dev:1', 'pat:1']) {
      const ttl = await redis.pttl(PREFIX + k);
      assert.ok(ttl > 0 && ttl <= LONG, `${k} expires (pttl ${ttl})`);
    }
    // A holder that died: its lock (a short TTL) expires, and a waiting job gets it without anyone releasing it.
    await locks.acquire(['dev:2'], 50, 0);
    const next = await locks.acquire(['dev:2'], LONG, PATIENT);
    await next();
  });

  it('hold keeps the keys for the time given instead of releasing them (a transaction that timed out)', async () => {
    const release = await locks.acquire(['dev:1', 'pat:1'], LONG, 0);
    await release(LONG / 2);
    for (const k of ['dev:1', 'pat:1']) {
      const ttl = await redis.pttl(PREFIX + k);
      assert.ok(ttl > 0 && ttl <= LONG / 2, `${k} is held for the hold time, not its first TTL (pttl ${ttl})`);
    }
    await busy(locks.acquire(['pat:1'], LONG, 0));
  });

  it('after a hold, the keys free themselves when it runs out', async () => {
    const release = await locks.acquire(['dev:1'], LONG, 0);
    await release(50);
    const next = await locks.acquire(['dev:1'], LONG, PATIENT);
    await next();
  });

  it('hold does not touch keys another job holds now', async () => {
    const release = await locks.acquire(['dev:1'], LONG, 0);
    await redis.del(`${PREFIX}dev:1`);
    const other = await locks.acquire(['dev:1'], LONG, 0);
    await release(1);
    assert.ok((await redis.pttl(`${PREFIX}dev:1`)) > 1000, "the other job's TTL is unchanged");
    await other();
  });

  it('a busy key makes acquire wait until it is released, then take it', async () => {
    const first = await locks.acquire(['dev:1'], LONG, 0);
    let got = false;
    const waiting = locks.acquire(['dev:1', 'pat:1'], LONG, PATIENT).then((r) => {
      got = true;
      return r;
    });
    // Commands on one connection are answered in order: once this answers, the waiting job has tried and been refused.
    assert.deepEqual(await held('dev:1', 'pat:1'), [true, false]);
    assert.equal(got, false, 'still waiting while the key is held');
    await first();
    const second = await waiting;
    assert.deepEqual(await held('dev:1', 'pat:1'), [true, true]);
    await second();
  });

  it('a busy key makes acquire give up with LockBusyError once its wait is over, taking nothing', async () => {
    const first = await locks.acquire(['dev:1'], LONG, 0);
    await busy(locks.acquire(['pat:1', 'dev:1'], LONG, 20));
    assert.deepEqual(await held('dev:1', 'pat:1'), [true, false]);
    await first();
  });

  it('two jobs taking the same keys in opposite orders do not deadlock: one waits for the other', async () => {
    const a = await locks.acquire(['dev:1', 'pat:1'], LONG, 0);
    const b = locks.acquire(['pat:1', 'dev:1'], LONG, PATIENT);
    await a();
    await (await b)();
    assert.deepEqual(await held('dev:1', 'pat:1'), [false, false]);
  });

  it('a job with no keys needs no lock', async () => {
    const release = await locks.acquire([], LONG, 0);
    await release();
    assert.deepEqual(await redis.keys('*'), []);
  });
});
