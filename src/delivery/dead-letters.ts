/**
 * Dead letters: jobs the EHR refused for good (a 4xx other than 408/409/412/429), or that ran out of attempts. Kept in
 * Redis with the server's OperationOutcome, so an integration team can see why, fix the cause and replay. When one
 * reading of a job with several is refused, that reading alone is the dead letter (id `<job id>.<reading index>`) and
 * the others are delivered.
 */
import type { Redis } from 'ioredis';
import type { OperationOutcome } from 'fhir/r4';
import { type DeliveryJob, normalizeJob } from '../queue/queue.js';

export interface DeadLetter {
  id: string;
  jobId: string;
  reason: string;
  /** 'rejected' by the EHR, 'exhausted' its attempts, or refused by the gateway's own policy. */
  kind: 'rejected' | 'exhausted' | 'policy';
  httpStatus?: number;
  outcome?: OperationOutcome;
  attempts: number;
  deadAt: string;
  job: DeliveryJob;
}

export interface DeadLetterSummary extends Omit<DeadLetter, 'job'> {
  adapterId: string;
  channel: string;
  receivedAt: string;
  summary: { readings: number; devices: number; observations: number; patients: number; codes: string[] };
}

const KEY = (id: string) => `gw:dlq:${id}`;

function parseDeadLetter(raw: string): DeadLetter {
  const d = JSON.parse(raw) as DeadLetter;
  return { ...d, job: normalizeJob(d.job) };
}
const INDEX = 'gw:dlq:index';

export function summarize(d: DeadLetter): DeadLetterSummary {
  const { job, ...rest } = d;
  const ts = job.translations;
  const observations = ts.flatMap((t) => t.observations);
  const codes = [...new Set(observations.map((o) => o.code.coding?.[0]?.code ?? o.code.text ?? '?'))];
  return {
    ...rest,
    adapterId: job.adapterId,
    channel: job.channel,
    receivedAt: job.receivedAt,
    summary: {
      readings: ts.length,
      devices: ts.reduce((n, t) => n + t.devices.length, 0),
      observations: observations.length,
      patients: ts.reduce((n, t) => n + (t.patients?.length ?? 0), 0),
      codes,
    },
  };
}

export class DeadLetterStore {
  constructor(private readonly redis: Redis) {}

  async put(d: DeadLetter): Promise<void> {
    await this.redis.multi().set(KEY(d.id), JSON.stringify(d)).zadd(INDEX, Date.parse(d.deadAt), d.id).exec();
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const raw = await this.redis.get(KEY(id));
    return raw ? parseDeadLetter(raw) : undefined;
  }

  async list(offset = 0, limit = 100): Promise<{ total: number; items: DeadLetterSummary[] }> {
    const [total, ids] = await Promise.all([this.redis.zcard(INDEX), this.redis.zrevrange(INDEX, offset, offset + limit - 1)]);
    if (!ids.length) return { total, items: [] };
    const raws = await this.redis.mget(ids.map(KEY));
    return { total, items: raws.filter((r): r is string => !!r).map((r) => summarize(parseDeadLetter(r))) };
  }

  async count(): Promise<number> {
    return this.redis.zcard(INDEX);
  }

  async delete(id: string): Promise<boolean> {
    const [[, n]] = (await this.redis.multi().del(KEY(id)).zrem(INDEX, id).exec()) as [[unknown, number]];
    return n === 1;
  }
}
