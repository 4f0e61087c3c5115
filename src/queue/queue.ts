/**
 * The durable delivery queue (bull on Redis). Ingest adds jobs here and acknowledges its sender only after `add` has
 * resolved: from then on the job survives a crash of any gateway process (with Redis AOF on, a crash of Redis too).
 */
import Bull from 'bull';
import type { Redis, RedisOptions } from 'ioredis';
import {
  coalesceWrites,
  connectionFor,
  createRedis,
  isRedisUnreachable,
  type RedisClient,
  redisOptions,
  reopenWhenEnded,
} from './connection.js';
import type { Reading } from '../core/contract.js';
import { hashKey } from '../core/ids.js';
import { issue, GatewayError, outcome, unavailable } from '../core/errors.js';

/** What a delivery job carries: resources already translated and validated, ready for the EHR. */
export interface DeliveryJob {
  adapterId: string;
  channel: string;
  receivedAt: string;
  /**
   * The readings of one message (a large message is cut into several jobs), delivered together: one job costs the
   * queue the same whether it carries one reading or fifty.
   */
  translations: Reading[];
  /** Set when a dead letter or a rejected message is replayed. */
  replayOf?: string;
}

/** Disconnects and waits for the connection to end (at most 1 s: a connection that never opened may not say so). */
function closeConnection(c: RedisClient): Promise<void> {
  if (c.status === 'end') return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    timer.unref();
    c.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
    c.disconnect();
  });
}

/** A job as delivery sees it: bull's Job narrowed to what the worker uses (no other module imports bull). */
export type QueuedJob = Pick<Bull.Job<DeliveryJob>, 'id' | 'data' | 'attemptsMade' | 'opts' | 'discard' | 'remove'>;

export interface QueueSettings {
  /** Redis's URL; with `sentinels`, only its password and database. */
  redisUrl?: string;
  /** host:port of each Redis Sentinel: the queue follows the master they name (`sentinelName`) across a failover. */
  sentinels?: readonly string[];
  sentinelName?: string;
  /**
   * host:port of some nodes of a Redis Cluster: the queue's connections are cluster clients, and its keys carry the
   * hash tag `{gw:<queueName>}` (queuePrefix), so that all of them are in one slot as bull's scripts need.
   */
  clusterNodes?: readonly string[];
  /**
   * Replicas that must have a job before it is acknowledged (Redis WAIT on the connection that wrote it; 0: none, the
   * acknowledgement follows the master's write alone). A shortfall within `waitTimeoutMs` refuses with 503.
   */
  waitReplicas?: number;
  waitTimeoutMs?: number;
  /** How long an identical submission is the same job (seconds; 0: as long as the completed job is retained). */
  dedupeWindowS?: number;
  queueName: string;
  maxDepth: number;
  enqueueTimeoutMs: number;
  attempts: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  retentionCompleted: number;
  retryBaseDelayMs: number;
  retryMaxDelayMs: number;
}

export { redisOptions };

/**
 * bull's key prefix for a queue: `gw` on a single Redis (the keys of every earlier version: `gw:<queue>:…`), and on a
 * cluster `{gw:<queue>}`: a hash tag of the queue's own, so that every key of the queue is in one slot (bull's
 * scripts touch several) and the queues of different destinations hash to different slots, so to different masters.
 */
export function queuePrefix(queueName: string, cluster: boolean): string {
  return cluster ? `{gw:${queueName}}` : 'gw';
}

/** A connection for tests and tools (at most two retries per command); createRedis() is the factory behind it. */
export function connectRedis(url: string, extra: RedisOptions = {}): Redis {
  return createRedis(url, { maxRetriesPerRequest: 2, ...extra });
}

/**
 * A job as stored by this version. Jobs, held readings and dead letters written by the previous version carry one
 * `translation`; they are read as a job of one reading. (Upgrade every process together: the previous version cannot
 * read jobs of this one.)
 */
