/**
 * The circuit breaker of a delivery destination: its states on their own (unit), then end to end with the sandbox EHR
 * behind the fault injector: an EHR that answers 503 for a long time gets a bounded number of requests, no reading is
 * dead-lettered or loses its attempts, and every reading is delivered once when the EHR recovers. 4xx refusals of
 * single readings do not open it. No timing is asserted: counts, states, and `eventually`.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import request from 'supertest';
import type { Observation } from 'fhir/r4';
import { BreakerOpenError, CircuitBreaker, PermitAbortedError } from '../../src/delivery/breaker.js';
import { classify, isDestinationDown } from '../../src/delivery/ehr-client.js';
import { eventually, postJson, startEhr, startGateway, startRedis, useStack } from '../helpers/harness.js';

const settings = (failureThreshold: number, probeIntervalMs = 10_000, probeMaxIntervalMs = 40_000) => ({
  failureThreshold,
  probeIntervalMs,
  probeMaxIntervalMs,
});

describe('circuit breaker (unit)', () => {
  const breakers: CircuitBreaker[] = [];
  const make = (...a: Parameters<typeof settings>) => {
    // Jitter factor 0.5: the delay is the interval itself.
    const b = new CircuitBreaker('ehr', settings(...a), { random: () => 0.5 });
    breakers.push(b);
    return b;
  };
  afterEach(() => {
    for (const b of breakers.splice(0)) b.stop();
  });

  it('opens after the threshold of failures in a row; an answer in between starts the count again', () => {
    const b = make(3);
    b.failed('e1');
    b.failed('e2');
    b.succeeded();
    b.failed('e3');
    b.failed('e4');
    assert.equal(b.state, 'closed');
    b.failed('e5');
    assert.equal(b.state, 'open');
    const s = b.snapshot();
    assert.equal(s.lastError, 'e5');
    assert.equal(s.opened, 1);
    assert.ok(s.nextProbeAt && s.openSince && s.since);
    assert.throws(() => b.admit(), BreakerOpenError, 'nothing is sent while open');
    assert.equal(b.snapshot().refused, 1);
  });

  it('with a threshold of 0 there is no breaker', () => {
    const b = make(0);
    for (let i = 0; i < 100; i++) b.failed('down');
    assert.equal(b.state, 'closed');
    b.admit();
  });

  it('half-open: one waiting job is the probe and only its requests pass; its success closes and releases every job', async () => {
    const b = make(1, 20, 40);
    b.failed('down');
    const waiting = [b.permit(), b.permit(), b.permit()];
    const probe = await Promise.race(waiting);
    assert.equal(probe.probe, true);
    assert.equal(b.state, 'half-open');
    assert.throws(() => b.admit(), BreakerOpenError, 'a request outside the probe is refused');
    await b.runAs(probe, async () => {
      b.admit();
      b.succeeded();
    });
    b.settle(probe);
    assert.equal(b.state, 'closed');
    const all = await Promise.all(waiting);
    assert.equal(all.filter((p) => p.probe).length, 1);
    assert.deepEqual(b.snapshot().probes, { success: 1, failure: 0 });
    b.admit();
  });

  it('a failed probe opens it again for twice as long, up to the cap', async () => {
    const b = make(1, 10_000, 25_000);
    b.failed('down');
    // The timer is long: reach half-open by hand through the probe path.
    (b as unknown as { halfOpen(): void }).halfOpen();
    for (const expected of [20_000, 25_000, 25_000]) {
      const p = await b.permit();
      assert.equal(p.probe, true);
      await b.runAs(p, async () => b.failed('still down'));
      b.settle(p);
      assert.equal(b.state, 'open');
      assert.ok(b.msUntilProbe() > expected - 1000 && b.msUntilProbe() <= expected, `next probe in about ${expected} ms`);
      (b as unknown as { halfOpen(): void }).halfOpen();
    }
    assert.deepEqual(b.snapshot().probes, { success: 0, failure: 3 });
    assert.equal(b.snapshot().opened, 1, 'one outage');
  });

  it('a probe that sent nothing hands the probe to the next job', async () => {
    const b = make(1, 20);
    b.failed('down');
    const first = b.permit();
    const second = b.permit();
    const p1 = await first;
    assert.equal(p1.probe, true);
    b.settle(p1);
    assert.equal(b.state, 'half-open');
    assert.equal((await second).probe, true);
  });

  it('a job waiting for the breaker is released by its abort signal', async () => {
    const b = make(1);
    b.failed('down');
    const stop = new AbortController();
    const waiting = b.permit(stop.signal);
    assert.equal(b.waiting, 1);
    stop.abort();
    await assert.rejects(waiting, PermitAbortedError);
    assert.equal(b.waiting, 0);
    await assert.rejects(b.permit(stop.signal), PermitAbortedError);
  });

  it('counts no answer, 5xx, 429 and 408 as the destination down; a 4xx or 409 refusal is an answer', () => {
    const answer = (status: number) => ({ response: { status, data: {} }, config: { headers: new Headers() } });
    for (const s of [500, 502, 503, 504, 429, 408]) assert.equal(isDestinationDown(classify(answer(s), 'x')), true, String(s));
    for (const s of [400, 401, 403, 404, 409, 412, 422]) assert.equal(isDestinationDown(classify(answer(s), 'x')), false, String(s));
    assert.equal(isDestinationDown(classify({ name: 'TimeoutError' }, 'x')), true);
    assert.equal(isDestinationDown(classify(new TypeError('fetch failed'), 'x')), true);
  });
});

const reading = (deviceId: string, value: number) => ({
  deviceId,
  patientId: 'MRN-B',
  timestamp: '2026-11-23T11:00:00Z',
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');

/** A long outage: more faults than any test sends requests. */
const down = (n = 100_000) => Array.from({ length: n }, () => ({ status: 503 }));

