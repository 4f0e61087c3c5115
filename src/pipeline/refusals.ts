/**
 * The one refusal store: input that a channel refused for good (not retryable: unknown adapter, untranslatable,
 * invalid, an unacceptable HL7 header, a device that may not send), kept with its reason so that an integration team
 * can inspect it and replay it through its original channel once the cause is fixed. Every channel writes here; a
 * retryable refusal (503, 429, an internal error) is never kept: the sender resends it.
 *
 * Redis layout: gw:refusals (sorted set, score = time received) and gw:refusals:e:<id> (JSON), capped at REFUSALS_MAX
 * entries, oldest dropped first. Entries hold raw payloads (PHI): the routes sit behind the operator role, deletion
 * behind admin.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { OperationOutcome } from 'fhir/r4';
import type { Principal } from '../core/contract.js';
import { GatewayError, issue, notFound, outcome } from '../core/errors.js';
import { KEYS } from '../core/keys.js';
import { type Metrics, refusalLabels } from '../observability/metrics.js';

/** How the payload is held: a parsed JSON body (HTTP), or the text as received (HL7v2, MQTT). */
export const REFUSAL_FORMATS = ['json', 'hl7v2', 'text'] as const;
export type RefusalFormat = (typeof REFUSAL_FORMATS)[number];

/** One HL7 ERR segment's content, as the sender got it. */
export interface Hl7ErrDetail {
  /** HL7 table 0357 error code (ERR-3). */
  code: number;
  text: string;
  location?: { segment: string; sequence?: number; field?: number; component?: number };
  severity?: string;
}

export interface RefusalSummary {
  id: string;
  /** The channel it arrived on: http, mllp, mqtt. */
  channel: string;
  format: RefusalFormat;
  adapterId?: string;
  receivedAt: string;
  /** The HTTP status of the refusal (what an HTTP sender got; the equivalent for the other channels). */
  status: number;
  /** One line: why it was refused. */
  reason: string;
  outcome: OperationOutcome;
  /** Device ids the payload names (when the channel or adapter knew them), for search. */
  deviceIds?: string[];
  /** HL7v2: the header and the ACK the sender got. */
  hl7?: { controlId?: string; messageType?: string; sender?: string; peer?: string; ackCode: string; errors: Hl7ErrDetail[] };
  /** MQTT: the topic it was published on. */
  mqtt?: { topic: string; deviceId?: string };
  attributes?: Record<string, string>;
  /** The authenticated sender: a replay runs with its rights, never more. */
  principal?: Principal;
  replays?: number;
  lastReplayAt?: string;
}

export interface Refusal extends RefusalSummary {
  /** format json: the parsed body. */
  body?: unknown;
  /** format hl7v2 / text: the payload as text (HL7: segments separated by CR). */
  raw?: string;
  /** format text: a payload that is not valid UTF-8, base64. */
  rawBase64?: string;
  /** HL7v2: the character set it arrived in. */
  charset?: string;
}

export type NewRefusal = Omit<Refusal, 'id'>;

/** What a channel answers when a refusal is replayed through it. */
export interface ReplayResult {
  accepted: boolean;
  /** accepted | refused | duplicate | … (channel-specific detail). */
  result: string;
  /** Set when refused again: the new reason and outcome (the entry is updated). */
  refusal?: Pick<RefusalSummary, 'status' | 'reason' | 'outcome'> & Partial<Pick<RefusalSummary, 'hl7'>>;
  /** Channel-specific answer (job ids, ACKs) returned to the operator. */
  detail?: Record<string, unknown>;
}

/** Replays an entry through the channel that refused it. Throws a retryable GatewayError when it cannot run now. */
export type Replayer = (entry: Refusal) => Promise<ReplayResult>;

export interface RefusalFilter {
  channel?: string;
  format?: string;
  adapter?: string;
  deviceId?: string;
  controlId?: string;
  /** Case-insensitive substring of the reason. */
  reason?: string;
  since?: string;
  until?: string;
}

/** How many of the newest entries a filtered search scans (a search over more narrows by time first). */
const SCAN_MAX = 20000;

export class RefusalStore {
  private readonly replayers = new Map<string, Replayer>();

  constructor(
    private readonly redis: Redis,
    private readonly max = 10000,
    private readonly metrics?: Metrics,
  ) {}

  /** Channels register how their refusals are replayed: by format (hl7v2) or by channel name. */
  replayWith(key: string, replayer: Replayer): void {
    this.replayers.set(key, replayer);
  }

  async add(r: NewRefusal): Promise<string> {
    const id = randomUUID();
    const score = Date.parse(r.receivedAt) || Date.now();
    await this.redis
      .multi()
      .set(KEYS.refusal(id), JSON.stringify({ id, ...r }))
      .zadd(KEYS.refusals, score, id)
      .exec();
    this.metrics?.inc('refusals_total', refusalLabels(r));
    const n = await this.redis.zcard(KEYS.refusals);
    if (n > this.max) {
      const old = await this.redis.zrange(KEYS.refusals, 0, n - this.max - 1);
      if (old.length)
        await this.redis
          .multi()
          .del(...old.map(KEYS.refusal))
          .zrem(KEYS.refusals, ...old)
          .exec();
    }
    return id;
  }

