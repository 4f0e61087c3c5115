/**
 * One fault scenario: a real Redis (AOF), the counting sink, optionally a real Mosquitto, gateway processes, load on
 * every channel and the /healthz poller; then the count: every acknowledged reading must have been created in the
 * EHR exactly once. The figures of every scenario are kept for the table printed at the end of the run.
 */
import { strict as assert } from 'node:assert';
import { mosquittoBinary, startMosquitto, type TestBroker } from '../mqtt/broker.js';
import { type Channel, type HealthFigures, httpLoad, Ledger, type Load, mllpLoad, mqttLoad, pollHealth } from './load.js';
import { type FaultGateway, type FaultRedis, gatewayProcess, type Role, startFaultRedis } from './procs.js';
import { type Sink, startSink } from './sink.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Acknowledged readings of a channel allowed to wait for the EHR before its senders pause. MQTT's is smaller: the
 * gateway takes one message at a time from its broker connection (mqtt.js holds the next packet until the PUBACK), so
 * a backlog at the broker drains more slowly than the queue.
 */
const BACKLOG: Record<Channel, number> = { http: 200, mllp: 200, mqtt: 60 };

export interface Row {
  scenario: string;
  acknowledged: number;
  delivered: number;
  lost: number;
  duplicated: number;
  /** The slowest answered /healthz poll of any gateway process, ms. */
  worstHealthzMs: number;
  /** /healthz polls unanswered (a process was down: expected only while it was killed). */
  unanswered: number;
  note: string;
}

export const rows: Row[] = [];