const BREAKER_ENV = {
  UNKNOWN_PATIENT_POLICY: 'create',
  BREAKER_FAILURE_THRESHOLD: '3',
  BREAKER_PROBE_INTERVAL_MS: '100',
  BREAKER_PROBE_MAX_INTERVAL_MS: '400',
  // Without the breaker, three quick attempts would make every reading of the outage a dead letter within a second.
  DELIVERY_ATTEMPTS: '3',
};

async function status(url: string) {
  const s = await request(url).get('/api/status');
  assert.equal(s.status, 200);
  return s.body.destinations[0] as {
    destination: string;
    state: string;
    since: string;
    lastError: string | null;
    nextProbeAt: string | null;
    probes: { success: number; failure: number };
    opened: number;
    waitingJobs: number;
  };
}

// Role all with delivery on a thread of its own too: /api/status, /readyz and /metrics ask that thread.
for (const thread of ['off', 'on'] as const)
  describe(`circuit breaker (end to end; DELIVERY_THREAD=${thread})`, function () {
    this.timeout(90_000);
    const stack = useStack({ ...BREAKER_ENV, DELIVERY_THREAD: thread });

    it('an EHR down for a long time gets a probe at a time; nothing is dead-lettered; every reading is delivered once after', async () => {
      const url = stack.gw.url;
      stack.ehr.faults.push(...down());
      let n = 0;
      const post = async (count: number) => {
        for (let i = 0; i < count; i++) {
          const r = await postJson(`${url}/ingest/measurements`, reading(`BRK-${n}`, 80 + (n % 20)));
          n++;
          assert.equal(r.status, 202, JSON.stringify(r.body));
        }
      };
      await post(10);
      await eventually(async () => (await status(url)).state !== 'closed', 20000, 'the breaker to open');

      // While it is open: more readings arrive; the EHR sees only the probes (each one job, stopping at its first failure).
      const r0 = stack.ehr.requests.length;
      const p0 = (await status(url)).probes.failure;
      await post(10);
      await eventually(async () => (await status(url)).probes.failure >= p0 + 6, 30000, 'six more failed probes');
      const p1 = (await status(url)).probes.failure;
      const r1 = stack.ehr.requests.length;
      assert.ok(r1 - r0 <= 2 * (p1 - p0 + 1), `${r1 - r0} EHR requests for ${p1 - p0} probes`);
      assert.ok(r1 <= 40, `EHR requests in all: ${r1} for ${n} readings`);

      // Visible everywhere, and the gateway is still ready to accept readings.
      const ready = await request(url).get('/readyz');
      assert.equal(ready.status, 200, 'ingest stays ready while the EHR is down');
      assert.match(ready.body.destinations.ehr.state, /^(open|half-open)$/);
      assert.match(ready.body.destinations.ehr.lastError, /503/);
      assert.match(ready.body.warnings.join(' '), /circuit breaker/);
      const s = await status(url);
      assert.equal(s.destination, 'ehr');
      assert.match(s.lastError ?? '', /EHR answered HTTP 503/);
      assert.ok(Date.parse(s.since) > 0);
      assert.equal(s.opened, 1);
      assert.ok(s.waitingJobs >= 1, 'jobs wait in the worker');
      const m = (await request(url).get('/metrics')).text;
      const series = (state: string) =>
        Number(new RegExp(`iomt_destination_breaker_state\\{destination="ehr",state="${state}"\\} (\\d)`).exec(m)?.[1]);
      assert.equal(series('closed'), 0);
      assert.equal(series('open') + series('half-open'), 1);
      assert.match(m, /iomt_destination_breaker_probes_total\{destination="ehr",outcome="failure"\} [1-9]/);
      assert.match(m, /iomt_destination_breaker_opened_total\{destination="ehr"\} 1/);

      // Nothing became a dead letter or failed: only failures met while the breaker was still closed (fewer than the
      // threshold in a row) used attempts.
      assert.equal((await request(url).get('/api/dead-letters')).body.total, 0);
      const jobs = await stack.gw.gateway.queue!.bull.getJobs(['active', 'waiting', 'delayed']);
      assert.equal(jobs.length, n, 'every job is still in the queue');
      assert.equal((await stack.gw.gateway.queue!.counts()).failed, 0);
      for (const j of jobs) assert.ok(j.attemptsMade < 3, `job ${j.id}: ${j.attemptsMade} of 3 attempts used`);

      // The EHR recovers: every reading is delivered, once.
      stack.ehr.faults.length = 0;
      await eventually(async () => (await stack.ehr.search<Observation>('Observation', { _count: '200' })).length >= n, 30000, 'delivery');
      await eventually(async () => (await status(url)).state === 'closed', 10000, 'the breaker to close');
      await eventually(async () => (await stack.gw.gateway.queue!.counts()).completed === n, 10000, 'every job completed');
      const obs = await stack.ehr.search<Observation>('Observation', { _count: '200' });
      assert.equal(obs.length, n, 'each reading once');
      assert.equal(new Set(obs.map((o) => o.identifier?.[0]?.value)).size, n);
      assert.equal((await request(url).get('/api/dead-letters')).body.total, 0);
      assert.equal((await status(url)).probes.success, 1);
    });

    it('4xx refusals of single readings do not open it', async () => {
      const refusal = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invariant', diagnostics: 'refused' }] };
      // Readings the worker takes together share a transaction; a refused transaction is tried again reading by reading
      // (delivery/attempt.ts), each try consuming a fault: enough for every transaction, however the jobs are coalesced.
      for (let i = 0; i < 12; i++) stack.ehr.faults.push({ status: i % 2 ? 422 : 400, body: refusal, match: isTransaction });
      const opened = (await status(stack.gw.url)).opened;
      for (let i = 0; i < 6; i++)
        assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading(`REF-${i}`, 90))).status, 202);
      await eventually(async () => (await request(stack.gw.url).get('/api/dead-letters')).body.total === 6, 20000, 'six dead letters');
      const s = await status(stack.gw.url);
      assert.equal(s.state, 'closed');
      assert.equal(s.opened, opened, 'not opened by refusals');
    });
  });

