/**
 * A running job's lock through a Redis outage (queue/queue.ts, real Redis): bull stops renewing a lock after one failed
 * renewal, and gives up marking a job completed at the first error; the queue renews the lock itself from then on,
 * and retries settling it (marking it completed) while Redis cannot be reached, so the job is delivered once. (The cluster failover test,
 * test/scale/cluster-failover.test.ts, runs the whole of it against a real failover.)
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

describe('queue: a running job keeps its lock and completes through a Redis outage', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let admin: IORedis.default;
  let q: DeliveryQueue;
  before(async () => {
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
  after(async () => {
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
});
