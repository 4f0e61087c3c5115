/**
 * Subscribers: a real HTTP consumer (an express app recording what it accepts, with a fault switch) is notified as the
 * FHIR Subscriptions R5 Backport IG's rest-hook channel does, after the EHR destination has written the readings:
 * history Bundles whose first entry is the R4 subscription status (Parameters), focus references that resolve at the
 * EHR (id-only) or the Observations themselves (full-resource), filtered by code, patient and device; a heartbeat when
 * idle; a consumer that is down does not hold up the EHR, then catches up with every event once; a 400 is a dead
 * letter that replays with its event number; a bad subscriber entry stops the start with every error listed.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Bundle, Observation, Parameters, ParametersParameter } from 'fhir/r4';
import request from 'supertest';
import { parseDestinations } from '../../src/config/destinations.js';
import { loadGatewayConfig } from '../../src/app/features.js';
import { notificationBundle } from '../../src/delivery/notifier.js';
import type { Reading } from '../../src/core/contract.js';
import { type DeliveryJob, DeliveryQueue } from '../../src/queue/queue.js';
import { type NotificationJob, SubscriberFeed } from '../../src/queue/routing.js';
import {
  eventually,
  FAST_ENV,
  REPO_ROOT,
  postJson,
  startEhr,
  startGateway,
  startRedis,
  type TestEhr,
  type TestGateway,
  type TestRedis,
} from '../helpers/harness.js';
import { destinationsFile, observations, reading } from './helpers.js';

interface Received {
  status: number;
  authorization?: string;
  contentType?: string;
  body: Bundle;
}

/** A rest-hook endpoint: records every notification and the status it answered (`fault` set: that status instead). */
async function startConsumer() {
  const received: Received[] = [];
  const state: { fault?: number; faultsLeft: number } = { faultsLeft: 0 };
  const app = express();
  app.use(express.json({ type: ['application/json', 'application/fhir+json'], limit: '10mb' }));
  app.post('/hook', (req, res) => {
    let status = 200;
    if (state.fault && state.faultsLeft > 0) {
      status = state.fault;
      state.faultsLeft--;
    }
    received.push({ status, authorization: req.get('authorization'), contentType: req.get('content-type'), body: req.body as Bundle });
    if (status >= 400)
      res.status(status).json({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'processing', diagnostics: 'no' }] });
    else res.status(status).end();
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    /** Answer `status` to the next `n` notifications. */
    fail(status: number, n = 1_000_000) {
      state.fault = status;
      state.faultsLeft = n;
    },
    heal() {
      state.faultsLeft = 0;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
type Consumer = Awaited<ReturnType<typeof startConsumer>>;

const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);
const part = (p: ParametersParameter, name: string) => p.part?.find((x) => x.name === name);
const statusOf = (b: Bundle) => b.entry?.[0]?.resource as Parameters;
const typeOf = (b: Bundle) => param(statusOf(b), 'type')?.valueCode;
/** The events of the notifications a consumer accepted: number, focus and (full-resource) the resource. */
function accepted(c: Consumer): { eventNumber: number; focus: string; resource?: Observation }[] {
  return c.received
    .filter((r) => r.status < 300 && typeOf(r.body) === 'event-notification')
    .flatMap((r) =>
      (statusOf(r.body).parameter ?? [])
        .filter((x) => x.name === 'notification-event')
        .map((e) => {
          const focus = part(e, 'focus')?.valueReference?.reference as string;
          const entry = r.body.entry?.find((x) => x.fullUrl === focus);
          return { eventNumber: Number(part(e, 'event-number')?.valueString), focus, resource: entry?.resource as Observation | undefined };
        }),
    );
}

const withPatient = (deviceId: string, patientId: string, value: number, code?: string, unit?: string) => ({
  ...reading(deviceId, value, code, unit),
  patientId,
});

describe('destinations: subscribers', function () {
  this.timeout(120_000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  let ews: Consumer;
  let dash: Consumer;
  let byDevice: Consumer;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    [ews, dash, byDevice] = await Promise.all([startConsumer(), startConsumer(), startConsumer()]);
    const file = destinationsFile({
      destinations: [
        { name: 'ehr', baseUrl: ehr.url },
        {
          name: 'ews',
          type: 'subscriber',
          endpoint: ews.url,
          headers: { Authorization: { env: 'EWS_HOOK_TOKEN' } },
          payload: 'id-only',
          filter: { codes: ['150456'] },
        },
        {
          name: 'dash',
          type: 'subscriber',
          endpoint: dash.url,
          payload: 'full-resource',
          heartbeatSeconds: 1,
          topic: 'http://example.org/SubscriptionTopic/vitals',
          filter: { patients: ['MRN-DASH'] },
        },
        { name: 'by-device', type: 'subscriber', endpoint: byDevice.url, source: 'ehr', filter: { devices: ['DEV-C'] } },
      ],
    });
    gw = await startGateway({
      REDIS_URL: redis.url,
      DESTINATIONS_FILE: file,
      UNKNOWN_PATIENT_POLICY: 'create',
      BREAKER_FAILURE_THRESHOLD: '3',
      BREAKER_PROBE_INTERVAL_MS: '200',
      BREAKER_PROBE_MAX_INTERVAL_MS: '1000',
      DELIVERY_ATTEMPTS: '3',
      EWS_HOOK_TOKEN: 'Bearer hook-secret',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await Promise.all([ews?.stop(), dash?.stop(), byDevice?.stop()]);
    await redis?.stop();
  });

  it('id-only: a history Bundle led by the R4 subscription status, its focus the Observation the EHR wrote', async () => {
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('DEV-A', 95))).status, 202);
    // Another code: written to the EHR, not notified to ews (its filter is SpO2).
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('DEV-A', 71, 'MDC_PULS_RATE_NON_INV', '/min'))).status, 202);
    await eventually(async () => (await observations(ehr)).total >= 2, 20_000, 'both readings at the EHR');
    await eventually(() => accepted(ews).length >= 1, 20_000, 'a notification at ews');
    const [note] = ews.received;
    assert.equal(note.authorization, 'Bearer hook-secret', 'the header from the environment');
    assert.match(note.contentType ?? '', /application\/fhir\+json/);
    const b = note.body;
    assert.equal(b.resourceType, 'Bundle');
    assert.equal(b.type, 'history');
    const status = statusOf(b);
    assert.equal(status.resourceType, 'Parameters');
    assert.deepEqual(status.meta?.profile, [
      'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4',
    ]);
    assert.equal(b.entry?.[0].request?.method, 'GET');
    assert.equal(b.entry?.[0].request?.url, 'Subscription/ews/$status');
    assert.equal(param(status, 'subscription')?.valueReference?.reference, 'Subscription/ews');
    assert.ok(param(status, 'topic')?.valueCanonical);
    assert.equal(param(status, 'status')?.valueCode, 'active');
    assert.equal(typeOf(b), 'event-notification');
    assert.equal(param(status, 'events-since-subscription-start')?.valueString, '1');
    const event = status.parameter?.find((x) => x.name === 'notification-event') as ParametersParameter;
    assert.equal(part(event, 'event-number')?.valueString, '1');
    assert.ok(part(event, 'timestamp')?.valueInstant);
    const focus = part(event, 'focus')?.valueReference?.reference as string;
    assert.ok(focus.startsWith(`${ehr.url}/Observation/`), focus);
    // id-only: the focus entry names the resource, without it.
    const entry = b.entry?.find((e) => e.fullUrl === focus);
    assert.ok(entry, 'an entry for the focus');
    assert.equal(entry.resource, undefined);
    assert.equal(entry.request?.method, 'POST');
    // The reference resolves at the EHR, to the SpO2 reading.
    const resolved = (await (await fetch(focus, { headers: { accept: 'application/fhir+json' } })).json()) as Observation;
    assert.equal(resolved.resourceType, 'Observation');
    assert.equal(resolved.valueQuantity?.value, 95);
    assert.equal(accepted(ews).length, 1, 'the heart rate reading was not notified');
    assert.equal(accepted(dash).length, 0, 'dash: another patient');
    assert.equal(accepted(byDevice).length, 0, 'by-device: another device');
  });

  it('full-resource, filtered by patient and by device', async () => {
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, withPatient('DEV-C', 'MRN-DASH', 93))).status, 202);
    assert.equal(
      (await postJson(`${gw.url}/ingest/measurements`, withPatient('DEV-Z', 'MRN-DASH', 60, 'MDC_PULS_RATE_NON_INV', '/min'))).status,
      202,
    );
    await eventually(() => accepted(dash).length >= 2, 20_000, 'two notifications at dash');
    await eventually(() => accepted(byDevice).length >= 1, 20_000, 'a notification at by-device');
    await eventually(() => accepted(ews).length >= 2, 20_000, 'the SpO2 reading at ews');
    const events = accepted(dash);
    assert.deepEqual(
      events.map((e) => e.eventNumber),
      [1, 2],
      "dash's own event numbers",
    );
    for (const e of events) {
      assert.ok(e.resource, 'full-resource: the Observation is in the Bundle');
      assert.equal(e.resource.resourceType, 'Observation');
      assert.equal(e.focus, `${ehr.url}/Observation/${e.resource.id}`, 'with the id the EHR gave it');
      assert.equal(e.resource.subject?.identifier?.value, 'MRN-DASH');
      const atEhr = await ehr.search<Observation>('Observation', { _id: e.resource.id as string });
      assert.equal(atEhr[0]?.identifier?.[0]?.value, e.resource.identifier?.[0]?.value);
    }
    assert.deepEqual(
      accepted(byDevice).map((e) => e.focus),
      [events.find((e) => e.resource?.valueQuantity?.value === 93)?.focus],
      'by-device: only DEV-C',
    );
    assert.equal(accepted(ews).length, 2, 'ews: the SpO2 one only');
  });

  it('a heartbeat when nothing was sent for a period', async () => {
    const after = dash.received.length;
    const heartbeat = await eventually(
      () => dash.received.slice(after).find((r) => typeOf(r.body) === 'heartbeat'),
      15_000,
      'a heartbeat at dash',
    );
    const status = statusOf(heartbeat.body);
    assert.equal(heartbeat.body.type, 'history');
    assert.equal(param(status, 'events-since-subscription-start')?.valueString, '2');
    assert.equal(param(status, 'topic')?.valueCanonical, 'http://example.org/SubscriptionTopic/vitals');
    assert.equal(status.parameter?.filter((x) => x.name === 'notification-event').length, 0);
    assert.equal(heartbeat.body.entry?.length, 1);
    assert.ok(!ews.received.some((r) => typeOf(r.body) === 'heartbeat'), 'no heartbeat where none is configured');
  });

  it('a consumer that is down does not hold up the EHR; it catches up with every event once', async () => {
    const before = (await observations(ehr)).total;
    const seen = accepted(ews).length;
    ews.fail(503);
    const n = 12;
    for (let i = 0; i < n; i++)
      assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading(`DOWN-${i}`, 80 + (i % 15)))).status, 202);
    // The EHR gets every reading while the consumer answers only 503.
    await eventually(async () => (await observations(ehr)).total >= before + n, 30_000, 'every reading at the EHR');
    await eventually(
      async () => (await request(gw.url).get('/readyz')).body.destinations?.ews?.state !== 'closed',
      20_000,
      "ews's breaker to open",
    );
    assert.equal(accepted(ews).length, seen, 'nothing accepted while down');
    assert.ok(
      ews.received.some((r) => r.status === 503),
      'the consumer was asked',
    );
    ews.heal();
    await eventually(() => accepted(ews).length >= seen + n, 30_000, 'ews to catch up');
    const events = accepted(ews);
    assert.equal(events.length, seen + n, 'nothing duplicated');
    const numbers = events.map((e) => e.eventNumber).sort((x, y) => x - y);
    assert.deepEqual(
      numbers,
      Array.from({ length: seen + n }, (_, i) => i + 1),
      'every event number once, none missing',
    );
    assert.equal(new Set(events.map((e) => e.focus)).size, seen + n, 'each Observation once');
    assert.equal((await request(gw.url).get('/api/dead-letters?destination=ews')).body.total, 0);
    assert.equal((await observations(ehr)).distinct, (await observations(ehr)).total, 'the EHR: no duplicates');
  });

  it('a 400 from the consumer is a dead letter of the subscriber; its replay keeps the event number', async () => {
    const seen = accepted(ews).length;
    ews.fail(400, 1);
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('DEV-400', 88))).status, 202);
    const list = await eventually(async () => {
      const r = await request(gw.url).get('/api/dead-letters?destination=ews');
      return r.body.total === 1 ? r.body : undefined;
    }, 20_000);
    assert.equal(list.items[0].httpStatus, 400);
    assert.equal(list.items[0].kind, 'rejected');
    assert.equal(ews.received.filter((r) => r.status === 400).length, 1, 'not retried');
    assert.equal((await request(gw.url).get('/api/dead-letters')).body.total, 0, 'the EHR delivered it');
    const refused = ews.received.find((r) => r.status === 400) as Received;
    const refusedNumber = Number(
      part(statusOf(refused.body).parameter?.find((x) => x.name === 'notification-event') as ParametersParameter, 'event-number')
        ?.valueString,
    );
    const retry = await request(gw.url).post(`/api/dead-letters/${list.items[0].id}/retry?destination=ews`);
    assert.equal(retry.status, 202);
    await eventually(() => accepted(ews).length > seen, 20_000, 'the replay at ews');
    const [replayed] = accepted(ews).slice(seen);
    assert.equal(replayed.eventNumber, refusedNumber, 'the same event, the same number');
    const resolved = (await (await fetch(replayed.focus)).json()) as Observation;
    assert.equal(resolved.valueQuantity?.value, 88);
  });

  it('a bad subscriber entry: every error listed', () => {
    const { errors } = parseDestinations(
      {
        destinations: [
          { name: 'ehr', baseUrl: 'https://ehr.example.org/fhir' },
          {
            name: 'ews',
            type: 'subscriber',
            endpoint: 'ftp://x',
            payload: 'everything',
            heartbeatSeconds: 0,
            headers: { Authorization: { env: 'NOT_SET_ANYWHERE' }, 'bad header': 'x' },
            source: 'nope',
            baseUrl: 'https://x',
            filter: { sendingFacilities: ['ICU'], patients: ['|'] },
          },
          { name: 'x', type: 'subscriber' },
        ],
      },
      { timeoutMs: 1000 },
      {},
    );
    const expected = [
      /destinations\[1\]: unknown key 'baseUrl' for a subscriber/,
      /destinations\[1\]\.endpoint: 'ftp:\/\/x' is not an http\(s\) URL/,
      /destinations\[1\]\.payload: 'everything' is not one of id-only, full-resource/,
      /destinations\[1\]\.heartbeatSeconds: must be a whole number from 1 to 86400/,
      /destinations\[1\]\.headers\.Authorization\.env: the environment variable NOT_SET_ANYWHERE is not set/,
      /destinations\[1\]\.headers\.bad header: not a header name/,
      /destinations\[1\]\.filter\.sendingFacilities: not offered for a subscriber/,
      /destinations\[1\]\.filter\.patients\[0\]: '\|' must be 'system\|value' or 'value'/,
      /destinations\[1\]\.source: 'nope' is not a FHIR destination of the file \(ehr\)/,
      /destinations\[2\]\.endpoint: the subscriber's rest-hook URL is required/,
    ];
    for (const re of expected)
      assert.ok(
        errors.some((e) => re.test(e)),
        `${re} in:\n${errors.join('\n')}`,
      );
    assert.equal(errors.length, expected.length, errors.join('\n'));
    const alone = parseDestinations(
      { destinations: [{ name: 'ews', type: 'subscriber', endpoint: 'https://ews.example.org/hook' }] },
      { timeoutMs: 1000 },
    );
    assert.deepEqual(alone.errors, ['destinations[0]: a subscriber follows a FHIR destination, and the file has none']);
    // The gateway does not start on such a file.
    const file = destinationsFile({ destinations: [{ name: 'ews', type: 'subscriber', endpoint: 'nope' }] });
    assert.throws(
      () => loadGatewayConfig({ ...FAST_ENV, DESTINATIONS_FILE: file }),
      /destinations\[0\]\.endpoint: 'nope' is not a URL[\s\S]*a subscriber follows a FHIR destination/,
    );
  });

  it('a subscriber does not change the defaults the FHIR destinations set (the sandbox: unknown patients created)', () => {
    const file = destinationsFile({
      destinations: [
        { name: 'ews', type: 'subscriber', endpoint: 'https://ews.example.org/hook' },
        { name: 'ehr', sandbox: true },
      ],
    });
    const config = loadGatewayConfig({ ...FAST_ENV, DESTINATIONS_FILE: file });
    assert.equal(config.unknownPatientPolicy, 'create');
    assert.deepEqual(
      config.destinations.map((d) => d.name),
      ['ehr', 'ews'],
      'FHIR destinations first',
    );
    assert.equal(config.destinations[1].subscriber?.source, 'ehr');
  });

  it("docs/destinations.md: its files are valid and its notification is the notifier's", () => {
    const text = readFileSync(`${REPO_ROOT}/docs/destinations.md`, 'utf8');
    const blocks = [...text.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]));
    const files = blocks.filter((b) => b.destinations);
    assert.ok(files.some((f) => f.destinations.some((d: { type?: string }) => d.type === 'subscriber')));
    for (const f of files) {
      const r = parseDestinations(f, { timeoutMs: 1000 }, { EHR_TOKEN: 't', EWS_HOOK_AUTHORIZATION: 'Bearer x' });
      assert.deepEqual(r.errors, []);
    }
    const documented = blocks.find((b) => b.resourceType === 'Bundle') as Bundle;
    const made = notificationBundle(
      { subscription: 'Subscription/ews', topic: 'https://ews.example.org/SubscriptionTopic/vital-signs', payload: 'id-only' },
      'event-notification',
      42,
      [{ eventNumber: 42, timestamp: '2026-11-23T11:00:02.101Z', focus: 'https://ehr.example.org/fhir/r4/Observation/123' }],
      new Date('2026-11-23T11:00:02.118Z'),
    );
    // The same but for the generated ids.
    const withoutIds = (b: Bundle) => JSON.parse(JSON.stringify(b).replace(/"(urn:uuid:)?[0-9a-f]{8}-[0-9a-f-]{27}"/g, '"x"'));
    assert.deepEqual(withoutIds(documented), withoutIds(made));
  });
});