describe('circuit breaker: a worker that stops while the EHR is down', function () {
  this.timeout(90_000);

  it('hands its waiting jobs back to the queue with their attempts; the next worker delivers them once', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const env = {
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      ...BREAKER_ENV,
      BREAKER_PROBE_INTERVAL_MS: '5000',
      BREAKER_PROBE_MAX_INTERVAL_MS: '5000',
    };
    const admin = new IORedis.default(redis.url);
    try {
      ehr.faults.push(...down());
      let gw = await startGateway(env);
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push(...(await postJson(`${gw.url}/ingest/measurements`, reading(`STOP-${i}`, 90 + i))).body.jobIds);
      await eventually(async () => (await status(gw.url)).state === 'open', 20000, 'the breaker to open');
      await eventually(async () => (await status(gw.url)).waitingJobs === ids.length, 20000, 'every job waiting for the breaker');
      const attempts = async () => Promise.all(ids.map(async (id) => Number(await admin.hget(`gw:iomt-delivery:${id}`, 'attemptsMade'))));
      const before = await attempts();
      await gw.stop();
      const states = await Promise.all(ids.map((id) => admin.zscore('gw:iomt-delivery:delayed', id)));
      assert.ok(
        states.every((s) => s !== null),
        'every job is back in the delayed set',
      );
      assert.deepEqual(await attempts(), before, 'no attempt was used by waiting or by the stop');
      assert.equal(await admin.llen('gw:iomt-delivery:active'), 0);

      ehr.faults.length = 0;
      gw = await startGateway(env);
      try {
        await eventually(
          async () => (await ehr.search<Observation>('Observation', { _count: '50' })).length === ids.length,
          30000,
          'delivery',
        );
        assert.equal((await request(gw.url).get('/api/dead-letters')).body.total, 0);
      } finally {
        await gw.stop();
      }
    } finally {
      admin.disconnect();
      await ehr.stop();
      await redis.stop();
    }
  });
});
