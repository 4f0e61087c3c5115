/**
 * Role all with delivery on a thread of its own (DELIVERY_THREAD): the gateway's thread ingests, the delivery thread
 * delivers, and the process still reads as one: the console's statistics, /api/status and the log. A stop finishes
 * the thread's job in flight; a thread that dies is started again and the job it held is delivered once.
 * (/metrics and the circuit breaker's routes in this mode: test/observability/metrics.test.ts, test/delivery/breaker.test.ts.)
 */
import { strict as assert } from 'node:assert';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { Observation } from 'fhir/r4';
import request from 'supertest';
import { DeliveryThread } from '../../src/app/delivery-host.js';
import { loadGatewayConfig } from '../../src/app/features.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import {
  FAST_ENV,
  eventually,
  postJson,
  startEhr,
  startGateway,
  startRedis,
  type TestEhr,
  type TestGateway,
  type TestRedis,
  useStack,
} from '../helpers/harness.js';
import { makePki } from '../ehr/helpers.js';

const THREAD = { DELIVERY_THREAD: 'on' };

const reading = (deviceId: string, minute: number, value = 97) => ({
  deviceId,
  patientId: 'THR-PAT-1',
  timestamp: `2026-11-23T11:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');

/** The thread's worker, to end it as a crash would (terminate: no stop, no goodbye). */
const threadOf = (gw: TestGateway) => (gw.gateway.deliveryThread as unknown as { worker?: Worker }).worker;

/** A gate the test opens: the EHR holds a request until then. */
function gate(): { promise: Promise<void>; open(): void } {
  let open = () => {};
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

describe('role all, delivery on a thread of its own (DELIVERY_THREAD=on)', function () {
  this.timeout(60_000);
  // A crashed thread's device and patient locks expire a few FHIR timeouts after it took them (delivery/locks.ts).
  const stack = useStack({ ...THREAD, UNKNOWN_PATIENT_POLICY: 'create', FHIR_TIMEOUT_MS: '1000' });

  it('delivers what ingest queued; the console, /api/status and the log tell of it as of one process', async () => {
    const { gateway, url } = stack.gw;
    assert.ok(gateway.deliveryThread, 'role all started its delivery thread');
    assert.equal(gateway.worker, undefined, 'no worker on the gateway thread');
    for (const minute of [1, 2, 3]) {
      const r = await postJson(`${url}/ingest/measurements`, reading('THR-DEV-1', minute));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    await eventually(async () => (await stack.ehr.search<Observation>('Observation', { _count: '50' })).length === 3, 20_000, 'delivery');
    // The console's statistics are fed by the thread's settlements (sent in batches).
    await eventually(() => gateway.stats.rows().find((r) => r.channel === 'http')?.total.delivered === 3, 5000, 'the console counts');
    const row = gateway.stats.rows().find((r) => r.channel === 'http');
    assert.deepEqual({ received: row?.total.received, queued: row?.total.queued }, { received: 3, queued: 3 });
    assert.ok(gateway.stats.lastSuccessAt, 'the last success is known');
    // What the thread's worker knows: its breaker and the write mode it chose from the EHR's CapabilityStatement.
    const s = await request(url).get('/api/status');
    assert.equal(s.status, 200);
    const d = s.body.destinations[0];
    assert.equal(d.destination, 'ehr');
    assert.equal(d.state, 'closed');
    assert.equal(d.breakerEnabled, true);
    assert.equal(d.waitingJobs, 0);
    assert.equal(d.writeMode, 'transaction');
    assert.ok(d.writeModeSource, 'where the write mode came from');
    // The thread's log lines reach the gateway's log (JSON, the same redaction), marked as the thread's.
    await eventually(
      () => stack.gw.logs.some((l) => JSON.parse(l).thread === 'delivery' && JSON.parse(l).msg === 'delivered'),
      5000,
      "the thread's log lines",
    );
    for (const l of stack.gw.logs) assert.ok(!l.includes('THR-PAT-1'), `the patient in ${l}`);
    const ready = await request(url).get('/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.destinations.ehr.state, 'closed');
    // Its nursery is capped (delivery-host.ts): two nurseries grown to 32 MiB each were a quarter of the peak RSS.
    assert.equal(threadOf(stack.gw)?.resourceLimits?.maxYoungGenerationSizeMb, 16);
  });

  it('a thread that dies is started again; the job it held is delivered once', async () => {
    const { gateway, url } = stack.gw;
    const completed = (await gateway.queue?.counts())?.completed ?? 0;
    const held = gate();
    stack.ehr.faults.push({ status: 200, gate: held.promise, match: isTransaction });
    const r = await postJson(`${url}/ingest/measurements`, reading('THR-DEV-2', 10, 91));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await eventually(() => stack.ehr.faults.length === 0, 10_000, 'the transaction to reach the EHR');
    const first = threadOf(stack.gw);
    assert.ok(first);
    await first.terminate();
    // The EHR writes what the dead thread sent; the new thread sends it again once the job's lock and the device's and
    // patient's delivery locks have expired.
    held.open();
    const thread = gateway.deliveryThread as DeliveryThread;
    await eventually(() => thread.restarts === 1 && threadOf(stack.gw) && threadOf(stack.gw) !== first, 10_000, 'a new thread');
    await eventually(async () => (await gateway.queue?.counts())?.completed === completed + 1, 20_000, 'the held job completed');
    const obs = await stack.ehr.search<Observation>('Observation', { _count: '50' });
    assert.equal(obs.filter((o) => o.valueQuantity?.value === 91).length, 1, 'the held reading once');
    assert.equal((await gateway.queue?.counts())?.failed, 0);
    // And it goes on delivering.
    const after = await postJson(`${url}/ingest/measurements`, reading('THR-DEV-2', 11, 92));
    assert.equal(after.status, 202);
    await eventually(
      async () => (await stack.ehr.search<Observation>('Observation', { _count: '50' })).some((o) => o.valueQuantity?.value === 92),
      20_000,
      'delivery after the restart',
    );
    const m = (await request(url).get('/metrics')).text;
    assert.match(m, /^iomt_delivery_thread_restarts_total 1$/m);
    assert.ok(stack.gw.logs.some((l) => /the delivery thread stopped: starting it again/.test(l)));
  });
});

describe('role all with a delivery thread: a stop', function () {
  this.timeout(60_000);
  let redis: TestRedis;
  let ehr: TestEhr;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    await ehr?.stop();
    await redis?.stop();
  });

  it("finishes the thread's job in flight before the gateway ends; nothing is left active", async () => {
    const gw = await startGateway({ ...THREAD, REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_PATIENT_POLICY: 'create' });
    const held = gate();
    ehr.faults.push({ status: 200, gate: held.promise, match: isTransaction });
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('THR-DEV-3', 20, 93));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await eventually(() => ehr.faults.length === 0, 10_000, 'the transaction to reach the EHR');
    let stopped = false;
    const stopping = gw.stop().then(() => (stopped = true));
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(stopped, false, 'the stop waits for the job in flight');
    held.open();
    await stopping;
    const obs = await ehr.search<Observation>('Observation', { _count: '50' });
    assert.equal(obs.filter((o) => o.valueQuantity?.value === 93).length, 1);
    // Another process on the same Redis finds the job completed, not active or waiting to be handed out again.
    const check = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url }, 'ingest');
    try {
      const counts = await check.gateway.queue?.counts();
      assert.equal(counts?.completed, 1, JSON.stringify(counts));
      assert.equal(counts?.active, 0, JSON.stringify(counts));
      assert.equal(counts?.waiting, 0, JSON.stringify(counts));
    } finally {
      await check.stop();
    }
    assert.ok(gw.logs.some((l) => JSON.parse(l).msg === 'gateway stopped'));
  });
});

describe('a delivery thread that cannot start', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  const hostOf = (config: object) =>
    new DeliveryThread(
      {
        config: config as ReturnType<typeof loadGatewayConfig>,
        target: { url: redis.url },
        sandbox: { url: 'http://127.0.0.1:9/fhir' },
        logLevel: 'silent',
      },
      { log: createLogger('silent'), metrics: new Metrics(), observer: { settled: () => undefined } },
    );
  const config = () => loadGatewayConfig({ ...FAST_ENV, REDIS_URL: redis.url, FHIR_BASE_URL: 'http://127.0.0.1:9/fhir' });

  it("rejects its start with the thread's reason (a TLS file it cannot read)", async () => {
    const c = config();
    const thread = hostOf({ ...c, ehrAuth: { ...c.ehrAuth, tls: { ca: '/nonexistent/iomt-ca.pem' } } });
    await assert.rejects(thread.start(), /the delivery thread could not start: [\s\S]*iomt-ca\.pem/);
    assert.equal(thread.running, false);
    await thread.stop(60_000);
  });

  it('ends a thread that failed after it had opened its Redis connections and queues', async () => {
    const c = config();
    // A base URL that is not one fails when the thread builds the destination's client, after its queues are open.
    const thread = hostOf({ ...c, destinations: [{ ...c.destinations[0], baseUrl: 'not a url' }] });
    await assert.rejects(thread.start(), /the delivery thread could not start: [\s\S]*URL/);
    // Ended with its failure: a stop has nothing to wait for. A thread left running would hold this stop for its whole
    // minute (it never listens for the request), past the test's time.
    await thread.stop(60_000);
  });

  it('rejects its start, not throws, when its settings cannot be copied to a thread', async () => {
    const thread = hostOf({ ...config(), notCopyable: () => 1 });
    const started = (() => {
      try {
        return thread.start();
      } catch (err) {
        return err as Error;
      }
    })();
    assert.ok(started instanceof Promise, `start() threw: ${String(started)}`);
    await assert.rejects(started, /the delivery thread could not start/);
  });
});

describe('a delivery thread that cannot be started again', function () {
  this.timeout(60_000);

  it('is tried again, waiting longer each time; meanwhile readings are queued and /readyz, /api/status, /metrics say so', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const pki = makePki();
    // A file the thread reads when it starts (FHIR_TLS_CA), taken away while it runs: its restart fails until it is back.
    const ca = join(pki.dir, 'ehr-ca.crt');
    copyFileSync(pki.ca, ca);
    const gw = await startGateway({
      ...THREAD,
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      FHIR_TLS_CA: ca,
      UNKNOWN_PATIENT_POLICY: 'create',
    });
    try {
      const thread = gw.gateway.deliveryThread as DeliveryThread;
      rmSync(ca);
      await threadOf(gw)?.terminate();
      await eventually(() => gw.logs.some((l) => /could not be started again/.test(l)), 15_000, 'a failed restart');
      assert.equal(thread.running, false);
      const ready = await request(gw.url).get('/readyz');
      assert.equal(ready.status, 200, 'ingest still accepts and queues');
      assert.match((ready.body.warnings ?? []).join(' '), /the delivery thread is not running: readings are queued, not delivered/);
      const status = await request(gw.url).get('/api/status');
      assert.equal(status.body.deliveryThread.running, false);
      assert.match(status.body.deliveryThread.error, /not running/);
      assert.match((await request(gw.url).get('/metrics')).text, /^iomt_delivery_thread_up 0$/m);
      const r = await postJson(`${gw.url}/ingest/measurements`, reading('THR-DEV-4', 30, 94));
      assert.equal(r.status, 202, JSON.stringify(r.body));

      copyFileSync(pki.ca, ca);
      await eventually(() => thread.running, 30_000, 'the thread to run again');
      await eventually(
        async () => (await ehr.search<Observation>('Observation', { _count: '50' })).some((o) => o.valueQuantity?.value === 94),
        20_000,
        'the queued reading delivered',
      );
      assert.match((await request(gw.url).get('/metrics')).text, /^iomt_delivery_thread_up 1$/m);
      const after = await request(gw.url).get('/readyz');
      assert.doesNotMatch((after.body.warnings ?? []).join(' '), /delivery thread/);
      assert.equal((await request(gw.url).get('/api/status')).body.deliveryThread.running, true);
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
      rmSync(pki.dir, { recursive: true, force: true });
    }
  });
});

describe('role all with a delivery thread: a stop that runs out of time', function () {
  this.timeout(60_000);

  it('ends the thread before the gateway closes Redis, and returns only once it has', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({
      ...THREAD,
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      SHUTDOWN_TIMEOUT_MS: '1000',
      UNKNOWN_PATIENT_POLICY: 'create',
    });
    const held = gate();
    try {
      ehr.faults.push({ status: 200, gate: held.promise, match: isTransaction });
      const r = await postJson(`${gw.url}/ingest/measurements`, reading('THR-DEV-5', 40, 95));
      assert.equal(r.status, 202, JSON.stringify(r.body));
      await eventually(() => ehr.faults.length === 0, 10_000, 'the transaction to reach the EHR');
      const worker = threadOf(gw);
      assert.ok(worker);
      await gw.stop();
      // A Worker's threadId is -1 once its thread has exited.
      assert.equal(worker.threadId, -1, 'the delivery thread has exited when stop() returns');
      assert.equal(gw.gateway.deliveryThread?.running, false);
    } finally {
      held.open();
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});
