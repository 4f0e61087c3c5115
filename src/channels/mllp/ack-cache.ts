/**
 * ACKs of accepted HL7 messages: gw:hl7:ack:<hash(sender, control id)> → { content hash, ACKs }, with a TTL
 * (HL7_DUPLICATE_TTL_S), so a resend after a lost ACK (same sender, same control id, same content) is answered again
 * without queueing twice. A reused control id with different content is not a resend and is processed normally.
 */
import { createHash } from 'node:crypto';
import type { RedisClient } from '../../queue/connection.js';

const KEY_PREFIX = 'gw:hl7:';

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
    private readonly redis: RedisClient,
    private readonly ttlS: number,
  ) {}

  /** The key of a sender's control id (a hash: a control id may be an MRN, and may be long). */
  key(sender: string, controlId: string): string {
    return `${KEY_PREFIX}ack:${createHash('sha256').update(`${sender}\u001f${controlId}`).digest('hex').slice(0, 40)}`;
  }

  get enabled(): boolean {
    return this.ttlS > 0;
  }

  /** The ACKs stored under `key` (from `key()`, made once per message for both the lookup and the store). */
  async get(key: string): Promise<CachedAck | undefined> {
    if (!this.enabled) return undefined;
    const v = await this.redis.get(key);
    return v ? (JSON.parse(v) as CachedAck) : undefined;
  }

  async put(key: string, value: CachedAck): Promise<void> {
    if (!this.enabled) return;
    await this.redis.set(key, JSON.stringify(value), 'EX', this.ttlS);
  }
}
