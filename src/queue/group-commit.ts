/**
 * Group commit on ingest: requests that arrive while an enqueue round trip to Redis is in flight wait for it and are
 * then written together, in one bull `addBulk` (one MULTI/EXEC) per destination queue, instead of one `add` each.
 * Every request is still acknowledged only once its own jobs are in Redis: its promise resolves when the batch that
 * holds it has been written, and a batch that fails refuses every request in it with the same retryable error
 * (nothing is acknowledged that Redis did not confirm).
 *
 * A quiet gateway pays nothing: a request that finds no round trip in flight is written at once, alone, exactly as
 * without grouping. What stays as it was, per request:
 *  - job ids: derived from the content and the dedupe window (queue.ts jobIdFor); two requests with the same content in
 *    one batch get the same id, as two sent one after the other do (bull keeps the first, the second is a duplicate);
 *  - the depth limit (QUEUE_MAX_DEPTH): requests are admitted in arrival order while the queue's depth plus the jobs
 *    admitted before them fit; a request that does not fit is enqueued on its own, and refused as it is today;
 *  - the enqueue timeout: the batch's write is bounded by ENQUEUE_TIMEOUT_MS, as a single write is.
 *
 * Combining (`combineReadings` > 0, INGEST_COMBINE): the messages of one batch are queued as few jobs, not one job
 * each: their readings are put together, per adapter and channel, in jobs of at most `combineReadings` readings (the
 * size delivery writes in one EHR transaction). A job costs the queue and the worker the same whether it carries one
 * reading or a hundred, so a busy gateway of one-reading messages (a cuff, a scale, a wearable) does a fraction of the
 * queue work. Each message is acknowledged once the jobs that hold its readings are in Redis, with their ids. What
 * changes: a resend that finds other messages in flight is combined with them into a job of another id, so the queue
 * does not recognise it and delivery writes it again, and the EHR, whose writes are conditional on the identifiers
 * (delivery/writer.ts), keeps one copy. A lone message is queued exactly as without combining.
 */
import { GatewayError } from '../core/errors.js';
import type { DeliveryJob, DeliveryQueue } from './queue.js';

/** What group commit needs of a queue (DeliveryQueue). */
export type GroupTarget = Pick<DeliveryQueue, 'enqueue' | 'depth' | 'isReady'> & { settings: { maxDepth: number } };

interface Waiting {
  jobs: DeliveryJob[];
  resolve(ids: string[]): void;
  reject(err: unknown): void;
}

/** Most jobs written in one batch: a bound on one MULTI's size (the rest go in the next round trip). */
export const GROUP_MAX_JOBS = 500;

/**
 * The next batch of a group commit, taken from the front of `waiting`: the first in line, then as many more as fit in
 * `max` by weight, in arrival order (the rest wait for the next round trip).
 */
export function takeBatch<T>(waiting: T[], max: number, weightOf: (w: T) => number): T[] {
  let n = 0;
  let total = 0;
  while (n < waiting.length && (n === 0 || total + weightOf(waiting[n]) <= max)) total += weightOf(waiting[n++]);
  return waiting.splice(0, n);
}

/** A copy of a refusal for each request of a failed batch: the same status, outcome and headers, an error of its own. */
function copyError(err: unknown): unknown {
  if (!(err instanceof GatewayError)) return err;
  const copy = new GatewayError(err.status, err.outcome, { cause: err.cause, headers: { ...err.headers }, retryable: err.retryable });
  copy.message = err.message;
  return copy;
}

/** The key of the jobs whose readings may share a job: what a job says besides its readings. */
const sameKind = (j: DeliveryJob) => `${j.adapterId}\u0000${j.channel}\u0000${j.replayOf ?? ''}`;

/**
 * The messages' jobs put together: per kind (adapter, channel), in arrival order, jobs of at most `max` readings.
 * Returns the combined jobs and, for each message, the indexes of the combined jobs holding its readings.
 */