export function normalizeJob(
  data: DeliveryJob | (Omit<DeliveryJob, 'translations'> & { translation?: Reading; translations?: Reading[] }),
): DeliveryJob {
  if (Array.isArray(data.translations)) return data as DeliveryJob;
  const { translation, ...rest } = data as { translation?: Reading } & Omit<DeliveryJob, 'translations'>;
  return { ...rest, translations: translation ? [translation] : [] };
}

/**
 * The job id is derived from the content and the dedupe window it arrives in (DEDUPE_WINDOW_S), so the same message
 * submitted twice within the window is one job. After the window a resend is a new job: it reaches an EHR that lost the
 * data (a restarted sandbox, a restored EHR), and conditional creates keep an EHR that has it free of duplicates.
 */
export function jobIdFor(job: Pick<DeliveryJob, 'adapterId' | 'translations'>, windowS = 0, now = Date.now()): string {
  return contentId(job.adapterId, JSON.stringify(job.translations), windowS, now);
}

function contentId(adapterId: string, translationsJson: string, windowS: number, now: number): string {
  const window = windowS > 0 ? String(Math.floor(now / (windowS * 1000))) : '';
  return hashKey('job', adapterId, translationsJson, window);
}

/** The JSON of a job's data that `prepareJob` worked out, for bull's `Job#toData` (patched below); used once. */
const preparedJson = new WeakMap<object, string>();

/**
 * A job's id (jobIdFor) and the JSON bull stores of its data, from one JSON.stringify of its readings. bull's
 * `Job#toData` would otherwise stringify the whole data again: 2 KB for one reading, 200 KB for a hundred, on every
 * enqueue (bench/path.ts's profile: the two were a tenth of the gateway thread's time at one reading per request).
 * The JSON names the readings last; it parses to the same data.
 */
export function prepareJob<T extends DeliveryJob>(data: T, windowS = 0, now = Date.now()): { id: string; data: T } {
  const translations = JSON.stringify(data.translations);
  const { translations: _, ...rest } = data;
  const head = JSON.stringify(rest);
  preparedJson.set(data, `${head === '{}' ? '{' : `${head.slice(0, -1)},`}"translations":${translations}}`);
  return { id: contentId(data.adapterId, translations, windowS, now), data };
}

/**
 * bull's `Job#toData` (lib/job.js: the job's fields, each object field as JSON, for its `addJob` script) with the data's
 * JSON taken from `prepareJob` when it has it. Every other field, and every job not prepared, is bull's own work.
 */
type BullJobFields = { data: unknown; toData(): Record<string, unknown> };
const jobPrototype = (Bull as unknown as { Job: { prototype: BullJobFields } }).Job.prototype;
const bullToData = jobPrototype.toData;
const NO_DATA = Object.freeze({});
jobPrototype.toData = function toData(this: BullJobFields) {
  const data = this.data;
  const json = data && typeof data === 'object' ? preparedJson.get(data) : undefined;
  if (json === undefined) return bullToData.call(this);
  preparedJson.delete(data as object);
  this.data = NO_DATA;
  try {
    const out = bullToData.call(this);
    out.data = json;
    return out;
  } finally {
    this.data = data;
  }
};

/** Most readings in one job (and, by default, in one EHR transaction). */
export const DEFAULT_READINGS_PER_JOB = 100;

/** Cuts a message's translations into jobs of at most `max` readings. */
export function jobsFor(base: Omit<DeliveryJob, 'translations'>, translations: Reading[], max = DEFAULT_READINGS_PER_JOB): DeliveryJob[] {
  const jobs: DeliveryJob[] = [];
  for (let i = 0; i < translations.length; i += max) jobs.push({ ...base, translations: translations.slice(i, i + max) });
  return jobs;
}

export const BACKOFF_STRATEGY = 'ehr';

/**
 * Whether bull failed a job because it stalled too often (a worker died while holding it, more than maxStalledCount
 * times) rather than because the processor threw. Bull says so only in the message text (BullMQ uses the same text),
 * so this is the one place that reads it.
 */
