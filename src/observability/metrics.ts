/**
 * The process's metrics, exposed in the Prometheus text format (0.0.4) at /metrics.
 *
 * Kept by hand rather than with prom-client: the gateway needs counters, gauges read at scrape time and two
 * histograms, per Gateway instance (tests run several in one process, so prom-client's global default registry would
 * mix them), and the text format is small and stable. What prom-client would enforce is enforced here: every metric
 * is declared in METRICS with its type, help text and label names (so every family has HELP and TYPE), names follow
 * Prometheus conventions (prefix `iomt_`, base units, `_total` counters, `_seconds` histograms), and label values are
 * escaped as the format requires.
 *
 * Labels never carry PHI or identifiers of devices or patients: adapter, channel, destination, outcome, reason class,
 * state at most, each a small bounded set. test/observability/metrics.test.ts scrapes a gateway after traffic with
 * known ids and checks that no label value contains them.
 */
export type Labels = Record<string, string>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricDef {
  type: MetricType;
  help: string;
  /** The label names, for the documentation and the tests (a series may leave some out). */
  labels?: readonly string[];
  /** Histograms: upper bounds in seconds, increasing (+Inf is added). */
  buckets?: readonly number[];
}

export const METRIC_PREFIX = 'iomt_';

/** EHR requests: from a few milliseconds (a sandbox) to the longest FHIR_TIMEOUT_MS one would configure. */
export const EHR_REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;
/** Ingest to EHR: sub-second when all is well, minutes to an hour while the EHR is down and readings wait. */
export const INGEST_TO_EHR_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600] as const;