export function combineJobs(messages: DeliveryJob[][], max: number): { jobs: DeliveryJob[]; holders: number[][] } {
  const jobs: DeliveryJob[] = [];
  const open = new Map<string, number>();
  const holders = messages.map((mine) => {
    const held: number[] = [];
    for (const job of mine) {
      const kind = sameKind(job);
      for (let i = 0; i < job.translations.length; ) {
        let at = open.get(kind);
        if (at === undefined || jobs[at].translations.length >= max) {
          at = jobs.push({ ...job, translations: [] }) - 1;
          open.set(kind, at);
        }
        const target = jobs[at];
        const take = job.translations.slice(i, i + max - target.translations.length);
        target.translations.push(...take);
        if (job.receivedAt < target.receivedAt) target.receivedAt = job.receivedAt;
        i += take.length;
        if (!held.includes(at)) held.push(at);
      }
    }
    return held;
  });
  return { jobs, holders };
}

export class GroupCommit {
  private waiting: Waiting[] = [];
  private busy = false;
  /** Round trips made and requests they carried (for tests and the bench: how much grouping happens). */
  readonly stats = { batches: 0, requests: 0, largest: 0, combined: 0 };

  /**
   * @param combineReadings most readings in a job combined from several messages; 0: one job per message (see above).
   */
  constructor(
    private readonly queue: GroupTarget,
    private readonly maxJobs = GROUP_MAX_JOBS,
    private readonly combineReadings = 0,
  ) {}

  /** Resolves with the jobs' ids once they are in Redis (in the order given), or rejects as DeliveryQueue.enqueue does. */
  enqueue(jobs: DeliveryJob[]): Promise<string[]> {
    return new Promise<string[]>((resolve, reject) => {
      this.waiting.push({ jobs, resolve, reject });
      if (!this.busy) void this.drain();
    });
  }

  /** Writes what is waiting, one batch per round trip, until nothing waits. */
  private async drain(): Promise<void> {
    this.busy = true;
    try {
      while (this.waiting.length) await this.commit(takeBatch(this.waiting, this.maxJobs, (w) => w.jobs.length));
    } finally {
      this.busy = false;
    }
  }

  private async commit(batch: Waiting[]): Promise<void> {
    this.stats.batches++;
    this.stats.requests += batch.length;
    this.stats.largest = Math.max(this.stats.largest, batch.length);
    if (batch.length === 1) return this.alone(batch[0]);
    // The depth limit, request by request in arrival order (depth() is cached: this costs no round trip most times).
    let admitted = batch;
    let over: Waiting[] = [];
    if (this.queue.isReady()) {
      const depth = await this.queue.depth().catch(() => undefined);
      if (depth !== undefined) {
        let total = depth;
        const fits = batch.findIndex((w) => (total += w.jobs.length) > this.queue.settings.maxDepth);
        if (fits >= 0) {
          admitted = batch.slice(0, fits);
          over = batch.slice(fits);
        }
      }
    }
    if (admitted.length) {
      try {
        if (this.combineReadings > 0) {
          const { jobs, holders } = combineJobs(
            admitted.map((w) => w.jobs),
            this.combineReadings,
          );
          const ids = await this.queue.enqueue(jobs);
          this.stats.combined += jobs.length;
          admitted.forEach((w, k) => w.resolve(holders[k].map((i) => ids[i])));
        } else {
          const ids = await this.queue.enqueue(admitted.flatMap((w) => w.jobs));
          let at = 0;
          for (const w of admitted) {
            w.resolve(ids.slice(at, at + w.jobs.length));
            at += w.jobs.length;
          }
        }
      } catch (err) {
        for (const w of admitted) w.reject(copyError(err));
      }
    }
    // Those that did not fit go on their own, after the batch (which the queue's depth now counts): the queue refuses
    // them as it refuses any request over the limit (or takes them if the depth it reads again has gone down).
    for (const w of over) await this.alone(w);
  }

  private async alone(w: Waiting): Promise<void> {
    try {
      w.resolve(await this.queue.enqueue(w.jobs));
    } catch (err) {
      w.reject(err);
    }
  }
}
