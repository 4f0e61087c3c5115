/**
 * The one refusal store: input that a channel refused for good (not retryable: unknown adapter, untranslatable,
 * invalid, an unacceptable HL7 header, a device that may not send), kept with its reason so that an integration team
 * can inspect it and replay it through its original channel once the cause is fixed. Every channel writes here; a
 * retryable refusal (503, 429, an internal error) is never kept: the sender resends it.
 *
 * Redis layout: gw:refusals (sorted set, score = time received), gw:refusals:e:<id> (JSON), gw:refusals:sizes (hash:
 * id → bytes of the entry) and gw:refusals:bytes (their total). Bounded twice, oldest dropped first: at most
 * REFUSALS_MAX entries and at most REFUSALS_MAX_BYTES bytes in all. A payload larger than REFUSALS_MAX_PAYLOAD_BYTES
 * is kept as its head, with its size and SHA-256 (`payloadInfo`): enough to inspect it and to recognise it, not to
 * replay it (a replay of a truncated payload is refused: it is incomplete). Entries hold raw payloads (PHI): the
 * routes sit behind the operator role, deletion behind admin. On a Redis Cluster the keys are under the hash tag
 * `{gw:refusals}` (core/keys.ts): the scripts below touch the index, the sizes, the total and entries together.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { RedisClient } from '../queue/connection.js';
import type { OperationOutcome } from 'fhir/r4';
import type { Principal } from '../core/contract.js';
import { GatewayError, issue, notFound, outcome } from '../core/errors.js';
import { keyGroup, refusalKeys } from '../core/keys.js';
import { withTimeout } from '../queue/queue.js';
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
  /** The payload as received: its size, SHA-256, and whether only its head is kept. */
  payloadInfo?: PayloadInfo;
}

/**
 * Size and hash of a refused payload, of the bytes the store was given: the text in UTF-8 (HL7v2 after decoding, MQTT),
 * the base64-decoded bytes, or the JSON body as serialised. A channel that cut the payload itself (an MLLP frame over
 * MLLP_MAX_FRAME_BYTES) passes the size and hash of the whole.
 */
export interface PayloadInfo {
  bytes: number;
  sha256: string;
  /** True when only the head (`keptBytes` bytes) is kept. */
  truncated: boolean;
  keptBytes: number;
}

export interface RefusalLimits {
  /** REFUSALS_MAX: entries kept. */
  maxEntries: number;
  /** REFUSALS_MAX_PAYLOAD_BYTES: a larger payload is kept as its head. */
  maxPayloadBytes: number;
  /** REFUSALS_MAX_BYTES: bytes of every entry in all (payloads and metadata). */
  maxBytes: number;
}

export const DEFAULT_REFUSAL_LIMITS: Readonly<RefusalLimits> = {
  maxEntries: 10000,
  maxPayloadBytes: 65536,
  maxBytes: 104857600,
};

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

/**
 * Adds one entry and drops the oldest while the store holds more than its entries or its bytes (one script: the
 * budget holds with several gateways writing at once).
 * KEYS: index, sizes, total. ARGV: id, score, json, maxEntries, maxBytes, entry key prefix.
 */
const ADD_SCRIPT = `
local size = string.len(ARGV[3])
redis.call('SET', ARGV[6] .. ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], size)
local total = redis.call('INCRBY', KEYS[3], size)
local n = redis.call('ZCARD', KEYS[1])
local evicted = 0
while n > 0 and (n > tonumber(ARGV[4]) or total > tonumber(ARGV[5])) do
  local old = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  local s = tonumber(redis.call('HGET', KEYS[2], old) or '0')
  redis.call('DEL', ARGV[6] .. old)
  redis.call('ZREM', KEYS[1], old)
  redis.call('HDEL', KEYS[2], old)
  total = redis.call('DECRBY', KEYS[3], s)
  n = n - 1
  evicted = evicted + 1
end
return evicted
`;

/** Replaces or removes one entry, keeping the total. KEYS: sizes, total. ARGV: entry key, id, json ('' = delete). */
const SET_SCRIPT = `
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
if ARGV[3] == '' then
  local n = redis.call('DEL', ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('DECRBY', KEYS[2], old)
  return n
end
if redis.call('SET', ARGV[1], ARGV[3], 'XX') then
  local size = string.len(ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[2], size)
  redis.call('INCRBY', KEYS[2], size - old)
  return 1
end
return 0
`;

/** The first `max` bytes of a UTF-8 string, cut at a character boundary. */
function utf8Head(bytes: Buffer, max: number): string {
  let cut = Math.min(max, bytes.length);
  while (cut > 0 && cut < bytes.length && (bytes[cut] & 0xc0) === 0x80) cut--;
  return bytes.subarray(0, cut).toString('utf8');
}

