/**
 * What the overview shows, counted in this process: per channel and adapter, messages received, refused, queued,
 * delivered and dead-lettered, since start and over the last hour (10-second buckets), readings per second,
 * ingest→EHR latency (p50/p99) and queue depth over time, and the EHR's last success and last error.
 *
 * It is fed by the pipeline (IngestObserver: each message queued or refused) and the delivery worker
 * (DeliveryObserver: each job delivered, retried or dead-lettered), and samples the queue depth itself. The counts are
 * this process's: with separate ingest and worker processes, each console shows the part its process runs.
 */
import type { IngestEvent, IngestObserver } from '../pipeline/pipeline.js';
import type { DeliveryEvent, DeliveryObserver } from '../delivery/worker.js';

export const BUCKET_MS = 10_000;
const BUCKETS = 360; // one hour
const LATENCY_SAMPLES = 500;

export const COUNTERS = ['received', 'refused', 'queued', 'delivered', 'deadLettered'] as const;
export type Counter = (typeof COUNTERS)[number];
export type Counts = Record<Counter, number>;
const zero = (): Counts => ({ received: 0, refused: 0, queued: 0, delivered: 0, deadLettered: 0 });

interface Bucket {
  at: number;
  counts: Map<string, Counts>;
  readings: number;
  latencies: number[];
  latencySeen: number;
  depth?: number;
}

export interface StatsRow {
  channel: string;
  adapter: string;
  total: Counts;
  lastHour: Counts;
}

export interface Series {
  /** Bucket start times, oldest first. */
  at: number[];
  readingsPerSecond: number[];
  p50: (number | null)[];
  p99: (number | null)[];
  depth: (number | null)[];
}

const keyOf = (channel: string, adapter: string) => `${channel}\u0000${adapter}`;

function percentile(sorted: number[], p: number): number | null {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export class ConsoleStats implements IngestObserver, DeliveryObserver {
  readonly startedAt = Date.now();
  private readonly totals = new Map<string, Counts>();
  private readonly buckets: Bucket[] = [];
  lastSuccessAt?: number;
  lastError?: { at: number; reason: string };
  private timer?: NodeJS.Timeout;

  constructor(private readonly now: () => number = Date.now) {}

  private bucket(): Bucket {
    const at = Math.floor(this.now() / BUCKET_MS) * BUCKET_MS;
    const last = this.buckets[this.buckets.length - 1];
    if (last?.at === at) return last;
    const b: Bucket = { at, counts: new Map(), readings: 0, latencies: [], latencySeen: 0 };
    this.buckets.push(b);
    while (this.buckets.length && this.buckets[0].at <= at - BUCKETS * BUCKET_MS) this.buckets.shift();
    return b;
  }

  private add(channel: string, adapter: string, counter: Counter, by = 1): void {
    const k = keyOf(channel, adapter);
    const t = this.totals.get(k) ?? zero();
    t[counter] += by;
    this.totals.set(k, t);
    const b = this.bucket();
    const c = b.counts.get(k) ?? zero();
    c[counter] += by;
    b.counts.set(k, c);
  }

  ingested(e: IngestEvent): void {
    this.add(e.channel, e.adapterId, 'received');
    if (e.outcome === 'refused') {
      this.add(e.channel, e.adapterId, 'refused');
      return;
    }
    this.add(e.channel, e.adapterId, 'queued');
    this.bucket().readings += e.readings;
  }

  settled(e: DeliveryEvent): void {
    if (e.outcome === 'retry') {
      this.lastError = { at: this.now(), reason: e.error ?? 'delivery failed; retrying' };
      return;
    }
    if (e.outcome === 'dead-letter') {
      this.add(e.channel, e.adapterId, 'deadLettered');
      this.lastError = { at: this.now(), reason: e.error ?? 'dead-lettered' };
      return;
    }
    this.add(e.channel, e.adapterId, 'delivered');
    if (e.error) this.lastError = { at: this.now(), reason: e.error };
    this.lastSuccessAt = this.now();
    const received = Date.parse(e.receivedAt);
    if (Number.isNaN(received)) return;
    const b = this.bucket();
    const ms = Math.max(0, this.now() - received);
    // Reservoir sampling keeps the percentiles honest under load with bounded memory.
    b.latencySeen++;
    if (b.latencies.length < LATENCY_SAMPLES) b.latencies.push(ms);
    else {
      const j = Math.floor(Math.random() * b.latencySeen);
      if (j < LATENCY_SAMPLES) b.latencies[j] = ms;
    }
  }

  /** Records the queue depth in the current bucket. */
  depth(n: number): void {
    this.bucket().depth = n;
  }

  /** Samples the queue depth every bucket until stop(). */
  sample(read: () => Promise<number>): void {
    if (this.timer) return;
    const tick = () =>
      void read().then(
        (n) => this.depth(n),
        () => undefined,
      );
    tick();
    this.timer = setInterval(tick, BUCKET_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Per channel and adapter, since start and over the last hour; sorted by channel, then adapter. */
  rows(): StatsRow[] {
    const since = this.now() - BUCKETS * BUCKET_MS;
    const out: StatsRow[] = [];
    for (const [k, total] of this.totals) {
      const [channel, adapter] = k.split('\u0000');
      const lastHour = zero();
      for (const b of this.buckets) {
        if (b.at <= since) continue;
        const c = b.counts.get(k);
        if (c) for (const n of COUNTERS) lastHour[n] += c[n];
      }
      out.push({ channel, adapter, total: { ...total }, lastHour });
    }
    return out.sort((a, b) => a.channel.localeCompare(b.channel) || a.adapter.localeCompare(b.adapter));
  }

  /** The last hour, one point per bucket (empty buckets are zero readings and no latency). */
  series(): Series {
    this.bucket();
    const end = this.buckets[this.buckets.length - 1].at;
    const byAt = new Map(this.buckets.map((b) => [b.at, b]));
    const s: Series = { at: [], readingsPerSecond: [], p50: [], p99: [], depth: [] };
    const first = Math.max(end - (BUCKETS - 1) * BUCKET_MS, Math.floor(this.startedAt / BUCKET_MS) * BUCKET_MS);
    for (let at = first; at <= end; at += BUCKET_MS) {
      const b = byAt.get(at);
      const sorted = [...(b?.latencies ?? [])].sort((x, y) => x - y);
      s.at.push(at);
      s.readingsPerSecond.push((b?.readings ?? 0) / (BUCKET_MS / 1000));
      s.p50.push(percentile(sorted, 50));
      s.p99.push(percentile(sorted, 99));
      s.depth.push(b?.depth ?? null);
    }
    return s;
  }
}