export function printTable(title: string, list: Row[]): void {
  const head = ['scenario', 'acknowledged', 'delivered', 'lost', 'duplicated', 'worst /healthz', 'unanswered polls'];
  const body = list.map((r) => [
    r.scenario,
    String(r.acknowledged),
    String(r.delivered),
    String(r.lost),
    String(r.duplicated),
    `${r.worstHealthzMs.toFixed(0)} ms`,
    String(r.unanswered),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `  | ${cells.map((c, i) => (i ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ')} |`;
  console.log(`\n  ${title}`);
  console.log(line(head));
  console.log(`  |${widths.map((w, i) => (i ? `${'-'.repeat(w + 1)}:` : `-${'-'.repeat(w + 1)}`)).join('|')}|`);
  for (const b of body) console.log(line(b));
  for (const r of list) if (r.note) console.log(`    ${r.scenario}: ${r.note}`);
}

/** Settings of every gateway process in the suite, laid over the defaults. */
export function gatewayEnv(redisUrl: string, fhirUrl: string, brokerUrl?: string): Record<string, string> {
  return {
    REDIS_URL: redisUrl,
    FHIR_BASE_URL: fhirUrl,
    UNKNOWN_PATIENT_POLICY: 'create',
    UNKNOWN_DEVICE_POLICY: 'accept',
    MLLP_ALLOWED_SENDERS: '*=127.0.0.1',
    // MQTT devices (identified by their topic) name their patient in each reading; assigning each device first is not
    // what is under test.
    DEVICE_PATIENT_BINDING: 'any',
    MAPPINGS_WATCH: 'false',
    // Load from one address and one (anonymous) sender: the per-credential limit is not what is under test.
    RATE_LIMIT_PER_MINUTE: '0',
    LOG_LEVEL: 'info',
    // A killed worker's jobs are taken over within seconds instead of the default 30 s lock.
    QUEUE_LOCK_DURATION_MS: '5000',
    QUEUE_STALLED_INTERVAL_MS: '1000',
    // Enough attempts to outlast the 60 s outage; backoff capped at 5 s so the queue drains soon after the EHR is back.
    DELIVERY_ATTEMPTS: '30',
    RETRY_BASE_DELAY_MS: '500',
    RETRY_MAX_DELAY_MS: '5000',
    FHIR_TIMEOUT_MS: '3000',
    SHUTDOWN_TIMEOUT_MS: '5000',
    // The EHR circuit breaker probes every 5 s at most (default: backing off to 60 s), so the queue drains soon after the
    // outage ends.
    BREAKER_PROBE_MAX_INTERVAL_MS: '5000',
    SANDBOX_PERSIST: 'false',
    ...(brokerUrl
      ? {
          MQTT_URL: brokerUrl,
          MQTT_TOPICS: 'faults/+/measurements=measurements',
          MQTT_CLIENT_ID: 'gw-faults',
          MQTT_RECONNECT_MIN_MS: '100',
          MQTT_RECONNECT_MAX_MS: '1000',
        }
      : {}),
  };
}

export interface Ctx {
  redis: FaultRedis;
  sink: Sink;
  broker?: TestBroker;
  ledger: Ledger;
  gateways: FaultGateway[];
  /** The gateway that takes ingest (role all or ingest). */
  ingest: FaultGateway;
  /** The gateway that delivers (role all or worker). */
  worker: FaultGateway;
  /** Starts load on the channels named, against the ingest gateway. */
  load(channels: Channel[], opts?: { rate?: number; backlog?: number }): Promise<Load[]>;
  /** Waits until `n` more readings are acknowledged (or the deadline passes). */
  acked(n: number, timeoutMs?: number): Promise<void>;
  note(text: string): void;
}

export interface ScenarioOptions {
  roles: Role[];
  fsync?: 'always' | 'everysec';
  mqtt?: boolean;
  /** How long to wait for the queue to drain once the load has stopped. */
  drainMs?: number;
  /** Settings laid over the suite's. */
  env?: Record<string, string>;
  /** Headers of the HTTP load (a credential when ADMIN_API_KEY is set). */
  httpHeaders?: Record<string, string>;
}

async function queueCounts(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ open: number; failed: number; deadLetters: number } | undefined> {
  try {
    const r = await fetch(`${url}/api/status`, { headers, signal: AbortSignal.timeout(5000) });
    if (!r.ok) return undefined;
    const s = (await r.json()) as { queue?: Record<string, number>; deadLetters?: number };
    if (!s.queue) return undefined;
    const q = s.queue;
    return {
      open: (q.waiting ?? 0) + (q.active ?? 0) + (q.delayed ?? 0) + (q.paused ?? 0),
      failed: q.failed ?? 0,
      deadLetters: s.deadLetters ?? 0,
    };
  } catch {
    return undefined;
  }
}

/**
 * Runs one scenario: sets up, hands over to `act` (which starts load and does the damage), stops the load, waits for
 * the queue to drain, counts and asserts 0 lost, 0 duplicated, no crash.
 */
export async function runScenario(name: string, opts: ScenarioOptions, act: (ctx: Ctx) => Promise<void>): Promise<Row> {
  const ledger = new Ledger();
  const redis = await startFaultRedis(opts.fsync ?? 'everysec');
  const sink = await startSink();
  sink.onCreated = (key) => ledger.delivered(key);
  let broker: TestBroker | undefined;
  if (opts.mqtt) {
    const bin = mosquittoBinary();
    if (!bin) throw new Error('mosquitto is not installed (apt-get install mosquitto, or set MOSQUITTO_BIN)');
    broker = await startMosquitto(bin);
  }
  const env = { ...gatewayEnv(redis.url, sink.url, broker?.url), ...opts.env };
  const gateways: FaultGateway[] = [];
  const loads: Load[] = [];
  const notes: string[] = [];
  let health: { stop(): Promise<HealthFigures[]> } | undefined;
  let gateOpen = false;
  try {
    const t0 = Date.now();
    for (const role of opts.roles) gateways.push(await gatewayProcess(role, env));
    await Promise.all(gateways.map((g) => g.start()));
    health = pollHealth(gateways.map((g) => g.url));
    const ingest = gateways.find((g) => g.role !== 'worker')!;
    const worker = gateways.find((g) => g.role !== 'ingest')!;
    const ctx: Ctx = {
      redis,
      sink,
      broker,
      ledger,
      gateways,
      ingest,
      worker,
      async load(channels, o = {}) {
        const started: Load[] = [];
        // Back-pressure: a channel sends no new reading while more than its backlog of acknowledged ones wait for
        // the EHR, so that the queue drains in seconds on a slow machine too (an outage sets a larger backlog).
        const gate = (c: Channel) => async () => {
          const max = o.backlog ?? BACKLOG[c];
          while (ledger.outstanding(c) > max && !gateOpen) await sleep(20);
        };
        for (const c of channels) {
          if (c === 'http')
            started.push(httpLoad(ledger, () => ingest.url, { concurrency: 4, rate: o.rate, gate: gate(c), headers: opts.httpHeaders }));
          if (c === 'mllp') started.push(mllpLoad(ledger, () => ingest.mllpPort!, { concurrency: 2, rate: o.rate, gate: gate(c) }));
          if (c === 'mqtt') started.push(await mqttLoad(ledger, broker!.url, { concurrency: 8, rate: o.rate, gate: gate(c) }));
        }
        loads.push(...started);
        return started;
      },
      async acked(n, timeoutMs = 30000) {
        const target = ledger.ackedCount + n;
        const deadline = Date.now() + timeoutMs;
        while (ledger.ackedCount < target && Date.now() < deadline) await sleep(50);
      },
      note: (t) => void notes.push(t),
    };
    const tLoad = Date.now();
    await act(ctx);
    gateOpen = true;
    await Promise.all(loads.splice(0).map((l) => l.stop()));

    const tStopped = Date.now();
    // Drain: every acknowledged reading in the EHR and nothing left in the queue, twice in a row.
    const acked = ledger.acked();
    const deadline = Date.now() + (opts.drainMs ?? 60000);
    let settled = 0;
    let counts: Awaited<ReturnType<typeof queueCounts>>;
    while (Date.now() < deadline && settled < 2) {
      const created = sink.createdByKey();
      counts = await queueCounts(worker.url, opts.httpHeaders);
      settled = acked.every((r) => created.has(r.key)) && counts?.open === 0 ? settled + 1 : 0;
      await sleep(500);
    }
    const tDrained = Date.now();
    const crashed = gateways.filter((g) => !g.alive());
    const figures = (await health.stop()) ?? [];
    health = undefined;

    const created = sink.createdByKey();
    const stored = sink.storedByKey();
    const lostKeys = acked.filter((r) => !created.has(r.key)).map((r) => r.key);
    const dupKeys = [...created].filter(([, n]) => n > 1).map(([k]) => k);
    const dupIds = [...sink.createdByIdentifier()].filter(([, n]) => n > 1).map(([k]) => k);
    const storedDup = [...stored].filter(([, n]) => n > 1).map(([k]) => k);
    if (lostKeys.length) {
      // What the EHR and the journal know of the first few (a journal that missed a write would show here).
      const detail = lostKeys
        .slice(0, 5)
        .map((k) => `${k}: stored ${stored.get(k) ?? 0}, journalled ${sink.journal.filter((w) => w.key === k).length}`);
      const raw = await fetch(`${worker.url}/api/status`, { headers: opts.httpHeaders })
        .then((r) => r.json() as Promise<{ queue?: unknown }>)
        .catch(() => undefined);
      const warnings = gateways.flatMap((g) =>
        g
          .output()
          .split('\n')
          .filter((l) => /"level":(40|50|60)/.test(l))
          .slice(-5),
      );
      notes.push(`lost: ${detail.join('; ')}; queue ${JSON.stringify(raw?.queue)}; last warnings:\n${warnings.join('\n')}`);
    }
    const row: Row = {
      scenario: name,
      acknowledged: acked.length,
      delivered: acked.length - lostKeys.length,
      lost: lostKeys.length,
      duplicated: new Set([...dupKeys, ...storedDup]).size,
      worstHealthzMs: Math.max(0, ...figures.map((f) => f.worstMs)),
      unanswered: figures.reduce((a, f) => a + f.unanswered, 0),
      note: [
        `HTTP ${ledger.stats.http.acked}, MLLP ${ledger.stats.mllp.acked}, MQTT ${ledger.stats.mqtt.acked} acknowledged`,
        `${ledger.stats.http.resends + ledger.stats.mllp.resends + ledger.stats.mqtt.resends} resends`,
        `${sink.journal.length} Observation writes journalled`,
        `start ${((tLoad - t0) / 1000).toFixed(1)} s, load ${((tStopped - tLoad) / 1000).toFixed(1)} s, drain ${((tDrained - tStopped) / 1000).toFixed(1)} s`,
        counts ? `dead letters ${counts.deadLetters}` : 'queue state unknown',
        ...notes,
      ].join('; '),
    };
    rows.push(row);
    printTable(name, [row]);

    const refusals = (['http', 'mllp', 'mqtt'] as const).flatMap((c) => ledger.stats[c].refusals.map((r) => `${c}: ${r}`));
    assert.equal(crashed.length, 0, `a gateway process died: ${crashed.map((g) => `${g.role}\n${g.output().slice(-3000)}`).join('\n')}`);
    assert.ok(acked.length > 0, 'nothing was acknowledged: the scenario tested nothing');
    assert.deepEqual(refusals, [], 'valid readings were refused');
    assert.deepEqual(lostKeys.slice(0, 20), [], `${lostKeys.length} acknowledged readings were not delivered`);
    assert.deepEqual(dupKeys.slice(0, 20), [], `${dupKeys.length} readings were created more than once`);
    assert.deepEqual(dupIds.slice(0, 20), [], `${dupIds.length} Observation identifiers were created more than once`);
    assert.deepEqual(storedDup.slice(0, 20), [], `${storedDup.length} readings are stored more than once`);
    return row;
  } finally {
    gateOpen = true;
    await Promise.all(loads.map((l) => l.stop()));
    await health?.stop().catch(() => undefined);
    await Promise.all(gateways.map((g) => g.kill('SIGKILL')));
    await broker?.stop();
    await sink.stop();
    await redis.stop();
  }
}
