/**
 * A job's data is turned into JSON once on enqueue (queue.ts prepareJob): the same JSON gives the job its content id
 * and is what bull stores. Checked against a real Redis: what is stored parses to the job, bull reads it back, the id
 * is the content id, and neither the job's data nor its readings are stringified a second time.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import type { Reading } from '../../src/core/contract.js';
import { type DeliveryJob, type DeliveryQueue, jobIdFor, prepareJob } from '../../src/queue/queue.js';
import { startRedis, type TestRedis, testQueue } from '../helpers/harness.js';

const WINDOW_S = 3600;

const job = (n: number, extra: Partial<DeliveryJob> = {}): DeliveryJob => ({
  adapterId: 'measurements',
  channel: 'http',
  receivedAt: '2026-12-06T08:00:00Z',
  ...extra,
  translations: [
    {
      devices: [{ resourceType: 'Device', identifier: [{ system: 'urn:dev', value: `J${n}` }] }],
      observations: [
        {
          resourceType: 'Observation',
          status: 'final',
          code: { coding: [{ system: 'http://loinc.org', code: '59408-5', display: 'SpO2 "pulse" \u00e9\u2028' }] },
          valueQuantity: { value: 90 + n, unit: '%', system: 'http://unitsofmeasure.org', code: '%' },
          device: { identifier: { system: 'urn:dev', value: `J${n}` } },
        },
      ],
    } as Reading,
  ],
});

describe('queue: a job turned into JSON once (real Redis)', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  let admin: IORedis.default;
  let q: DeliveryQueue;
  before(async () => {
    redis = await startRedis();
    admin = new IORedis.default(redis.url);
    q = testQueue(redis.url, 'job-json', { dedupeWindowS: WINDOW_S });
    await q.whenReady();
  });
  after(async () => {
    await q?.close();
    admin?.disconnect();
    await redis?.stop();
  });

  it('stores what parses to the job, under its content id, alone and several at once', async () => {
    const jobs = [job(1), job(2, { replayOf: 'dead-letter 1' }), job(3), job(4)];
    const ids = [...(await q.enqueue([jobs[0]])), ...(await q.enqueue(jobs.slice(1)))];
    assert.deepEqual(
      ids,
      jobs.map((j) => jobIdFor(j, WINDOW_S)),
    );
    for (const [i, id] of ids.entries()) {
      const stored = await admin.hget(`gw:job-json:${id}`, 'data');
      assert.ok(stored, `job ${id} is in Redis`);
      assert.deepEqual(JSON.parse(stored), jobs[i]);
      assert.deepEqual((await q.bull.getJob(id))?.data, jobs[i], 'bull reads it back');
    }
    // The other fields bull writes are its own: the options, the attempts.
    const opts = JSON.parse((await admin.hget(`gw:job-json:${ids[0]}`, 'opts')) ?? '{}');
    assert.equal(opts.jobId, ids[0]);
    assert.equal(opts.attempts, 3);
  });

  it("stringifies a job's readings once and its data never again", async () => {
    const j = job(5);
    const stringify = JSON.stringify;
    const seen = { data: 0, translations: 0 };
    JSON.stringify = ((value: unknown, ...rest: unknown[]) => {
      if (value === j) seen.data++;
      if (value === j.translations) seen.translations++;
      return (stringify as (v: unknown, ...r: unknown[]) => string)(value, ...rest);
    }) as typeof JSON.stringify;
    try {
      await q.enqueue([j]);
    } finally {
      JSON.stringify = stringify;
    }
    assert.deepEqual(seen, { data: 0, translations: 1 });
  });

  it('a job given to bull a second time is stringified by bull, not from a stale JSON', async () => {
    const j = job(6);
    const { id, data } = prepareJob(j, 0);
    await q.bull.add(data, { jobId: id });
    data.receivedAt = '2026-12-06T09:00:00Z';
    const again = await q.bull.add(data, { jobId: `${id}-again` });
    assert.equal(JSON.parse((await admin.hget(`gw:job-json:${again.id}`, 'data')) ?? '{}').receivedAt, '2026-12-06T09:00:00Z');
  });
});