export function isStalledFailure(err: unknown): boolean {
  const message = (err as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' && /stalled more than allowable limit/.test(message);
}

export class DeliveryQueue {
  readonly bull: Bull.Queue<DeliveryJob>;
  /** Every Redis connection bull asked for (client, subscriber, bclient). */
  private readonly connections: RedisClient[] = [];
  private depthCache = { at: 0, depth: 0 };
  private closing?: Promise<void>;
  /** Connections reopened after they ended unasked (see reopenWhenEnded). */
  reopened = 0;

  constructor(
    readonly settings: QueueSettings,
    backoff: (attemptsMade: number, err: Error) => number,
  ) {
    this.bull = new Bull<DeliveryJob>(settings.queueName, {
      // Our own connections, so that every one has an error listener (bull's own would print unhandled errors).
      createClient: (_type, opts) => {
        // No auto-pipelining on bull's connections: ioredis builds a Pipeline for every event-loop turn that sends a
        // command, and on a connection with bull's 26 scripts defined each Pipeline copies them all (15 µs and a fifth of
        // the gateway's allocations at one reading per request, against 3 µs on a connection without scripts). Jobs
        // are few since ingest combines messages (INGEST_COMBINE); a group commit's write is one MULTI anyway. Measured
        // with one reading per request, role all, back to back: 788-835 against 863-875 µs of gateway CPU per reading,
        // ingest → EHR p99 27-32 against 34-39 ms at 500/s; no change at 20 per request. What a turn of the event loop
        // writes on one connection leaves in one system call instead (coalesceWrites).
        const c = createRedis(
          {
            url: settings.redisUrl,
            sentinels: settings.sentinels,
            sentinelName: settings.sentinelName,
            clusterNodes: settings.clusterNodes,
          },
          { ...opts, ...redisOptions(), enableAutoPipelining: false },
        );
        // bull closes only connections it made itself: these are ours to close (see close()), and ours to reopen.
        this.connections.push(c);
        coalesceWrites(c);
        reopenWhenEnded(
          c,
          () => this.closing !== undefined,
          () => this.reopened++,
        );
        return c;
      },
      prefix: queuePrefix(settings.queueName, !!settings.clusterNodes?.length),
      settings: {
        lockDuration: settings.lockDurationMs,
        lockRenewTime: Math.max(50, Math.floor(settings.lockDurationMs / 2)),
        stalledInterval: settings.stalledIntervalMs,
        maxStalledCount: 5,
        backoffStrategies: { [BACKOFF_STRATEGY]: backoff },
      },
      defaultJobOptions: {
        attempts: settings.attempts,
        backoff: { type: BACKOFF_STRATEGY },
        removeOnComplete: settings.retentionCompleted,
        removeOnFail: 10000,
      },
    });
    this.bull.on('error', () => undefined); // connection errors surface as 503 at ingest and in /readyz
    this.bull.on('lock-extension-failed', (job: Bull.Job<DeliveryJob>) => this.keepLock(job));
  }

  /** Jobs this process is running (their ids), for keepLock. */
  private readonly running = new Set<string>();
  /** Jobs whose lock keepLock renews. */
  private readonly keeping = new Set<string>();
  /** Lock renewals keepLock made after bull had given up, and settlements retried (tests read them). */
  locksKept = 0;
  settlementsRetried = 0;

  /**
   * bull renews a running job's lock every half lock duration and stops for good after one failed renewal: a Redis
   * failover (Sentinel or cluster) or a dropped connection fails it. The job then loses its lock while this process
   * still delivers it: it cannot be marked completed, and once the lock expires bull hands it out again, to be
   * delivered a second time (the EHR absorbs the copy) a lock duration later. So renewing is taken over here (every
   * half lock duration, every 0.5 s while Redis does not answer), until the job ends in this process or Redis answers
   * that the lock is no longer this worker's (it expired, or another worker has the job): then bull's own handling
   * stands.
   */
  private keepLock(job: Bull.Job<DeliveryJob>): void {
    const id = String(job.id);
    // Also while the queue closes: close() waits for the running jobs, whose locks must hold until they end.
    if (this.keeping.has(id) || !this.running.has(id)) return;
    this.keeping.add(id);
    const every = Math.max(50, Math.floor(this.settings.lockDurationMs / 2));
    const renew = async (): Promise<void> => {
      if (!this.running.has(id)) return void this.keeping.delete(id);
      const held = await job.extendLock(this.settings.lockDurationMs).then(
        (r) => (Number(r) === 1 ? 'yes' : 'no'),
        () => 'unknown',
      );
      if (held === 'no') return void this.keeping.delete(id);
      if (held === 'yes') this.locksKept++;
      // While Redis does not answer, try again soon: the lock runs out half a duration after the last renewal.
      setTimeout(() => void renew(), held === 'yes' ? every : Math.min(every, 500)).unref();
    };
    setTimeout(() => void renew(), Math.min(every, 200)).unref();
  }

  /** bull's client connection (a cluster client on a cluster). */
  get redis(): RedisClient {
    return this.bull.client as unknown as RedisClient;
  }

  isReady(): boolean {
    return this.bull.client.status === 'ready';
  }

  /** Resolves once the queue's connections are ready. */
  async whenReady(): Promise<void> {
    await this.bull.isReady();
  }

  /** Runs `handler` for each job, `concurrency` at a time; resolves when processing stops (the queue is closed). */
  process<T>(concurrency: number, handler: (job: QueuedJob) => Promise<T>): Promise<void> {
    return this.bull.process(concurrency, async (job) => {
      const id = String(job.id);
      // The job is this process's until bull has settled it (settleThroughFailover ends it).
      this.running.add(id);
      this.settleThroughFailover(job);
      return handler(job);
    });
  }

  /**
   * bull marks a job completed right after the processor resolves (or, when it threw, records the failed attempt and
   * schedules the retry), and gives up at the first error. A job settled while Redis fails over (or while the
   * connection is down) then stays active, and once its lock expires bull hands it out again: a delivered job is
   * delivered a second time, a failed attempt waits a lock duration for its retry. So settling is retried (0.1 s,
   * doubling to 1 s) while the error is Redis being unreachable, for at most one lock duration, the lock renewed
   * meanwhile (keepLock). Any other error (bull's own: the lock was lost) ends it as before. Recording a failed
   * attempt changes the job in memory first (attempts made, stack traces): each try starts from the job as it was.
   *
   * When marking a delivered job completed fails for good, bull goes on to record a failed attempt with that error
   * (its handler's catch). For a job that was delivered that would be a retry (a second delivery now) or, at the last
   * attempt, a dead letter for a reading the EHR has: so that recording is refused, and the job is left active for
   * bull's stalled-job check to hand out again once its lock expires (a second delivery the EHR absorbs, as after a
   * crash).
   */
  private settleThroughFailover(job: Bull.Job<DeliveryJob>): void {
    const id = String(job.id);
    const target = job as unknown as Record<'moveToCompleted' | 'moveToFailed', (...args: unknown[]) => Promise<unknown>> & {
      attemptsMade: number;
      stacktrace: string[];
      failedReason?: string;
      finishedOn?: number;
    };
    let completionFailed: unknown;
    for (const name of ['moveToCompleted', 'moveToFailed'] as const) {
      const settle = target[name].bind(job);
      target[name] = async (...args: unknown[]) => {
        if (name === 'moveToFailed' && completionFailed !== undefined) {
          this.running.delete(id);
          throw completionFailed;
        }
        const before = {
          attemptsMade: target.attemptsMade,
          stacktrace: target.stacktrace ? [...target.stacktrace] : target.stacktrace,
          failedReason: target.failedReason,
          finishedOn: target.finishedOn,
        };
        const deadline = Date.now() + this.settings.lockDurationMs;
        let wait = 100;
        try {
          for (;;) {
            try {
              return await settle(...args);
            } catch (err) {
              if (!isRedisUnreachable(err) || this.closing || Date.now() + wait > deadline) {
                if (name === 'moveToCompleted') completionFailed = err ?? new Error('the job could not be marked completed');
                throw err;
              }
              this.settlementsRetried++;
              Object.assign(target, before, { stacktrace: before.stacktrace ? [...before.stacktrace] : before.stacktrace });
              await new Promise((r) => setTimeout(r, wait));
              wait = Math.min(wait * 2, 1000);
            }
          }
        } finally {
          this.running.delete(id);
        }
      };
    }
  }

  /** After a job failed (an attempt threw; bull retries it or records it as failed for good). */
  onFailed(listener: (job: QueuedJob, err: Error) => void): void {
    this.bull.on('failed', listener);
  }

  onCompleted(listener: (job: QueuedJob) => void): void {
    this.bull.on('completed', listener);
  }

  /** Connections of the queue not yet closed (0 after close()). */
  openConnections(): number {
    return this.connections.filter((c) => c.status !== 'end').length;
  }

  /** The connection's state as ioredis names it (ready, connecting, reconnecting, end…), for /api/status. */
  connectionStatus(): string {
    return this.bull.client.status;
  }

  /** Counts jobs added to this queue other than by enqueue (a subscriber's notifications) until depth() reads again. */
  noteAdded(n: number): void {
    this.depthCache.depth += n;
  }

  /** Waiting + delayed jobs, cached for 200 ms so that ingest does not ask Redis on every request. */
  async depth(): Promise<number> {
    const now = Date.now();
    if (now - this.depthCache.at < 200) return this.depthCache.depth;
    const c = await this.bull.getJobCounts();
    this.depthCache = { at: now, depth: c.waiting + c.delayed };
    return this.depthCache.depth;
  }

  /**
   * Adds the jobs and resolves with their ids once Redis has them. Refuses with 503 + Retry-After when Redis is down,
   * does not answer in time, or the queue is deeper than its limit.
   */
  async enqueue(jobs: DeliveryJob[]): Promise<string[]> {
    try {
      return await this.enqueueOrThrow(jobs);
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      // Any other failure of Redis (OOM under noeviction, a closed connection, MaxRetriesPerRequest) means the job may
      // not be stored: the sender must keep its data and resend. Never a 500 that a channel could acknowledge.
      throw new GatewayError(
        503,
        outcome([
          issue('transient', `the queue (Redis) refused the job (${(err as Error)?.name ?? 'error'}); nothing was accepted, retry later`),
        ]),
        { cause: err, headers: { 'Retry-After': '5' } },
      );
    }
  }

  private async enqueueOrThrow(jobs: DeliveryJob[]): Promise<string[]> {
    const t = this.settings.enqueueTimeoutMs;
    await this.ensureReady(t);
    const depth = await withTimeout(this.depth(), t, 'the queue (Redis) did not answer');
    if (depth + jobs.length > this.settings.maxDepth) {
      throw unavailable(`the delivery queue is full (${depth} jobs waiting, limit ${this.settings.maxDepth}); retry later`, 10);
    }
    const now = Date.now();
    const specs = jobs.map((job) => {
      const { id, data } = prepareJob(job, this.settings.dedupeWindowS, now);
      return { data, opts: { jobId: id } };
    });
    const added = await withTimeout(
      specs.length === 1 ? this.bull.add(specs[0].data, specs[0].opts).then((j) => [j]) : this.bull.addBulk(specs),
      t,
      'the queue (Redis) did not confirm the job',
    );
    // addBulk is one MULTI: a command that failed inside it (a script error, OOM) leaves its job without an id, and bull
    // does not say so. Such a job is not in Redis: refuse (503) rather than acknowledge it.
    if (added.length !== jobs.length || added.some((j) => j.id === undefined || j.id === null))
      throw new Error('the queue (Redis) did not store every job');
    this.depthCache.depth += jobs.length;
    await this.waitForReplicas();
    return added.map((j) => String(j.id));
  }

  /**
   * With `waitReplicas`, holds the acknowledgement until that many replicas have the connection's writes (Redis WAIT
   * on bull's client, the connection that added the jobs), so that a Sentinel failover cannot lose an acknowledged job.
   * On a cluster, WAIT goes to the client's connection to the master of the queue's slot: the connection the jobs were
   * written through, and the master whose replicas must have them. A shortfall refuses with 503: the jobs may be on the
   * master alone, the sender resends, and the resend is the same job (its id comes from the content).
   */
  private async waitForReplicas(): Promise<void> {
    const want = this.settings.waitReplicas ?? 0;
    if (want <= 0) return;
    const ms = this.settings.waitTimeoutMs ?? 1000;
    const node = connectionFor(this.redis, this.bull.toKey('wait'));
    if (!node) throw unavailable('the queue (Redis Cluster) has no known master for its slot; nothing was acknowledged, resend later', 5);
    const got = await withTimeout(node.wait(want, ms), ms + this.settings.enqueueTimeoutMs, 'Redis did not answer WAIT');
    if (got < want) {
      throw unavailable(
        `the queue (Redis) has the job on ${got} of the ${want} replicas required (REDIS_WAIT_REPLICAS) within ${ms} ms; it is not acknowledged, resend later`,
        5,
      );
    }
  }

  /**
   * Fails fast (503) when the connection is down or reconnecting; waits up to `ms` while it is still connecting (a
   * gateway that has just started).
   */
  private async ensureReady(ms: number): Promise<void> {
    const client = this.bull.client;
    if (client.status === 'ready') return;
    if (client.status === 'connecting' || client.status === 'connect' || client.status === 'wait') {
      let onReady: (() => void) | undefined;
      await withTimeout(new Promise<void>((res) => client.once('ready', (onReady = () => res()))), ms, 'the queue (Redis) did not connect')
        .catch(() => undefined)
        .finally(() => onReady && client.off('ready', onReady));
      if ((client.status as string) === 'ready') return;
    }
    throw unavailable(`the queue (Redis) is not reachable (${client.status}); nothing was accepted, retry later`, 5);
  }

  /** Adds a replayed job under a fresh id (the content id may still be held by the failed original). */
  async requeue(job: DeliveryJob): Promise<string> {
    await this.ensureReady(this.settings.enqueueTimeoutMs);
    const added = await withTimeout(
      this.bull.add(job, { jobId: `${jobIdFor(job)}-r${Date.now().toString(36)}` }),
      this.settings.enqueueTimeoutMs,
      'the queue (Redis) did not confirm the job',
    );
    return String(added.id);
  }

  async counts(): Promise<Record<string, number>> {
    const c = await this.bull.getJobCounts();
    return { ...c, paused: await this.bull.getPausedCount?.().catch(() => 0) } as Record<string, number>;
  }

  /**
   * Seconds since the job next in line was added (bull adds with LPUSH and workers take from the tail): two Redis
   * reads, cheap enough for every scrape. 0 when nothing waits.
   */
  async oldestWaitingAgeSeconds(now = Date.now()): Promise<number> {
    const id = await this.redis.lindex(this.bull.toKey('wait'), -1);
    const added = id ? Number(await this.redis.hget(this.bull.toKey(id), 'timestamp')) : 0;
    return added > 0 ? Math.max(0, now - added) / 1000 : 0;
  }

  /**
   * Stops the queue (waiting for jobs in flight) and closes its connections. bull leaves connections made by a
   * `createClient` to their owner: without this they would try to reconnect for ever once Redis is gone.
   */
  close(): Promise<void> {
    this.closing ??= this.bull
      .close()
      .catch(() => undefined)
      .then(() => Promise.all(this.connections.map(closeConnection)))
      .then(() => undefined);
    return this.closing;
  }
}

/**
 * `p`, or a 503 "…within `ms` ms; `advice`" once `ms` has passed (`p` goes on; its outcome is then not waited for).
 * Without `ms` (undefined or 0: a caller configured without a bound), `p` itself.
 */
export async function withTimeout<T>(
  p: Promise<T>,
  ms: number | undefined,
  what: string,
  advice = 'resend later (a resent message is recognised and not queued twice)',
): Promise<T> {
  if (!ms) return p;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(unavailable(`${what} within ${ms} ms; ${advice}`, 5)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
