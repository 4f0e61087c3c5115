/**
 * Group commit on ingest (queue/group-commit.ts) against a real Redis: concurrent messages share a write, and each is
 * acknowledged only with its own job ids once they are in Redis; a failed write refuses every message in it.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { defaultDestination } from '../../src/config/destinations.js';
import type { Reading } from '../../src/core/contract.js';
import { GatewayError } from '../../src/core/errors.js';
import { GroupCommit } from '../../src/queue/group-commit.js';
import { type DeliveryJob, DeliveryQueue, jobIdFor } from '../../src/queue/queue.js';
import { DestinationQueues } from '../../src/queue/routing.js';
import { startRedis, type TestRedis } from '../helpers/harness.js';

const WINDOW_S = 86400;

const job = (n: number): DeliveryJob => ({
  adapterId: 'measurements',
  channel: 'http',
  receivedAt: '2026-11-23T11:00:00Z',
  translations: [
    {
      devices: [{ resourceType: 'Device', identifier: [{ system: 'urn:dev', value: `D${n}` }] }],
      observations: [
        {
          resourceType: 'Observation',
          status: 'final',
          code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
          valueQuantity: { value: 60 + n },
          device: { identifier: { system: 'urn:dev', value: `D${n}` } },
        },
      ],
    } as Reading,
  ],
});

const settle = <T>(p: Promise<T>) =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (err: unknown) => ({ ok: false as const, err }),
  );

describe('queue: group commit on ingest (real Redis)', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let admin: IORedis.default;
  const queues: DeliveryQueue[] = [];
  before(async () => {
    redis = await startRedis();
    admin = new IORedis.default(redis.url);
  });
  after(async () => {
    for (const q of queues) await q.close();
    admin?.disconnect();
    await redis?.stop();
  });

  const queue = async (name: string, maxDepth = 10_000) => {
    const q = new DeliveryQueue(
      {
        redisUrl: redis.url,
        queueName: name,
        maxDepth,
        enqueueTimeoutMs: 2000,
        attempts: 3,
        lockDurationMs: 1000,
        stalledIntervalMs: 500,
        retentionCompleted: 100,
        dedupeWindowS: WINDOW_S,
        retryBaseDelayMs: 50,
        retryMaxDelayMs: 500,
      },
      () => 50,
    );
    queues.push(q);
    await q.whenReady();
    return q;
  };
  const routed = (q: DeliveryQueue) =>
    new DestinationQueues([{ destination: defaultDestination({ fhirAuth: 'none', fhirTimeoutMs: 1000 }), queue: q }]);

  it('many concurrent messages: written in fewer round trips than messages, each acknowledged with its own job id', async () => {
    const q = await queue('gc-many');
    const queues = routed(q);
    const jobs = Array.from({ length: 60 }, (_, i) => job(i));
    const ids = await Promise.all(jobs.map((j) => queues.enqueue([j])));
    for (const [i, got] of ids.entries()) assert.deepEqual(got, [jobIdFor(jobs[i], WINDOW_S)], `message ${i} has its own content id`);
    assert.equal(new Set(ids.flat()).size, 60);
    assert.equal((await q.counts()).waiting, 60, 'every acknowledged job is in Redis');
    const stats = queues.groupStats();
    assert.equal(stats.requests, 60);
    assert.ok(stats.batches < 60 && stats.largest > 1, `messages shared writes (${JSON.stringify(stats)})`);
  });

  it('a duplicate within one batch is a duplicate, as one sent after the other is: the same id, one job', async () => {
    const q = await queue('gc-dup');
    const g = new GroupCommit(q);
    // The first goes at once, alone; the three that arrive while it is in flight are written together.
    const first = g.enqueue([job(100)]);
    const [a, b, again] = await Promise.all([g.enqueue([job(1)]), g.enqueue([job(2)]), g.enqueue([job(1)])]);
    await first;
    assert.equal(g.stats.largest, 3, 'the three shared one write');
    assert.deepEqual(again, a, 'the duplicate has the id of the first');
    assert.notDeepEqual(a, b);
    assert.equal((await q.counts()).waiting, 3, 'queued once');
    // And after the batch, a resend within the window is recognised as well.
    assert.deepEqual(await g.enqueue([job(1)]), a);
    assert.equal((await q.counts()).waiting, 3);
  });

  it('a message with several jobs gets its own ids in its own order', async () => {
    const q = await queue('gc-multi');
    const g = new GroupCommit(q);
    const results = await Promise.all([g.enqueue([job(1)]), g.enqueue([job(2), job(3)]), g.enqueue([job(4), job(5), job(6)])]);
    assert.deepEqual(
      results,
      [[job(1)], [job(2), job(3)], [job(4), job(5), job(6)]].map((js) => js.map((j) => jobIdFor(j, WINDOW_S))),
    );
  });

  it('Redis refusing the write refuses every message of the batch (503, retryable); none is in Redis; a resend is taken', async () => {
    const q = await queue('gc-oom');
    const g = new GroupCommit(q);
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    let results: Awaited<ReturnType<typeof settle<string[]>>>[];
    try {
      results = await Promise.all(Array.from({ length: 20 }, (_, i) => settle(g.enqueue([job(200 + i)]))));
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    assert.ok(g.stats.largest > 1, 'the messages were batched');
    for (const r of results) {
      assert.equal(r.ok, false, `acknowledged while Redis refused writes: ${JSON.stringify(r)}`);
      if (r.ok) continue;
      assert.ok(r.err instanceof GatewayError, String(r.err));
      assert.equal(r.err.status, 503);
      assert.equal(r.err.retryable, true);
      assert.ok(r.err.headers['Retry-After']);
    }
    const errors = results.map((r) => (r.ok ? undefined : r.err));
    assert.equal(new Set(errors).size, errors.length, 'each message has an error of its own (a channel may annotate it)');
    const counts = await q.counts();
    assert.equal(counts.waiting + counts.delayed, 0, 'nothing of a refused batch is in the queue');
    assert.equal((await admin.keys('gw:gc-oom:*')).filter((k) => /:[0-9a-f]{16,}$/.test(k)).length, 0, 'no job hash');
    const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => g.enqueue([job(200 + i)])));
    assert.equal(new Set(ids.flat()).size, 20);
    assert.equal((await q.counts()).waiting, 20);
  });

  it('a job that fails inside the batch write (bull does not say so) refuses the batch rather than acknowledge it', async () => {
    const q = await queue('gc-wrongtype');
    // Each add script fails inside the MULTI (its LPUSH meets a string): EXEC succeeds, the scripts' replies are errors.
    await admin.set('gw:gc-wrongtype:wait', 'not a list');
    const results = await Promise.all([settle(q.enqueue([job(500), job(501)]))]);
    assert.equal(results[0].ok, false, `acknowledged: ${JSON.stringify(results[0])}`);
    assert.ok(!results[0].ok && results[0].err instanceof GatewayError && results[0].err.status === 503);
  });

  it('the depth limit holds message by message inside a batch: those that fit are taken, the rest refused', async () => {
    const q = await queue('gc-depth', 3);
    const g = new GroupCommit(q);
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => settle(g.enqueue([job(300 + i)]))));
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, true, true, false, false],
      'the first three (in arrival order) fit',
    );
    for (const r of results.slice(3)) {
      assert.ok(!r.ok && r.err instanceof GatewayError && r.err.status === 503, String(!r.ok && r.err));
      assert.match((r as { err: Error }).err.message, /queue is full/);
    }
    assert.equal((await q.counts()).waiting, 3);
  });

  it('a quiet gateway writes at once: a lone message goes to the queue in the same turn, with no added wait', async () => {
    const q = await queue('gc-quiet');
    let calls = 0;
    const spy = {
      settings: q.settings,
      isReady: () => q.isReady(),
      depth: () => q.depth(),
      enqueue: (jobs: DeliveryJob[]) => {
        calls++;
        return q.enqueue(jobs);
      },
    };
    const g = new GroupCommit(spy);
    const pending = g.enqueue([job(400)]);
    assert.equal(calls, 1, 'handed to the queue before enqueue returned');
    assert.deepEqual(await pending, [jobIdFor(job(400), WINDOW_S)]);
    assert.deepEqual(g.stats, { batches: 1, requests: 1, largest: 1 });
  });
});