describe('destinations: a subscriber whose queue is full (QUEUE_MAX_DEPTH)', function () {
  this.timeout(120_000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  let hook: Consumer;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    hook = await startConsumer();
    const file = destinationsFile({
      destinations: [
        { name: 'ehr', baseUrl: ehr.url },
        // One notification at a time: the others wait in the queue, where the bound applies.
        { name: 'hook', type: 'subscriber', endpoint: hook.url, payload: 'id-only', concurrency: 1 },
      ],
    });
    gw = await startGateway({
      REDIS_URL: redis.url,
      DESTINATIONS_FILE: file,
      UNKNOWN_PATIENT_POLICY: 'create',
      QUEUE_MAX_DEPTH: '3',
      BREAKER_FAILURE_THRESHOLD: '3',
      BREAKER_PROBE_INTERVAL_MS: '200',
      BREAKER_PROBE_MAX_INTERVAL_MS: '1000',
      DELIVERY_ATTEMPTS: '30',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await hook?.stop();
    await redis?.stop();
  });

  it('queues no more notifications, numbers them still (the consumer sees the gap), and never holds up the EHR', async () => {
    hook.fail(503);
    const n = 8;
    for (let i = 0; i < n; i++) {
      // Each reading reaches the EHR before the next is sent: the EHR's own queue stays under the bound.
      const r = await postJson(`${gw.url}/ingest/measurements`, reading(`FULL-${i}`, 80 + i));
      assert.equal(r.status, 202, JSON.stringify(r.body));
      await eventually(async () => (await observations(ehr)).total === i + 1, 20_000, `reading ${i} at the EHR`);
      // Ingest counts the jobs it added on top of the depth it read, for 200 ms (queue.ts depth()): let that pass.
      await new Promise((res) => setTimeout(res, 250));
    }
    const dropped = async () =>
      Number(
        /^iomt_subscriber_events_dropped_total\{destination="hook"\} (\d+)$/m.exec((await request(gw.url).get('/metrics')).text)?.[1] ?? 0,
      );
    const lost = await dropped();
    assert.ok(lost >= 1 && lost <= n - 3, `${lost} events not queued`);
    assert.ok(gw.logs.some((l) => /a subscriber's queue is full/.test(l)));

    hook.heal();
    await eventually(() => accepted(hook).length === n - lost, 30_000, 'the queued notifications');
    // The next event is numbered after every one before it, queued or not: the consumer can tell what it missed.
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('FULL-LAST', 99))).status, 202);
    await eventually(() => accepted(hook).some((e) => e.eventNumber === n + 1), 30_000, 'the next event, numbered n + 1');
    const numbers = accepted(hook).map((e) => e.eventNumber);
    assert.equal(new Set(numbers).size, numbers.length, 'none twice');
    assert.ok(numbers.every((x) => x >= 1 && x <= n + 1));
    assert.equal(numbers.length, n - lost + 1, 'what was queued, and the last');
    assert.equal((await request(gw.url).get('/api/dead-letters?destination=hook')).body.total, 0);
    assert.equal((await observations(ehr)).total, n + 1, 'the EHR has every reading');
  });
});

