/**
 * /metrics as Prometheus reads it: a real gateway (real Redis, the sandbox EHR over HTTP behind its fault injector),
 * real traffic over HTTP JSON and HL7v2 with known device and patient ids, then the exposition is parsed and checked
 * against Prometheus conventions (HELP and TYPE for every family, `iomt_` prefix, `_total` counters, `_seconds`
 * histograms with sensible buckets), against the traffic (the ingest→EHR latency histogram counts every delivered
 * reading; EHR request durations by outcome; refusals by reason class; devices by state and connectivity), and for
 * identifiers: no label value contains a device id, a patient id or an HL7 control id that was sent.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { METRICS } from '../../src/observability/metrics.js';
import { pcdMessage } from '../hl7v2/helpers.js';
import { eventually, postJson, REPO_ROOT, startGateway, startRedis, useStack } from '../helpers/harness.js';
import { parseExposition, type Exposition, sampleValue } from './exposition.js';

const ADMIN = 'obsv-admin-key-0123456789abcdef';
const auth = { authorization: `Bearer ${ADMIN}` };

async function scrape(url: string): Promise<Exposition> {
  const r = await fetch(`${url}/metrics`, { headers: auth });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parseExposition(await r.text());
}

const reading = (deviceId: string, patientId: string, minute: number, value = 97) => ({
  deviceId,
  manufacturer: 'Acme Medical',
  model: 'PulseOx 3',
  patientId,
  timestamp: `2026-11-23T10:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

// Role all with delivery on a thread of its own too: its counters reach the same scrape, its log lines the same log.
for (const thread of ['off', 'on'] as const)
  describe(`/metrics after real traffic (Prometheus conventions, the new metrics, no identifiers in labels; DELIVERY_THREAD=${thread})`, function () {
    this.timeout(60000);
    const stack = useStack({
      ADMIN_API_KEY: ADMIN,
      UNKNOWN_PATIENT_POLICY: 'create',
      PATIENT_IDENTIFIER_SYSTEM: 'urn:test:mrn',
      DEVICE_OFFLINE_CHECK_INTERVAL_MS: '200',
      DELIVERY_THREAD: thread,
    });
    const DEVICE = 'OBSVDEV7731';
    const PATIENT = 'OBSVPAT5519';
    const BAD_DEVICE = 'OBSVDEVBAD1';
    const BAD_PATIENT = 'OBSVPATBAD1';
    const CONTROL_ID = 'OBSVCTRL8842';
    const HL7_PATIENT = 'MRN-4711';
    const HL7_DEVICE = '00A0C914C8290001';
    const delivered = 4; // three JSON readings and one HL7v2 reading
    let m: Exposition;

    before(async () => {
      stack.ehr.faults.push({ status: 503, match: (req) => req.method === 'POST' });
      for (const minute of [1, 2, 3]) {
        const r = await postJson(`${stack.gw.url}/ingest/measurements`, reading(DEVICE, PATIENT, minute), auth);
        assert.equal(r.status, 202, JSON.stringify(r.body));
      }
      const hl7 = await fetch(`${stack.gw.url}/hl7v2`, {
        method: 'POST',
        headers: { 'content-type': 'x-application/hl7-v2+er7', ...auth },
        body: pcdMessage(CONTROL_ID),
      });
      assert.equal(hl7.status, 200, await hl7.clone().text());
      const bad = await postJson(
        `${stack.gw.url}/ingest/measurements`,
        { ...reading(BAD_DEVICE, BAD_PATIENT, 4), measurements: [{ code: 'NOT_A_CODE', value: 1, unit: 'x' }] },
        auth,
      );
      assert.equal(bad.status, 422, JSON.stringify(bad.body));
      const unknown = await postJson(`${stack.gw.url}/ingest/${BAD_DEVICE}`, reading(BAD_DEVICE, BAD_PATIENT, 5), auth);
      assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
      m = await eventually(
        async () => {
          const e = await scrape(stack.gw.url);
          return sampleValue(e, 'iomt_ingest_to_ehr_latency_seconds_count', { destination: 'ehr' }) === delivered &&
            (sampleValue(e, 'iomt_devices', { state: 'active' }) ?? 0) >= 2
            ? e
            : undefined;
        },
        30000,
        'every reading delivered',
      );
    });

    it('needs an operator credential (Prometheus scrapes with a bearer token)', async () => {
      assert.equal((await fetch(`${stack.gw.url}/metrics`)).status, 401);
    });

    it('every family has HELP and TYPE, every name the iomt_ prefix, and samples belong to a declared family', () => {
      assert.ok(m.families.size > 30, `families: ${m.families.size}`);
      for (const [name, f] of m.families) {
        assert.ok(name.startsWith('iomt_'), name);
        assert.ok(f.help && !/not described/.test(f.help), `HELP of ${name}`);
        assert.ok(f.type, `TYPE of ${name}`);
      }
      for (const s of m.samples) assert.ok(m.familyOf(s.name), `sample ${s.name} has no HELP/TYPE`);
    });

    it('counters end in _total; durations and ages are in seconds; histograms are _seconds with increasing buckets up to +Inf', () => {
      for (const [name, f] of m.families) {
        if (f.type === 'counter') assert.match(name, /_total$/, name);
        else assert.doesNotMatch(name, /_total$/, `${name} is a ${f.type}`);
        if (/duration|latency|_age|_time/.test(name)) assert.match(name, /_seconds$/, name);
        assert.doesNotMatch(name, /_(ms|milliseconds|minutes|hours)$/, name);
        if (f.type === 'histogram') assert.match(name, /_seconds$/, name);
      }
      const histograms = [...m.families].filter(([, f]) => f.type === 'histogram').map(([n]) => n);
      assert.deepEqual(histograms.sort(), ['iomt_ehr_request_duration_seconds', 'iomt_ingest_to_ehr_latency_seconds']);
      for (const name of histograms) {
        const series = new Map<string, { le: number; v: number }[]>();
        for (const s of m.samples.filter((x) => x.name === `${name}_bucket`)) {
          const { le, ...rest } = s.labels;
          const k = JSON.stringify(rest);
          series.set(k, [...(series.get(k) ?? []), { le: le === '+Inf' ? Infinity : Number(le), v: s.value }]);
        }
        assert.ok(series.size > 0, `${name} has series`);
        for (const [k, buckets] of series) {
          const les = buckets.map((b) => b.le);
          assert.deepEqual(
            les,
            [...les].sort((a, b) => a - b),
            `${name}${k}: buckets in order`,
          );
          assert.equal(les.at(-1), Infinity, `${name}${k}: ends with +Inf`);
          assert.ok(les[0] <= 0.01, `${name}: a first bucket of 10 ms or less`);
          assert.ok(les.at(-2)! >= 30, `${name}: buckets up to 30 s or more`);
          for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].v >= buckets[i - 1].v, `${name}${k}: cumulative`);
          const labels = JSON.parse(k) as Record<string, string>;
          assert.equal(buckets.at(-1)!.v, sampleValue(m, `${name}_count`, labels), `${name}${k}: +Inf = _count`);
          assert.ok((sampleValue(m, `${name}_sum`, labels) ?? -1) >= 0, `${name}${k}: _sum`);
        }
      }
    });

    it('the ingest→EHR latency histogram counts every delivered reading, as delivery_readings_total does', () => {
      assert.equal(sampleValue(m, 'iomt_ingest_to_ehr_latency_seconds_count', { destination: 'ehr' }), delivered);
      const byChannel = m.samples.filter((s) => s.name === 'iomt_delivery_readings_total');
      assert.equal(
        byChannel.reduce((n, s) => n + s.value, 0),
        delivered,
      );
      assert.equal(sampleValue(m, 'iomt_delivery_readings_total', { adapter: 'measurements', channel: 'http', destination: 'ehr' }), 3);
      assert.equal(sampleValue(m, 'iomt_ingest_readings_total', { adapter: 'measurements', channel: 'http' }), 3);
    });

    it('EHR request durations by destination and outcome: the injected 503 is a server-error, the rest succeed', () => {
      assert.equal(sampleValue(m, 'iomt_ehr_request_duration_seconds_count', { destination: 'ehr', outcome: 'server-error' }), 1);
      const ok = sampleValue(m, 'iomt_ehr_request_duration_seconds_count', { destination: 'ehr', outcome: 'success' }) ?? 0;
      const transactions = sampleValue(m, 'iomt_delivery_transactions_total', { destination: 'ehr' }) ?? 0;
      assert.ok(transactions >= 1 && ok >= transactions, `success ${ok}, transactions ${transactions}`);
    });

    it('refusals by reason class (bounded), queue depth and oldest-job age, devices by state and connectivity', () => {
      const refusals = m.samples.filter((s) => s.name === 'iomt_refusals_total');
      assert.ok(refusals.length >= 1, 'refusals counted');
      for (const s of refusals) assert.match(s.labels.reason, /^[a-z-]+$/, 'a FHIR issue type, not free text');
      assert.ok(refusals.reduce((n, s) => n + s.value, 0) >= 2, JSON.stringify(refusals));
      for (const state of ['waiting', 'active', 'delayed', 'failed'])
        assert.notEqual(sampleValue(m, 'iomt_queue_jobs', { destination: 'ehr', state }), undefined, `queue_jobs{state=${state}}`);
      assert.equal(
        sampleValue(m, 'iomt_queue_oldest_waiting_age_seconds', { destination: 'ehr' }),
        0,
        'nothing waits once all is delivered',
      );
      assert.ok((sampleValue(m, 'iomt_devices', { state: 'active' }) ?? 0) >= 2);
      assert.ok((sampleValue(m, 'iomt_devices_connectivity', { connectivity: 'online' }) ?? 0) >= 2);
      assert.notEqual(sampleValue(m, 'iomt_devices_connectivity', { connectivity: 'offline' }), undefined);
    });

    it("the process's resident memory and the heap its own thread uses, in bytes", () => {
      const rss = sampleValue(m, 'iomt_process_resident_memory_bytes', {}) ?? 0;
      const heap = sampleValue(m, 'iomt_process_heap_used_bytes', {}) ?? 0;
      assert.ok(rss > 20 * 2 ** 20, `resident ${rss}`);
      assert.ok(heap > 2 ** 20 && heap < rss, `heap ${heap} of ${rss}`);
    });

    it('no label value carries a device id, a patient id or an HL7 control id that was sent', () => {
      const ids = [DEVICE, PATIENT, BAD_DEVICE, BAD_PATIENT, CONTROL_ID, HL7_PATIENT, HL7_DEVICE];
      for (const s of m.samples)
        for (const [k, v] of Object.entries(s.labels))
          for (const id of ids) assert.ok(!v.toLowerCase().includes(id.toLowerCase()), `${s.name}{${k}="${v}"} carries ${id}`);
      assert.ok(
        m.samples.some((s) => s.labels.adapter === 'unknown'),
        'an unregistered adapter in a URL is counted as "unknown"',
      );
    });

    it('the logs of that traffic (JSON, debug level) name no patient', () => {
      assert.ok(
        stack.gw.logs.some((l) => JSON.parse(l).msg === 'delivered'),
        'the delivery of each reading is logged',
      );
      for (const line of stack.gw.logs) {
        JSON.parse(line);
        for (const phi of [PATIENT, BAD_PATIENT, HL7_PATIENT, 'Muster', 'Erika']) assert.ok(!line.includes(phi), `${phi} in ${line}`);
      }
    });

    it('every declared metric is described in docs/operations.md', () => {
      const doc = readFileSync(`${REPO_ROOT}/docs/operations.md`, 'utf8');
      for (const name of Object.keys(METRICS)) assert.ok(doc.includes(`iomt_${name}`), `iomt_${name} in docs/operations.md`);
    });
  });

describe('/metrics: queue depth and the age of the oldest waiting job, with no worker to take it', function () {
  this.timeout(30000);
  it('counts the waiting job and gives its age from Redis at scrape time', async () => {
    const redis = await startRedis();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: 'http://127.0.0.1:9/fhir', ADMIN_API_KEY: ADMIN }, 'ingest');
    try {
      const r = await postJson(`${gw.url}/ingest/measurements`, reading('OBSVWAIT1', 'OBSVWAITP', 1), auth);
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const first = await scrape(gw.url);
      assert.equal(sampleValue(first, 'iomt_queue_jobs', { destination: 'ehr', state: 'waiting' }), 1);
      assert.equal(sampleValue(first, 'iomt_queue_waiting', { destination: 'ehr' }), 1, 'the documented name is kept');
      const age = await eventually(
        async () => {
          const a = sampleValue(await scrape(gw.url), 'iomt_queue_oldest_waiting_age_seconds', { destination: 'ehr' }) ?? 0;
          return a >= 0.2 ? a : undefined;
        },
        10000,
        'the age to grow',
      );
      assert.ok(age < 60, `age ${age} s`);
    } finally {
      await gw.stop();
      await redis.stop();
    }
  });
});
