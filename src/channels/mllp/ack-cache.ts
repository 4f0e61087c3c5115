/**
 * Gateway state for HL7v2 in Redis (key prefix gw:hl7:):
 *
 * - Refused messages, kept with the reason so an operator can inspect them and replay them once the cause is fixed:
 *   gw:hl7:rejected (sorted set, score = time) and gw:hl7:rejected:e:<id> (JSON). Capped at HL7_REJECTED_MAX, oldest
 *   dropped first. They hold the raw message (PHI): the /api/rejected routes must sit behind the admin key.
 * - ACKs of accepted messages: gw:hl7:ack:<hash(sender, control id)> → { content hash, ACKs }, with a TTL, so a resend
 *   after a lost ACK (same sender, same control id, same content) is answered again without queueing twice. A reused
 *   control id with different content is not a resend and is processed normally.
 */
import type { Principal } from '../../core/contract.js';
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { AckError } from '../../hl7v2/ack.js';

export const KEY_PREFIX = 'gw:hl7:';
const REJECTED_INDEX = `${KEY_PREFIX}rejected`;
const rejectedKey = (id: string) => `${KEY_PREFIX}rejected:e:${id}`;

export interface RejectedSummary {
  id: string;
  receivedAt: string;
  channel: string;
  peer?: string;
  /** MSH-3|MSH-4 as sent. */
  sender?: string;
  controlId?: string;
  messageType?: string;
  /** The ACK code the sender got (AE, AR, CR…). */
  ackCode: string;
  reason: string;
  errors: AckError[];
  replays?: number;
  lastReplayAt?: string;
  /** The authenticated sender (HTTP), kept so that a replay runs with its rights. */
  principal?: Principal;
}

export interface RejectedEntry extends RejectedSummary {
  /** The message text as decoded (segments separated by CR). */
  raw: string;
  charset: string;
}

export class RejectedStore {
  constructor(
    private readonly redis: Redis,
    private readonly max: number,
  ) {}

  async add(entry: Omit<RejectedEntry, 'id'>): Promise<string> {
    const id = randomUUID();
    const full: RejectedEntry = { id, ...entry };
    const score = Date.parse(entry.receivedAt) || Date.now();
    await this.redis.multi().set(rejectedKey(id), JSON.stringify(full)).zadd(REJECTED_INDEX, score, id).exec();
    const count = await this.redis.zcard(REJECTED_INDEX);
    if (count > this.max) {
      const old = await this.redis.zrange(REJECTED_INDEX, 0, count - this.max - 1);
      if (old.length) await this.redis.multi().del(...old.map(rejectedKey)).zrem(REJECTED_INDEX, ...old).exec();
    }
    return id;
  }

  /** Newest first, without the raw message. */
  async list(opts: { limit?: number; offset?: number } = {}): Promise<{ total: number; items: RejectedSummary[] }> {
    const limit = Math.min(Math.max(opts.limit ?? 50, 1), 500);
    const offset = Math.max(opts.offset ?? 0, 0);
    const [total, ids] = await Promise.all([this.redis.zcard(REJECTED_INDEX), this.redis.zrevrange(REJECTED_INDEX, offset, offset + limit - 1)]);
    if (!ids.length) return { total, items: [] };
    const values = await this.redis.mget(...ids.map(rejectedKey));
    const items: RejectedSummary[] = [];
    for (const v of values) {
      if (!v) continue;
      const { raw: _raw, charset: _charset, ...summary } = JSON.parse(v) as RejectedEntry;
      items.push(summary);
    }
    return { total, items };
  }

  async get(id: string): Promise<RejectedEntry | undefined> {
    const v = await this.redis.get(rejectedKey(id));
    return v ? (JSON.parse(v) as RejectedEntry) : undefined;
  }

  async update(entry: RejectedEntry): Promise<void> {
    await this.redis.set(rejectedKey(entry.id), JSON.stringify(entry), 'XX');
  }

  async delete(id: string): Promise<boolean> {
    const [[, removed] = [null, 0]] = ((await this.redis.multi().zrem(REJECTED_INDEX, id).del(rejectedKey(id)).exec()) ?? []) as [unknown, number][];
    return Number(removed) > 0;
  }
}

export interface CachedAck {
  /** Hash of the message content: a resend must match it. */
  h: string;
  acks: string[];
  charset: string;
}

export function contentHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}

export class AckCache {
  constructor(
    private readonly redis: Redis,
    private readonly ttlS: number,
  ) {}

  private key(sender: string, controlId: string): string {
    return `${KEY_PREFIX}ack:${createHash('sha256').update(`${sender}\u001f${controlId}`).digest('hex').slice(0, 40)}`;
  }

  get enabled(): boolean {
    return this.ttlS > 0;
  }

  async get(sender: string, controlId: string): Promise<CachedAck | undefined> {
    if (!this.enabled) return undefined;
    const v = await this.redis.get(this.key(sender, controlId));
    return v ? (JSON.parse(v) as CachedAck) : undefined;
  }

  async put(sender: string, controlId: string, value: CachedAck): Promise<void> {
    if (!this.enabled) return;
    await this.redis.set(this.key(sender, controlId), JSON.stringify(value), 'EX', this.ttlS);
  }
}
