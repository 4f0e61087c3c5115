/**
 * Dead letters: jobs the EHR refused for good (a 4xx other than 408/409/412/429), or that ran out of attempts. Kept in
 * Redis with the server's OperationOutcome, so an integration team can see why, fix the cause and replay. When one
 * reading of a job with several is refused, that reading alone is the dead letter (id `<job id>.<reading index>`) and
 * the others are delivered.
 */
import type { RedisClient } from '../queue/connection.js';
import type { OperationOutcome } from 'fhir/r4';
import { destinationGroupPrefix } from '../core/keys.js';
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
  /** The destination that gave it up (absent in entries written before there were several). */
  destination?: string;
}

export interface DeadLetterSummary extends Omit<DeadLetter, 'job'> {
  adapterId: string;
  channel: string;
  receivedAt: string;
  summary: { readings: number; devices: number; observations: number; patients: number; codes: string[] };
}

function parseDeadLetter(raw: string): DeadLetter {
  const d = JSON.parse(raw) as DeadLetter;
  return { ...d, job: normalizeJob(d.job) };
}

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
  private readonly prefix: string;
  private readonly index: string;

  /**
   * The dead letters of one destination: `gw:dlq:` (`gw:dlq:<destination>:` for a destination other than ehr); on a
   * cluster the same group as a hash tag (`{gw:dlq}:`), since an entry and the index are written in one MULTI.
   */
  constructor(
    private readonly redis: RedisClient,
    readonly destination = 'ehr',
  ) {
    this.prefix = destinationGroupPrefix('gw:dlq', destination, redis);
    this.index = `${this.prefix}index`;
  }

  private key(id: string): string {
    return this.prefix + id;
  }

  async put(d: DeadLetter): Promise<void> {
    await this.redis.multi().set(this.key(d.id), JSON.stringify(d)).zadd(this.index, Date.parse(d.deadAt), d.id).exec();
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const raw = await this.redis.get(this.key(id));
    return raw ? { ...parseDeadLetter(raw), destination: this.destination } : undefined;
  }

  async list(offset = 0, limit = 100): Promise<{ total: number; items: DeadLetterSummary[] }> {
    const [total, ids] = await Promise.all([this.redis.zcard(this.index), this.redis.zrevrange(this.index, offset, offset + limit - 1)]);
    if (!ids.length) return { total, items: [] };
    const raws = await this.redis.mget(ids.map((id) => this.key(id)));
    return {
      total,
      items: raws.filter((r): r is string => !!r).map((r) => summarize({ ...parseDeadLetter(r), destination: this.destination })),
    };
  }

  async count(): Promise<number> {
    return this.redis.zcard(this.index);
  }

  async delete(id: string): Promise<boolean> {
    const [[, n]] = (await this.redis.multi().del(this.key(id)).zrem(this.index, id).exec()) as [[unknown, number]];
    return n === 1;
  }
}