/** The entry as stored: the payload cut to `maxPayloadBytes` when larger, its size and hash recorded. */
export function capPayload(r: NewRefusal, maxPayloadBytes: number): NewRefusal {
  const out: NewRefusal = { ...r };
  let bytes: Buffer;
  if (r.rawBase64 !== undefined) bytes = Buffer.from(r.rawBase64, 'base64');
  else if (r.raw !== undefined) bytes = Buffer.from(r.raw, 'utf8');
  else if (r.body !== undefined) bytes = Buffer.from(JSON.stringify(r.body) ?? '', 'utf8');
  else return out;
  const given = r.payloadInfo;
  const info: PayloadInfo = {
    bytes: given?.bytes ?? bytes.length,
    sha256: given?.sha256 ?? createHash('sha256').update(bytes).digest('hex'),
    truncated: !!given?.truncated,
    keptBytes: bytes.length,
  };
  if (bytes.length > maxPayloadBytes) {
    info.truncated = true;
    if (r.rawBase64 !== undefined) {
      out.rawBase64 = bytes.subarray(0, maxPayloadBytes).toString('base64');
      info.keptBytes = maxPayloadBytes;
    } else {
      // A JSON body too large to keep whole is kept as the head of its JSON text.
      delete out.body;
      out.raw = utf8Head(bytes, maxPayloadBytes);
      info.keptBytes = Buffer.byteLength(out.raw, 'utf8');
    }
  }
  out.payloadInfo = info;
  return out;
}

export class RefusalStore {
  private readonly replayers = new Map<string, Replayer>();
  readonly limits: RefusalLimits;
  /** The store's keys: `gw:refusals…`, or `{gw:refusals}…` on a cluster (one script touches all of them). */
  private readonly k: ReturnType<typeof refusalKeys>;

  /**
   * `limits`: REFUSALS_MAX as a number (the other limits at their defaults), or the limits. `answerWithinMs`
   * (ENQUEUE_TIMEOUT_MS): how long a replay waits on Redis, as the channels wait for a sender (unset: no bound).
   */
  constructor(
    private readonly redis: RedisClient,
    limits: number | Partial<RefusalLimits> = {},
    private readonly metrics?: Metrics,
    readonly answerWithinMs?: number,
  ) {
    this.limits = { ...DEFAULT_REFUSAL_LIMITS, ...(typeof limits === 'number' ? { maxEntries: limits } : limits) };
    this.k = refusalKeys(keyGroup('gw:refusals', redis));
  }

  /** Channels register how their refusals are replayed: by format (hl7v2) or by channel name. */
  replayWith(key: string, replayer: Replayer): void {
    this.replayers.set(key, replayer);
  }

  /** Keeps one refusal (its payload capped, see `capPayload`); drops the oldest entries beyond the limits. */
  async add(r: NewRefusal): Promise<string> {
    const id = randomUUID();
    const score = Date.parse(r.receivedAt) || Date.now();
    const json = JSON.stringify({ id, ...capPayload(r, this.limits.maxPayloadBytes) });
    await this.redis.eval(
      ADD_SCRIPT,
      3,
      this.k.refusals,
      this.k.refusalSizes,
      this.k.refusalBytes,
      id,
      score,
      json,
      this.limits.maxEntries,
      this.limits.maxBytes,
      this.k.refusal(''),
    );
    this.metrics?.inc('refusals_total', refusalLabels(r));
    return id;
  }

  /** Entries and bytes held (the bytes counted against REFUSALS_MAX_BYTES). */
  async usage(): Promise<{ entries: number; bytes: number }> {
    const [entries, bytes] = await Promise.all([this.redis.zcard(this.k.refusals), this.redis.get(this.k.refusalBytes)]);
    return { entries, bytes: Number(bytes ?? 0) };
  }

  /**
   * Brings the byte count up to date with entries written by an earlier version (which kept no sizes), then applies
   * the limits. Run at start-up; cheap when there is nothing to do.
   */
  async reconcile(): Promise<void> {
    const [entries, sized] = await Promise.all([this.redis.zcard(this.k.refusals), this.redis.hlen(this.k.refusalSizes)]);
    if (entries === sized) return;
    const ids = await this.redis.zrange(this.k.refusals, 0, -1);
    const known = new Set(await this.redis.hkeys(this.k.refusalSizes));
    const missing = ids.filter((id) => !known.has(id));
    for (let i = 0; i < missing.length; i += 500) {
      const chunk = missing.slice(i, i + 500);
      const lens = await Promise.all(chunk.map((id) => this.redis.strlen(this.k.refusal(id))));
      const m = this.redis.multi();
      chunk.forEach((id, k) => m.hset(this.k.refusalSizes, id, lens[k]).incrby(this.k.refusalBytes, lens[k]));
      await m.exec();
    }
    let { entries: n, bytes } = await this.usage();
    while (n > 0 && (n > this.limits.maxEntries || bytes > this.limits.maxBytes)) {
      const [old] = await this.redis.zrange(this.k.refusals, 0, 0);
      await this.delete(old);
      ({ entries: n, bytes } = await this.usage());
    }
  }