/** Every metric the gateway exports, without the prefix. */
export const METRICS = {
  // Ingest
  ingest_accepted_total: {
    type: 'counter',
    help: 'Delivery jobs queued by ingest (a message becomes one or more jobs).',
    labels: ['adapter', 'channel'],
  },
  ingest_readings_total: {
    type: 'counter',
    help: 'Readings accepted and queued for delivery (the acknowledged input, in readings).',
    labels: ['adapter', 'channel'],
  },
  ingest_observations_total: { type: 'counter', help: 'Observations in the accepted readings.', labels: ['adapter', 'channel'] },
  ingest_refused_total: {
    type: 'counter',
    help: 'Messages the pipeline refused (untranslatable, invalid, a device that may not send); adapter "unknown" when not registered.',
    labels: ['adapter', 'channel'],
  },
  refusals_total: {
    type: 'counter',
    help: 'Refused input kept for inspection and replay (every channel), by reason class (the FHIR issue type of the refusal).',
    labels: ['channel', 'reason'],
  },
  hl7_messages_total: { type: 'counter', help: 'HL7v2 messages received, by result.', labels: ['channel', 'result'] },
  hl7_acks_total: { type: 'counter', help: 'HL7v2 acknowledgements sent, by acknowledgement code.', labels: ['channel', 'code'] },
  mllp_connections: { type: 'gauge', help: 'Open MLLP connections.' },
  mqtt_connected: { type: 'gauge', help: '1 while the MQTT client is connected to its broker.' },
  mqtt_reconnects_total: { type: 'counter', help: 'MQTT reconnections.' },
  mqtt_messages_total: { type: 'counter', help: 'MQTT messages received, by result.', labels: ['result', 'adapter'] },

  // Queue
  queue_waiting: { type: 'gauge', help: 'Jobs waiting in the delivery queue (read from Redis at scrape time).' },
  queue_jobs: {
    type: 'gauge',
    help: "Jobs in each destination's delivery queue by state (waiting, active, delayed: waiting for a retry, failed), read from Redis at scrape time.",
    labels: ['destination', 'state'],
  },
  queue_oldest_waiting_age_seconds: {
    type: 'gauge',
    help: "Age of the job next in line in each destination's waiting list (0 when none waits), read from Redis at scrape time.",
    labels: ['destination'],
  },
  dead_letters: { type: 'gauge', help: 'Dead letters kept (read from Redis at scrape time).' },

  // Delivery
  subscriber_events_dropped_total: {
    type: 'counter',
    help: "Subscriber events not queued because the subscriber's queue held QUEUE_MAX_DEPTH jobs (their event numbers are skipped).",
    labels: ['destination'],
  },
  delivery_thread_up: {
    type: 'gauge',
    help: 'Role all with DELIVERY_THREAD: 1 while the delivery thread runs, 0 while it is being started again.',
  },
  delivery_thread_restarts_total: {
    type: 'counter',
    help: 'Times the delivery thread of role all (DELIVERY_THREAD) died and was started again.',
  },
  delivery_jobs_total: {
    type: 'counter',
    help: 'Delivery attempts by outcome: delivered, retry, dead-letter, breaker-wait, deferred.',
    labels: ['outcome'],
  },
  delivery_readings_total: {
    type: 'counter',
    help: 'Readings delivered to a destination (written or found already written).',
    labels: ['adapter', 'channel', 'destination'],
  },
  delivery_observations_total: { type: 'counter', help: 'Observations delivered.' },
  delivery_transactions_total: { type: 'counter', help: 'FHIR transactions the EHR accepted.' },
  delivery_transaction_readings_total: { type: 'counter', help: 'Readings in the FHIR transactions the EHR accepted.' },
  delivery_dead_letters_total: {
    type: 'counter',
    help: 'Dead letters written (whole jobs and single readings), by kind.',
    labels: ['kind', 'adapter', 'channel'],
  },
  ingest_to_ehr_latency_seconds: {
    type: 'histogram',
    help: 'From the reception of a reading (before its sender was acknowledged) to the EHR accepting it; replays are left out.',
    labels: ['destination'],
    buckets: INGEST_TO_EHR_BUCKETS,
  },
  ehr_request_duration_seconds: {
    type: 'histogram',
    help: 'EHR requests (transactions, searches, reads) from sending to the answer, by outcome: success, client-error, throttled, server-error, timeout, unreachable.',
    labels: ['destination', 'outcome'],
    buckets: EHR_REQUEST_BUCKETS,
  },
  destination_breaker_state: {
    type: 'gauge',
    help: 'Circuit breaker state of a destination: 1 for the current state, 0 for the others.',
    labels: ['destination', 'state'],
  },
  destination_breaker_waiting_jobs: {
    type: 'gauge',
    help: 'Jobs of this process waiting for the destination breaker to let them send.',
    labels: ['destination'],
  },
  destination_breaker_opened_total: { type: 'counter', help: 'Times the destination breaker opened.', labels: ['destination'] },
  destination_breaker_probes_total: {
    type: 'counter',
    help: 'Probes sent while the breaker was half-open, by outcome.',
    labels: ['destination', 'outcome'],
  },
  destination_breaker_refused_total: {
    type: 'counter',
    help: 'EHR requests not sent because the breaker was open.',
    labels: ['destination'],
  },

  // Devices
  devices: { type: 'gauge', help: 'Registered devices by lifecycle state (counted by the offline check).', labels: ['state'] },
  devices_connectivity: {
    type: 'gauge',
    help: 'Active devices by connectivity: online, or offline (silent for longer than their offline threshold).',
    labels: ['connectivity'],
  },
  devices_offline: { type: 'gauge', help: 'Active devices silent for longer than their offline threshold.' },
  devices_auto_registered_total: {
    type: 'counter',
    help: 'Devices registered on their first reading, by policy.',
    labels: ['policy'],
  },
  device_transitions_total: { type: 'counter', help: 'Device lifecycle transitions, by target state.', labels: ['to'] },
  device_fhir_invalid_total: { type: 'counter', help: 'Device resources that failed FHIR validation.' },
  device_held_readings_total: {
    type: 'counter',
    help: 'Readings held because their device is not active yet.',
    labels: ['channel'],
  },
  device_held_released_total: { type: 'counter', help: 'Held readings released to the queue.' },
  device_data_refused_total: {
    type: 'counter',
    help: 'Messages refused because of the state of their device.',
    labels: ['channel'],
  },
  device_webhook_total: { type: 'counter', help: 'Device webhook notifications, by outcome.', labels: ['outcome'] },
  device_cache_active: {
    type: 'gauge',
    help: "1 while ingest reads device records from memory kept true by Redis's invalidations, 0 while it reads them from Redis.",
  },
  device_cache_entries: { type: 'gauge', help: 'Device records and identifiers held in memory by ingest.' },
  device_cache_lookups_total: {
    type: 'counter',
    help: 'Device record and identifier lookups of ingest while the cache is active, by result (hit, miss).',
    labels: ['result'],
  },

  // Access and audit
  access_refused_total: { type: 'counter', help: 'Requests refused by access control, by HTTP status.', labels: ['status'] },
  auth_failures_total: { type: 'counter', help: 'Failed authentications (401).' },
  auth_failure_limited_total: { type: 'counter', help: 'Requests refused by the limit on failed authentications (429).' },
  rate_limited_total: { type: 'counter', help: 'Requests refused by the rate limit, by role.', labels: ['role'] },
  credential_scrypt_verifications_total: { type: 'counter', help: 'scrypt key verifications run by this process.' },
  audit_events_total: { type: 'counter', help: 'Audit events stored, by kind and stream.', labels: ['kind', 'stream'] },
  audit_failures_total: { type: 'counter', help: 'Audit events that could not be stored.' },
  audit_forward_failures_total: { type: 'counter', help: 'Audit events that could not be forwarded.' },

  // Mappings
  adapter_registrations_total: { type: 'counter', help: 'Adapters registered or updated through the API.' },
  adapter_registrations_refused_total: { type: 'counter', help: 'Adapter registrations refused.' },

  // The process
  process_resident_memory_bytes: { type: 'gauge', help: 'Resident memory of the gateway process, every thread included, in bytes.' },
  process_heap_used_bytes: {
    type: 'gauge',
    help: "V8 heap in use by the gateway's own thread, in bytes (a delivery thread's heap counts in the resident memory only).",
  },
} as const satisfies Record<string, MetricDef>;

