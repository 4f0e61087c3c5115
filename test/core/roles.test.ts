/**
 * Separate processes sharing one Redis, as operators run them: one ingest process, two worker processes. Every message
 * is delivered exactly once; a worker killed with SIGKILL in the middle of a job loses nothing.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import {
  eventually,
  postJson,
  spawnGateway,
  startEhr,
  startRedis,
  type ChildGateway,
  type TestEhr,
  type TestRedis,
} from '../helpers/harness.js';

const reading = (deviceId: string, patientId: string, minute: number) => ({
  deviceId,
  patientId,
  timestamp: `2026-11-23T12:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [
    { code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (minute % 10), unit: '%' },
    { code: 'MDC_PULS_OXIM_PULS_RATE', value: 60 + minute, unit: 'bpm' },
  ],
});

const delivered = (out: string) => out.split('\n').filter((l) => l.includes('"msg":"delivered"')).length;

describe('roles: ingest and worker processes sharing one Redis', function () {
  this.timeout(90000);
  let redis: TestRedis;
  let ehr: TestEhr;
  const children: ChildGateway[] = [];

  before(async () => {
    redis = await startRedis({ appendOnly: true });
    ehr = await startEhr();
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.stop('SIGKILL')));
  });
  after(async () => {
    await ehr?.stop();
    await redis?.stop();
  });

  it('one ingest process and two workers deliver every message exactly once', async () => {
    ehr.sandbox.clear();
    const env = {
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      QUEUE_NAME: 'roles-a',
      DELIVERY_CONCURRENCY: '4',
      // Not the tests' 1 s: three gateways on two busy cores can miss a 1 s lock renewal, and bull then hands the job to
      // the other worker as stalled (a second delivery the EHR absorbs, but a second log line this test would count).
      QUEUE_LOCK_DURATION_MS: '10000',
    };
    const ingest = spawnGateway(env, 'ingest');
    const w1 = spawnGateway(env, 'worker');
    const w2 = spawnGateway(env, 'worker');
    children.push(ingest, w1, w2);
    const url = await ingest.url;
    await Promise.all([w1.url, w2.url]);
    const N = 40;
    const posts = [];
    for (let i = 0; i < N; i++) posts.push(postJson(`${url}/ingest/measurements`, reading(`DEV-${i % 8}`, `MRN-${i % 5}`, i)));
    const results = await Promise.all(posts);
    assert.deepEqual(
      results.map((r) => r.status),
      Array(N).fill(202),
    );
    await eventually(async () => (await ehr.search('Observation', { _count: '1000' })).length === 2 * N, 60000, `${2 * N} observations`);
    // Messages posted together share jobs (INGEST_COMBINE): count the jobs their answers name.
    const jobs = new Set(results.flatMap((r) => r.body.jobIds as string[])).size;
    assert.ok(jobs >= 1 && jobs <= N, `${jobs} jobs`);
    await eventually(() => delivered(w1.output()) + delivered(w2.output()) === jobs, 20000, 'the delivery log lines').catch(() =>
      assert.fail(`${delivered(w1.output())} + ${delivered(w2.output())} delivery log lines for ${jobs} jobs`),
    );
    assert.equal(delivered(w1.output()) + delivered(w2.output()), jobs, 'each job delivered once across both workers');
    const obs = await ehr.search<Observation>('Observation', { _count: '1000' });
    assert.equal(new Set(obs.map((o) => o.identifier?.[0]?.value)).size, 2 * N, 'no duplicate identifiers');
    assert.equal((await ehr.search('Device', { _count: '100' })).length, 8, 'one Device per device id (no race duplicates)');
    assert.equal((await ehr.search('Patient', { _count: '100' })).length, 5, 'one Patient per MRN (no race duplicates)');
    assert.equal(delivered(ingest.output()), 0, 'the ingest process delivers nothing');
  });

  it('a worker killed with SIGKILL mid-job: another worker delivers the job once', async () => {
    ehr.sandbox.clear();
    ehr.requests.length = 0;
    const env = {
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      QUEUE_NAME: 'roles-b',
      DELIVERY_CONCURRENCY: '1',
      FHIR_TIMEOUT_MS: '1000',
    };
    const ingest = spawnGateway(env, 'ingest');
    const w1 = spawnGateway(env, 'worker');
    children.push(ingest, w1);
    const url = await ingest.url;
    await w1.url;
    // The EHR holds the first transaction: the worker is mid-job when it is killed. (The EHR then applies it anyway,
    // as a real server would for a request it had fully received.)
    ehr.faults.push({ status: 200, delayMs: 1500, match: (r) => r.method === 'POST' && r.path === '/' });
    const r = await postJson(`${url}/ingest/measurements`, reading('KILL-1', 'MRN-K', 1));
    assert.equal(r.status, 202);
    await eventually(() => ehr.requests.some((q) => q.method === 'POST' && q.path === '/'), 20000, 'the worker to be mid-transaction');
    await w1.stop('SIGKILL');
    assert.equal(delivered(w1.output()), 0, 'killed before it could finish');
    const w2 = spawnGateway(env, 'worker');
    children.push(w2);
    await w2.url;
    await eventually(() => delivered(w2.output()) === 1, 40000, 'the second worker to deliver the stalled job');
    const obs = await ehr.search('Observation', {});
    assert.equal(obs.length, 2, 'two observations of the one reading, not duplicated');
    assert.equal((await ehr.search('Device', {})).length, 1);
  });
});