  async get(id: string): Promise<Refusal | undefined> {
    const s = await this.redis.get(this.k.refusal(id));
    return s ? (JSON.parse(s) as Refusal) : undefined;
  }

  async update(entry: Refusal): Promise<void> {
    await this.redis.eval(
      SET_SCRIPT,
      2,
      this.k.refusalSizes,
      this.k.refusalBytes,
      this.k.refusal(entry.id),
      entry.id,
      JSON.stringify(entry),
    );
  }

  async delete(id: string): Promise<boolean> {
    const n = await this.redis.eval(SET_SCRIPT, 2, this.k.refusalSizes, this.k.refusalBytes, this.k.refusal(id), id, '');
    await this.redis.zrem(this.k.refusals, id);
    return Number(n) > 0;
  }

  /** Newest first, without payloads. Without a filter, pages over the index; with one, scans the newest SCAN_MAX. */
  async list(filter: RefusalFilter = {}, offset = 0, limit = 100): Promise<{ total: number; items: RefusalSummary[] }> {
    const active = Object.values(filter).some((v) => v !== undefined && v !== '');
    const max = filter.until ? Date.parse(filter.until) : Infinity;
    const min = filter.since ? Date.parse(filter.since) : -Infinity;
    if (!active) {
      const [total, ids] = await Promise.all([
        this.redis.zcard(this.k.refusals),
        this.redis.zrevrange(this.k.refusals, offset, offset + limit - 1),
      ]);
      return { total, items: (await this.load(ids)).map(summary) };
    }
    const ids = await this.redis.zrevrangebyscore(
      this.k.refusals,
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
    const raws = await this.redis.mget(ids.map(this.k.refusal));
    return raws.filter((r): r is string => !!r).map((r) => JSON.parse(r) as Refusal);
  }

  /**
   * Replays one entry through its channel, with its original sender's identity. Accepted → removed; refused again →
   * kept with the new reason and a replay count. Throws 404 for no such entry, a retryable GatewayError when the
   * channel cannot take it now (the entry stays).
   *
   * Bounded by `answerWithinMs`, as a channel's answer to a sender is: reading the entry and replaying it (the whole
   * ingest: the device guard's reads and writes, the enqueue) each end with a retryable 503 past the bound, the entry
   * kept. A replay whose ingest ends after its 503 has queued the message: replayed again, it is recognised (content
   * job ids) or written once by the EHR's conditional writes. Removing or updating the entry afterwards is waited for
   * up to the bound, and not past it: the answer (queued, or refused again) is already true, and the command stays
   * with the Redis client until Redis answers.
   */
  async replay(id: string): Promise<{ entry: Refusal; result: ReplayResult }> {
    const ms = this.answerWithinMs;
    const keptAdvice = 'the entry is kept: replay it again later';
    const entry = await withTimeout(this.get(id), ms, 'the refusal store (Redis) did not answer', keptAdvice);
    if (!entry) throw notFound(`no refusal '${id}'`);
    const info = entry.payloadInfo;
    if (info?.truncated) {
      throw new GatewayError(
        422,
        outcome([
          issue(
            'incomplete',
            `the payload was kept truncated (${info.keptBytes} of ${info.bytes} bytes, SHA-256 ${info.sha256}; REFUSALS_MAX_PAYLOAD_BYTES or MLLP_MAX_FRAME_BYTES) and cannot be replayed: the sender must send it again`,
          ),
        ]),
        { retryable: false },
      );
    }
    const replayer = this.replayers.get(entry.format === 'hl7v2' ? 'hl7v2' : entry.channel) ?? this.replayers.get(entry.channel);
    if (!replayer) {
      throw new GatewayError(
        409,
        outcome([issue('not-supported', `refusals of channel '${entry.channel}' cannot be replayed by this process (is the channel on?)`)]),
        { retryable: false },
      );
    }
    const result = await withTimeout(replayer(entry), ms, 'the replayed message could not be queued', keptAdvice);
    const settling: Promise<unknown> | undefined = result.accepted
      ? this.delete(id)
      : result.refusal
        ? this.update({ ...entry, ...result.refusal, replays: (entry.replays ?? 0) + 1, lastReplayAt: new Date().toISOString() })
        : undefined;
    if (settling) await withTimeout(settling, ms, 'the refusal store (Redis) did not answer').catch(() => undefined);
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
