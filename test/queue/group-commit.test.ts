/**
 * Group commit on ingest (queue/group-commit.ts) against a real Redis: concurrent messages share a write, and each is
 * acknowledged only with its own job ids once they are in Redis; a failed write refuses every message in it.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { defaultDestination } from '../../src/config/destinations.js';
import type { Reading } from '../../src/core/contract.js';
import { GatewayError } from '../../src/core/errors.js';
import { combineJobs, GroupCommit, takeBatch } from '../../src/queue/group-commit.js';
import { type DeliveryJob, type DeliveryQueue, jobIdFor } from '../../src/queue/queue.js';
import { DestinationQueues } from '../../src/queue/routing.js';
import { startRedis, type TestRedis, testQueue } from '../helpers/harness.js';

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

describe('queue: takeBatch, the next batch of a group commit', () => {
  it('takes the first in line whatever its weight, then those that fit, in arrival order, and leaves the rest', () => {
    const waiting = [7, 2, 1, 1, 3];
    assert.deepEqual(
      takeBatch(waiting, 5, (w) => w),
      [7],
      'the first goes even over the bound, alone when nothing else fits',
    );
    assert.deepEqual(
      takeBatch(waiting, 5, (w) => w),
      [2, 1, 1],
    );
    assert.deepEqual(waiting, [3]);
    assert.deepEqual(
      takeBatch(waiting, 5, (w) => w),
      [3],
    );
    assert.deepEqual(
      takeBatch(waiting, 5, (w) => w),
      [],
    );
  });
});

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
    const q = testQueue(redis.url, name, { maxDepth, dedupeWindowS: WINDOW_S });
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
    assert.deepEqual(g.stats, { batches: 1, requests: 1, largest: 1, combined: 0 });
  });

  describe('combining (INGEST_COMBINE): the messages of one batch share jobs', () => {
    const readingsOf = async (q: DeliveryQueue, id: string) => (await q.bull.getJob(id))?.data.translations ?? [];
    const deviceOf = (r: Reading) => r.devices[0].identifier?.[0].value;

    it('concurrent one-reading messages are queued as fewer jobs; each message is acknowledged with the jobs that hold its reading', async () => {
      const q = await queue('gc-combine');
      const queues = new DestinationQueues([{ destination: defaultDestination({ fhirAuth: 'none', fhirTimeoutMs: 1000 }), queue: q }], {
        combineReadings: 100,
      });
      const jobs = Array.from({ length: 60 }, (_, i) => job(600 + i));
      const ids = await Promise.all(jobs.map((j) => queues.enqueue([j])));
      const counts = await q.counts();
      assert.ok(counts.waiting < 60, `fewer jobs than messages (${counts.waiting})`);
      assert.equal(counts.waiting, new Set(ids.flat()).size, 'every id acknowledged is a job in Redis');
      for (const [i, mine] of ids.entries()) {
        assert.equal(mine.length, 1);
        const held = (await readingsOf(q, mine[0])).map(deviceOf);
        assert.ok(held.includes(`D${600 + i}`), `message ${i}'s reading is in the job it was given (${held})`);
      }
      const all = (await Promise.all([...new Set(ids.flat())].map((id) => readingsOf(q, id)))).flat().map(deviceOf);
      assert.equal(all.length, 60, 'each reading is queued once');
      assert.equal(new Set(all).size, 60);
      assert.ok(queues.groupStats().combined > 0);
    });

    it('a lone message is queued as without combining: its own content id', async () => {
      const q = await queue('gc-combine-alone');
      const g = new GroupCommit(q, undefined, 100);
      assert.deepEqual(await g.enqueue([job(700)]), [jobIdFor(job(700), WINDOW_S)]);
    });

    it('jobs hold at most combineReadings readings, and only readings of one adapter and channel', async () => {
      const q = await queue('gc-combine-kinds');
      const g = new GroupCommit(q, undefined, 3);
      const first = g.enqueue([job(800)]);
      const other = (n: number): DeliveryJob => ({ ...job(n), adapterId: 'other' });
      const mqtt = (n: number): DeliveryJob => ({ ...job(n), channel: 'mqtt' });
      const batch = [job(801), other(802), job(803), mqtt(804), job(805), job(806), other(807), job(808)];
      const ids = await Promise.all(batch.map((j) => g.enqueue([j])));
      await first;
      for (const id of new Set(ids.flat())) {
        const data = (await q.bull.getJob(id))?.data;
        assert.ok(data && data.translations.length <= 3, `${data?.translations.length} readings in one job`);
      }
      for (const [i, [id]] of ids.entries()) {
        const data = (await q.bull.getJob(id))?.data;
        assert.equal(data?.adapterId, batch[i].adapterId);
        assert.equal(data?.channel, batch[i].channel);
      }
      // 801 803 805 | 806 808 (measurements/http), 802 807 (other), 804 (mqtt)
      assert.equal((await q.counts()).waiting, 1 + 4);
    });

    it('a failed write refuses every message combined in it; none is acknowledged', async () => {
      const q = await queue('gc-combine-oom');
      const g = new GroupCommit(q, undefined, 100);
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.config('SET', 'maxmemory', '1');
      let results: Awaited<ReturnType<typeof settle<string[]>>>[];
      try {
        results = await Promise.all(Array.from({ length: 20 }, (_, i) => settle(g.enqueue([job(900 + i)]))));
      } finally {
        await admin.config('SET', 'maxmemory', '0');
      }
      assert.ok(g.stats.largest > 1);
      for (const r of results) assert.ok(!r.ok && r.err instanceof GatewayError && r.err.status === 503, JSON.stringify(r));
      assert.equal((await q.counts()).waiting, 0);
    });

    it('combineJobs keeps arrival order, splits a message over jobs at the limit, and takes the earliest receipt time', () => {
      const a = { ...job(1), receivedAt: '2026-11-23T11:00:02Z' };
      const b = { ...job(2), receivedAt: '2026-11-23T11:00:01Z', translations: [...job(2).translations, ...job(3).translations] };
      const c = job(4);
      const { jobs, holders } = combineJobs([[a], [b], [c]], 2);
      assert.deepEqual(
        jobs.map((j) => j.translations.map(deviceOf)),
        [
          ['D1', 'D2'],
          ['D3', 'D4'],
        ],
      );
      assert.deepEqual(holders, [[0], [0, 1], [1]]);
      assert.equal(jobs[0].receivedAt, '2026-11-23T11:00:01Z');
      assert.equal(a.translations.length, 1, 'the messages are not changed');
    });
  });
});