export type MetricName = keyof typeof METRICS;

/** The definition of a metric name; names not declared get a generic one (type from the `_total` suffix). */
export function definitionOf(name: string): MetricDef {
  return (
    (METRICS as Record<string, MetricDef>)[name] ?? {
      type: name.endsWith('_total') ? 'counter' : 'gauge',
      help: `${name} (not described)`,
    }
  );
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatLabels(labels: Labels): string {
  const l = Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${escapeLabel(String(v))}"`)
    .join(',');
  return l ? `{${l}}` : '';
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** `devices{state="active"}` → ['devices', {state: 'active'}] (gauges registered with their labels in the name). */
function splitName(name: string): [string, Labels] {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$/.exec(name);
  if (!m) return [name, {}];
  const labels: Labels = {};
  for (const [, k, v] of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
  return [m[1], labels];
}

interface HistogramSeries {
  labels: Labels;
  counts: number[];
  sum: number;
  count: number;
}

export type Sample = { labels: Labels; value: number };

/** The counters and histograms of a Metrics, as plain data (posted by another thread: Metrics.include). */
export interface MetricsSnapshot {
  counters: Array<[family: string, series: Sample[]]>;
  histograms: Array<[family: string, series: HistogramSeries[]]>;
}

/** `own` with the series of `others` added: the same family and labels summed, the others appended. */
function merged<S extends { labels: Labels }>(
  own: Map<string, Map<string, S>>,
  others: Array<Array<[string, S[]]>>,
  add: (into: S, from: S) => S,
): Map<string, Map<string, S>> {
  if (!others.length) return own;
  const out = new Map([...own].map(([family, series]) => [family, new Map(series)]));
  for (const families of others)
    for (const [family, series] of families) {
      let into = out.get(family);
      if (!into) out.set(family, (into = new Map()));
      for (const s of series) {
        const key = formatLabels(s.labels);
        const mine = into.get(key);
        into.set(key, mine ? add(mine, s) : s);
      }
    }
  return out;
}

/** A name and labels worked out (Metrics.resolve). */
interface Resolved {
  family: string;
  key: string;
  labels: Labels;
}
const RESOLVED_MAX = 10_000;

export class Metrics {
  /** family → series key → sample */
  private readonly counters = new Map<string, Map<string, Sample>>();
  private readonly histograms = new Map<string, Map<string, HistogramSeries>>();
  /** family → readers, each giving one or more series at scrape time */
  private readonly readers = new Map<string, Map<string, () => Promise<Sample[]>>>();

  /**
   * The family, series key and labels of a name and labels, remembered for the next call with the same ones: the
   * counters of every reading would otherwise parse the name and sort and format the labels each time (bounded).
   */
  private readonly resolved = new Map<string, Resolved>();
  /** Other threads' counters and histograms, added to this one's at each scrape (include). */
  private readonly sources: Array<() => Promise<MetricsSnapshot | undefined>> = [];

  private resolve(name: string, labels: Labels): Resolved {
    let sig = name;
    for (const k in labels) sig += `\u0000${k}\u0001${labels[k]}`;
    let r = this.resolved.get(sig);
    if (!r) {
      const [family, inline] = splitName(name);
      const all = { ...inline, ...labels };
      r = { family, key: formatLabels(all), labels: all };
      if (this.resolved.size >= RESOLVED_MAX) this.resolved.clear();
      this.resolved.set(sig, r);
    }
    return r;
  }

  inc(name: string, labels: Labels = {}, by = 1): void {
    const r = this.resolve(name, labels);
    let series = this.counters.get(r.family);
    if (!series) this.counters.set(r.family, (series = new Map()));
    const s = series.get(r.key);
    if (s) s.value += by;
    else series.set(r.key, { labels: r.labels, value: by });
  }

  get(name: string, labels: Labels = {}): number {
    const [family, inline] = splitName(name);
    return this.counters.get(family)?.get(formatLabels({ ...inline, ...labels }))?.value ?? 0;
  }

  /** Records one observation (seconds) in a histogram declared in METRICS with its buckets. */
  observe(name: MetricName, labels: Labels, seconds: number, times = 1): void {
    const buckets = definitionOf(name).buckets ?? [];
    const { key } = this.resolve(name, labels);
    let series = this.histograms.get(name);
    if (!series) this.histograms.set(name, (series = new Map()));
    let s = series.get(key);
    if (!s) series.set(key, (s = { labels, counts: buckets.map(() => 0), sum: 0, count: 0 }));
    const v = Math.max(0, seconds);
    for (let i = 0; i < buckets.length; i++) if (v <= buckets[i]) s.counts[i] += times;
    s.sum += v * times;
    s.count += times;
  }

  /** Starts timing; the returned function records the elapsed seconds with its labels. */
  startTimer(name: MetricName): (labels: Labels) => void {
    const t0 = process.hrtime.bigint();
    return (labels) => this.observe(name, labels, Number(process.hrtime.bigint() - t0) / 1e9);
  }

  /** The histogram's count and sum for a label set (for tests and the status page). */
  histogram(name: MetricName, labels: Labels = {}): { count: number; sum: number } {
    const s = this.histograms.get(name)?.get(formatLabels(labels));
    return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
  }

  /**
   * A value read at scrape time (a gauge, or a counter kept elsewhere). `name` may carry labels:
   * `devices{state="active"}`. A reader that throws is left out of that scrape.
   */
  gauge(name: string, read: () => number | Promise<number>): void {
    const [family, labels] = splitName(name);
    this.reader(family, formatLabels(labels), async () => [{ labels, value: await read() }]);
  }

  /** A gauge with one series per label set (a state set, one series per destination…), read at scrape time. */
  gaugeFamily(name: string, read: () => Sample[] | Promise<Sample[]>): void {
    this.reader(name, '*', async () => read());
  }

  private reader(family: string, key: string, read: () => Promise<Sample[]>): void {
    let r = this.readers.get(family);
    if (!r) this.readers.set(family, (r = new Map()));
    r.set(key, read);
  }

  /** This process's counters and histograms as plain data, for a thread that delivers beside ingest. */
  snapshot(): MetricsSnapshot {
    return {
      counters: [...this.counters].map(([family, series]) => [family, [...series.values()]]),
      histograms: [...this.histograms].map(([family, series]) => [family, [...series.values()]]),
    };
  }

  /**
   * Adds another thread's counters and histograms to what render() writes: series of the same name and labels are
   * summed, so that a scrape sees one process. A source that fails or answers nothing is left out of that scrape.
   */
  include(source: () => Promise<MetricsSnapshot | undefined>): void {
    this.sources.push(source);
  }

  /**
   * The text format: every declared counter and histogram (HELP and TYPE even before a first sample; label-less
   * counters at 0), every gauge registered by this process, and anything counted under an undeclared name.
   */
  async render(): Promise<string> {
    const others = (await Promise.all(this.sources.map((read) => read().catch(() => undefined)))).filter(
      (o): o is MetricsSnapshot => o !== undefined,
    );
    const counters = merged(
      this.counters,
      others.map((o) => o.counters),
      (a, b) => ({ labels: a.labels, value: a.value + b.value }),
    );
    const histograms = merged(
      this.histograms,
      others.map((o) => o.histograms),
      (a, b) => ({
        labels: a.labels,
        counts: a.counts.map((c, i) => c + (b.counts[i] ?? 0)),
        sum: a.sum + b.sum,
        count: a.count + b.count,
      }),
    );
    const families = new Set<string>([...counters.keys(), ...histograms.keys(), ...this.readers.keys()]);
    for (const [name, def] of Object.entries(METRICS) as [string, MetricDef][]) if (def.type !== 'gauge') families.add(name);
    const lines: string[] = [];
    for (const family of [...families].sort()) {
      const def = definitionOf(family);
      const full = METRIC_PREFIX + family;
      const body: string[] = [];
      if (def.type === 'histogram') {
        const bounds = def.buckets ?? [];
        for (const s of histograms.get(family)?.values() ?? []) {
          for (const [i, b] of bounds.entries())
            body.push(`${full}_bucket${formatLabels({ ...s.labels, le: formatValue(b) })} ${s.counts[i]}`);
          body.push(`${full}_bucket${formatLabels({ ...s.labels, le: '+Inf' })} ${s.count}`);
          body.push(`${full}_sum${formatLabels(s.labels)} ${formatValue(s.sum)}`);
          body.push(`${full}_count${formatLabels(s.labels)} ${s.count}`);
        }
      } else {
        const samples: Sample[] = [...(counters.get(family)?.values() ?? [])];
        for (const read of this.readers.get(family)?.values() ?? []) {
          try {
            samples.push(...(await read()));
          } catch {
            /* a value that cannot be read now (Redis down) is left out */
          }
        }
        if (!samples.length && def.type === 'counter' && !def.labels?.length && !this.readers.has(family))
          samples.push({ labels: {}, value: 0 });
        for (const s of samples.sort((a, b) => formatLabels(a.labels).localeCompare(formatLabels(b.labels))))
          body.push(`${full}${formatLabels(s.labels)} ${formatValue(s.value)}`);
      }
      lines.push(`# HELP ${full} ${def.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${full} ${def.type}`, ...body);
    }
    return `${lines.join('\n')}\n`;
  }
}

/**
 * The outcome class of an EHR request, from its error (none: success). Structural, so that this module does not
 * import delivery: `ehrStatus` is the HTTP status the EHR answered with, undefined when it did not answer.
 */
export function ehrRequestOutcome(err?: { ehrStatus?: number; timedOut?: boolean }): string {
  if (!err) return 'success';
  if (err.timedOut) return 'timeout';
  const s = err.ehrStatus;
  if (s === undefined) return 'unreachable';
  if (s === 429) return 'throttled';
  if (s === 408) return 'timeout';
  if (s >= 500) return 'server-error';
  return 'client-error';
}

/** FHIR R4 IssueType codes: the reason classes of refusals (a bounded set). */
const ISSUE_TYPES = new Set([
  'invalid',
  'structure',
  'required',
  'value',
  'invariant',
  'security',
  'login',
  'unknown',
  'expired',
  'forbidden',
  'suppressed',
  'processing',
  'not-supported',
  'duplicate',
  'multiple-matches',
  'not-found',
  'deleted',
  'too-long',
  'code-invalid',
  'extension',
  'too-costly',
  'business-rule',
  'conflict',
  'transient',
  'lock-error',
  'no-store',
  'exception',
  'timeout',
  'incomplete',
  'throttled',
  'informational',
]);

const CHANNELS = new Set(['http', 'mllp', 'mqtt']);

/** The labels of a kept refusal: its channel and a reason class, the issue type of its OperationOutcome's first error. */
export function refusalLabels(r: { channel: string; outcome?: { issue?: Array<{ severity?: string; code?: string }> } }): Labels {
  const issues = r.outcome?.issue ?? [];
  const first = issues.find((i) => i.severity === 'error' || i.severity === 'fatal') ?? issues[0];
  const code = first?.code ?? '';
  return { channel: CHANNELS.has(r.channel) ? r.channel : 'other', reason: ISSUE_TYPES.has(code) ? code : 'other' };
}

/** Records readings delivered to a destination: the count, and their ingest→EHR latency unless they are a replay. */
export function recordDelivered(
  metrics: Metrics,
  job: { adapterId: string; channel: string; receivedAt: string; replayOf?: string },
  readings: number,
  destination = 'ehr',
): void {
  if (readings <= 0) return;
  metrics.inc('delivery_readings_total', { adapter: job.adapterId, channel: job.channel, destination }, readings);
  const received = Date.parse(job.receivedAt);
  if (job.replayOf || Number.isNaN(received)) return;
  metrics.observe('ingest_to_ehr_latency_seconds', { destination }, (Date.now() - received) / 1000, readings);
}