describe('subscriber feed: a notification that finds its queue full', function () {
  this.timeout(30_000);

  it('is numbered once, however often the source job is retried; the next one is numbered after it', async () => {
    const redis = await startRedis();
    const queue = new DeliveryQueue(
      {
        redisUrl: redis.url,
        queueName: 'feed-full',
        maxDepth: 1,
        enqueueTimeoutMs: 2000,
        attempts: 3,
        lockDurationMs: 30_000,
        stalledIntervalMs: 30_000,
        retentionCompleted: 100,
        retryBaseDelayMs: 50,
        retryMaxDelayMs: 500,
      },
      () => 100,
    );
    try {
      await queue.whenReady();
      const { destinations, errors } = parseDestinations(
        {
          destinations: [
            { name: 'ehr', baseUrl: 'http://127.0.0.1:9/fhir' },
            { name: 'feed', type: 'subscriber', endpoint: 'http://127.0.0.1:9/hook' },
          ],
        },
        { timeoutMs: 1000 },
        {},
      );
      assert.deepEqual(errors, []);
      const dropped: number[] = [];
      const feed = new SubscriberFeed([{ destination: destinations[1], queue }], { onDropped: (_name, events) => dropped.push(events) });
      const written = (tag: string): DeliveryJob => ({
        adapterId: 'measurements',
        channel: 'http',
        receivedAt: '2026-12-04T11:00:00Z',
        translations: [
          {
            devices: [],
            patient: { system: 'urn:p', value: 'P1' },
            observations: [1, 2].map((i) => ({ resourceType: 'Observation', id: `${tag}-${i}`, status: 'final', code: { text: 'x' } })),
          } as unknown as Reading,
        ],
      });
      // The queue is full (its one place taken): the source's job is written, then retried (a stalled check, say).
      await queue.bull.add(written('filler'), { jobId: 'filler' });
      await feed.delivered('ehr', written('a'));
      await feed.delivered('ehr', written('a'));
      assert.deepEqual(dropped, [2], 'two events not queued, counted once');
      assert.equal(await queue.redis.get('gw:sub:feed:events'), '2', 'numbered once');
      // Room again: the next notification takes the numbers after the dropped ones.
      await (await queue.bull.getJob('filler'))?.remove();
      await new Promise((res) => setTimeout(res, 250)); // the depth read is reused for 200 ms
      await feed.delivered('ehr', written('b'));
      const queued = (await queue.bull.getJobs(['waiting'])).map((j) => (j.data as NotificationJob).firstEvent);
      assert.deepEqual(queued, [3]);
    } finally {
      await queue.close();
      await redis.stop();
    }
  });
});
