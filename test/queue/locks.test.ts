/**
 * A running job's lock and settlement through a Redis outage (queue/queue.ts, real Redis). bull stops renewing a lock
 * after one failed renewal, and gives up marking a job completed at the first error. The queue renews the lock itself
 * from then on (also while close() waits for the job), retries settling while Redis cannot be reached, and, when a
 * delivered job's completion still cannot be recorded, refuses bull's recording of it as a failed attempt. The cluster
 * failover test (test/scale/cluster-failover.test.ts) runs the whole of it against a real failover.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import type { Reading } from '../../src/core/contract.js';
import { type DeliveryJob, DeliveryQueue } from '../../src/queue/queue.js';
import { eventually, startRedis, type TestRedis } from '../helpers/harness.js';

const job = (n: number): DeliveryJob => ({
  adapterId: 'measurements',
  channel: 'http',
  receivedAt: '2026-12-04T11:00:00Z',
  translations: [{ devices: [], observations: [], patient: { system: 'urn:p', value: `P${n}` } } as unknown as Reading],
});

describe('queue: a running job keeps its lock and is settled once through a Redis outage', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let admin: IORedis.default;
  let q: DeliveryQueue;
  // A fresh Redis and queue for each test: each leaves patched commands and jobs behind.
  beforeEach(async () => {
    redis = await startRedis();
    admin = new IORedis.default(redis.url);
    q = new DeliveryQueue(
      {
        redisUrl: redis.url,
        queueName: 'locks',
        maxDepth: 1000,
        enqueueTimeoutMs: 2000,
        attempts: 3,
        lockDurationMs: 1000,
        stalledIntervalMs: 200,
        retentionCompleted: 100,
        retryBaseDelayMs: 50,
        retryMaxDelayMs: 500,
      },
      () => 50,
    );
    await q.whenReady();
  });
  afterEach(async () => {
    await q?.close();
    admin?.disconnect();
    await redis?.stop();
  });

  it('renews the lock of a running job after bull gave up, and retries its completion until Redis answers', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let runs = 0;
    const started: string[] = [];
    void q.process(1, async (j) => {
      runs++;
      started.push(String(j.id));
      await gate;
      return { ok: true };
    });
    const [id] = await q.enqueue([job(1)]);
    await eventually(() => started.length === 1, 10_000, 'the job running');
    // bull's own renewal fails once (as in a failover) and stops: the queue takes over.
    const running = await q.bull.getJob(id);
    q.bull.emit('lock-extension-failed', running, new Error('Connection is closed.'));
    // Three lock durations later the lock is still this worker's: renewed by the queue, not bull.
    await new Promise((r) => setTimeout(r, 3000));
    assert.ok(q.locksKept >= 2, `${q.locksKept} renewals by the queue`);
    assert.equal(await admin.exists(`gw:locks:${id}:lock`), 1, 'the lock is held');
    // The job finishes while Redis cannot be reached: bull's completion fails twice as the connection would, and is
    // tried again until it goes through.
    const client = q.bull.client as unknown as { moveToFinished: (...a: unknown[]) => Promise<unknown> };
    const finish = client.moveToFinished.bind(client);
    let failures = 0;
    client.moveToFinished = (...a: unknown[]) => (failures++ < 2 ? Promise.reject(new Error('Connection is closed.')) : finish(...a));
    release();
    await eventually(async () => (await q.bull.getJobCounts()).completed === 1, 15_000, 'the job completed');
    assert.equal(runs, 1, 'delivered once');
    assert.ok(failures >= 3, `${failures} completion attempts`);
    assert.equal((await q.bull.getJobCounts()).active, 0);
  });

  it('when marking a delivered job completed fails for longer than a lock, records no failed attempt (the job is handed out again)', async () => {
    let runs = 0;
    const failed: string[] = [];
    q.onFailed((j, e) => failed.push(`${j.id}: attempt ${j.attemptsMade}: ${e.message}`));
    // Redis does not answer bull's completion for 2.5 s (two and a half lock durations); the job's other commands pass.
    const client = q.bull.client as unknown as { moveToFinished: (...a: unknown[]) => Promise<unknown> };
    const finish = client.moveToFinished.bind(client);
    let until = Number.POSITIVE_INFINITY;
    client.moveToFinished = (...a: unknown[]) => (Date.now() < until ? Promise.reject(new Error('Connection is closed.')) : finish(...a));
    void q.process(1, async () => {
      if (runs++ === 0) until = Date.now() + 2500;
      return { ok: true };
    });
    await q.enqueue([job(2)]);
    await eventually(async () => (await q.bull.getJobCounts()).completed === 1, 20_000, 'the job completed');
    // bull, having failed to mark it completed, would record the delivered job's attempt as failed (a retry now, or at
    // the last attempt a dead letter): refused; bull's stalled-job check handed it out again after its lock expired.
    assert.deepEqual(failed, []);
    assert.equal(runs, 2, 'handed out again once, after the lock expired');
    assert.deepEqual(await q.bull.getJobCounts().then(({ failed: f, active }) => ({ failed: f, active })), { failed: 0, active: 0 });
  });

  it('renews the lock of a job still running while close() waits for it', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const started: string[] = [];
    // bull's first renewal of the job's lock fails (as in a failover) and bull stops renewing it; later ones pass.
    const client = q.bull.client as unknown as { extendLock: (...a: unknown[]) => Promise<unknown> };
    const extend = client.extendLock.bind(client);
    let calls = 0;
    client.extendLock = (...a: unknown[]) => (calls++ === 0 ? Promise.reject(new Error('Connection is closed.')) : extend(...a));
    void q.process(1, async (j) => {
      started.push(String(j.id));
      await gate;
      return { ok: true };
    });
    const [id] = await q.enqueue([job(3)]);
    await eventually(() => started.length === 1, 10_000, 'the job running');
    await eventually(() => q.locksKept >= 1, 10_000, 'the queue renewing the lock');
    const closed = q.close();
    // Three lock durations into the close the job still runs, and its lock is still this worker's.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await admin.exists(`gw:locks:${id}:lock`), 1, 'the lock is held');
    release();
    await closed;
    assert.equal(await admin.zcard('gw:locks:completed'), 1, 'completed once');
  });
});
