/**
 * Payloads refused at the door because they could not be mapped (unknown adapter, translation or validation errors),
 * kept with the reason so that an integration team can inspect them and replay them once the mapping is fixed.
 * (HL7v2 messages have their own store with the raw message: hl7v2/rejected.ts.)
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { OperationOutcome } from 'fhir/r4';
import type { Principal } from '../core/contract.js';

export interface RefusedPayload {
  id: string;
  adapterId: string;
  channel: string;
  receivedAt: string;
  status: number;
  outcome: OperationOutcome;
  body: unknown;
  attributes?: Record<string, string>;
  principal?: Principal;
}

const KEY = (id: string) => `gw:refused:${id}`;
const INDEX = 'gw:refused:index';

export class RefusedStore {
  constructor(private readonly redis: Redis, private readonly max = 10000) {}

  async add(r: Omit<RefusedPayload, 'id'>): Promise<string> {
    const id = randomUUID();
    await this.redis.multi().set(KEY(id), JSON.stringify({ id, ...r })).zadd(INDEX, Date.parse(r.receivedAt) || Date.now(), id).exec();
    const n = await this.redis.zcard(INDEX);
    if (n > this.max) {
      const old = await this.redis.zrange(INDEX, 0, n - this.max - 1);
      if (old.length) await this.redis.multi().del(...old.map(KEY)).zrem(INDEX, ...old).exec();
    }
    return id;
  }

  async get(id: string): Promise<RefusedPayload | undefined> {
    const s = await this.redis.get(KEY(id));
    return s ? (JSON.parse(s) as RefusedPayload) : undefined;
  }

  /** Newest first, without the bodies. */
  async list(offset = 0, limit = 100): Promise<{ total: number; items: Omit<RefusedPayload, 'body'>[] }> {
    const [total, ids] = await Promise.all([this.redis.zcard(INDEX), this.redis.zrevrange(INDEX, offset, offset + limit - 1)]);
    const raws = ids.length ? await this.redis.mget(ids.map(KEY)) : [];
    const items = raws.filter((r): r is string => !!r).map((r) => {
      const { body: _body, ...rest } = JSON.parse(r) as RefusedPayload;
      return rest;
    });
    return { total, items };
  }

  async delete(id: string): Promise<boolean> {
    const res = (await this.redis.multi().del(KEY(id)).zrem(INDEX, id).exec()) as [[unknown, number]];
    return res[0][1] === 1;
  }
}