  async get(id: string): Promise<Refusal | undefined> {
    const s = await this.redis.get(KEYS.refusal(id));
    return s ? (JSON.parse(s) as Refusal) : undefined;
  }

  async update(entry: Refusal): Promise<void> {
    await this.redis.set(KEYS.refusal(entry.id), JSON.stringify(entry), 'XX');
  }

  async delete(id: string): Promise<boolean> {
    const res = (await this.redis.multi().del(KEYS.refusal(id)).zrem(KEYS.refusals, id).exec()) ?? [];
    return Number(res[0]?.[1] ?? 0) > 0;
  }

  /** Newest first, without payloads. Without a filter, pages over the index; with one, scans the newest SCAN_MAX. */
  async list(filter: RefusalFilter = {}, offset = 0, limit = 100): Promise<{ total: number; items: RefusalSummary[] }> {
    const active = Object.values(filter).some((v) => v !== undefined && v !== '');
    const max = filter.until ? Date.parse(filter.until) : Infinity;
    const min = filter.since ? Date.parse(filter.since) : -Infinity;
    if (!active) {
      const [total, ids] = await Promise.all([
        this.redis.zcard(KEYS.refusals),
        this.redis.zrevrange(KEYS.refusals, offset, offset + limit - 1),
      ]);
      return { total, items: (await this.load(ids)).map(summary) };
    }
    const ids = await this.redis.zrevrangebyscore(
      KEYS.refusals,
      Number.isFinite(max) ? max : '+inf',
      Number.isFinite(min) ? min : '-inf',
      'LIMIT',
      0,
      SCAN_MAX,
    );
    const matched: RefusalSummary[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      for (const e of await this.load(ids.slice(i, i + 500))) if (matches(e, filter)) matched.push(summary(e));
    }
    return { total: matched.length, items: matched.slice(offset, offset + limit) };
  }

  private async load(ids: string[]): Promise<Refusal[]> {
    if (!ids.length) return [];
    const raws = await this.redis.mget(ids.map(KEYS.refusal));
    return raws.filter((r): r is string => !!r).map((r) => JSON.parse(r) as Refusal);
  }

  /**
   * Replays one entry through its channel, with its original sender's identity. Accepted → removed; refused again →
   * kept with the new reason and a replay count. Throws 404 for no such entry, a retryable GatewayError when the
   * channel cannot take it now (the entry stays).
   */
  async replay(id: string): Promise<{ entry: Refusal; result: ReplayResult }> {
    const entry = await this.get(id);
    if (!entry) throw notFound(`no refusal '${id}'`);
    const replayer = this.replayers.get(entry.format === 'hl7v2' ? 'hl7v2' : entry.channel) ?? this.replayers.get(entry.channel);
    if (!replayer) {
      throw new GatewayError(
        409,
        outcome([issue('not-supported', `refusals of channel '${entry.channel}' cannot be replayed by this process (is the channel on?)`)]),
        { retryable: false },
      );
    }
    const result = await replayer(entry);
    if (result.accepted) await this.delete(id);
    else if (result.refusal) {
      await this.update({ ...entry, ...result.refusal, replays: (entry.replays ?? 0) + 1, lastReplayAt: new Date().toISOString() });
    }
    return { entry, result };
  }
}

function summary(e: Refusal): RefusalSummary {
  const { body: _b, raw: _r, rawBase64: _b64, charset: _c, ...rest } = e;
  return rest;
}

function matches(e: Refusal, f: RefusalFilter): boolean {
  if (f.channel && e.channel !== f.channel) return false;
  if (f.format && e.format !== f.format) return false;
  if (f.adapter && e.adapterId !== f.adapter) return false;
  if (f.deviceId && !(e.deviceIds ?? []).includes(f.deviceId) && e.mqtt?.deviceId !== f.deviceId) return false;
  if (f.controlId && e.hl7?.controlId !== f.controlId) return false;
  if (f.reason && !e.reason.toLowerCase().includes(f.reason.toLowerCase())) return false;
  return true;
}

/** Device ids a JSON body names at its top level or in an array of readings (deviceId / device_id), for search. */
export function deviceIdsOf(body: unknown): string[] | undefined {
  const ids = new Set<string>();
  const take = (o: unknown) => {
    if (!o || typeof o !== 'object') return;
    for (const k of ['deviceId', 'device_id', 'deviceID']) {
      const v = (o as Record<string, unknown>)[k];
      if (typeof v === 'string' && v.length <= 256) ids.add(v);
    }
  };
  if (Array.isArray(body)) body.slice(0, 1000).forEach(take);
  else take(body);
  return ids.size ? [...ids] : undefined;
}
