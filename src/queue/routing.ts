/**
 * One queue per destination. Ingest hands its jobs here: each destination gets the readings its filter matches, in its
 * own bull queue, and the sender is acknowledged only once every destination that matched has its jobs in Redis. A
 * destination whose queue refuses (Redis down, its queue full) makes the whole message a retryable refusal; the
 * resend is recognised in the queues that did take it (job ids are derived from the content, and bull's job ids are
 * per queue), so nothing is queued twice.
 */
import type { Identifier, Observation, Resource } from 'fhir/r4';
import type { Reading } from '../core/contract.js';
import { GatewayError } from '../core/errors.js';
import type { Destination, DestinationFilter } from '../config/destinations.js';
import { GroupCommit } from './group-commit.js';
import { type DeliveryJob, type DeliveryQueue, jobIdFor } from './queue.js';

/** What the pipeline knows of a message besides its jobs: what filters may select on. */
export interface RouteInfo {
  /** HL7v2 MSH-4. */
  sendingFacility?: string;
}

/** What ingest, the device registry and the audit trail queue through. */
export interface JobQueue {
  enqueue(jobs: DeliveryJob[], route?: RouteInfo): Promise<string[]>;
  /** Adds one job under a fresh id (a device update, a replay). */
  requeue(job: DeliveryJob): Promise<string>;
}

export interface RoutedQueue {
  destination: Destination;
  queue: DeliveryQueue;
}

const anyIn = (list: string[] | undefined, values: (string | undefined)[]) =>
  !list || values.some((v) => v !== undefined && list.includes(v));

/** Whether an identifier is listed, as `system|value` or as a bare `value` (any system). */
function identifierIn(list: string[], id: Identifier | undefined): boolean {
  if (!id?.value) return false;
  return list.includes(id.value) || (!!id.system && list.includes(`${id.system}|${id.value}`));
}

function observationMatches(f: DestinationFilter, o: Observation): boolean {
  if (
    f.categories &&
    !o.category?.some((c) =>
      anyIn(
        f.categories,
        (c.coding ?? []).map((x) => x.code),
      ),
    )
  )
    return false;
  if (f.patients && !identifierIn(f.patients, o.subject?.identifier)) return false;
  if (f.devices && !identifierIn(f.devices, o.device?.identifier)) return false;
  if (f.codes) {
    const codings = o.code?.coding ?? [];
    const keys = codings.flatMap((c) => [c.code, c.system && c.code ? `${c.system}|${c.code}` : undefined]);
    if (!anyIn(f.codes, keys)) return false;
  }
  return true;
}

/**
 * The part of a reading a filter lets through, or undefined when nothing is left. Observations are selected by type,
 * category and code; a reading's devices, patients and audit events go with it when their type is listed and, for a
 * reading with observations, when at least one of its observations does (a Device or Patient is delivered where the
 * readings that reference it are).
 */
export function filterReading(f: DestinationFilter, t: Reading): Reading | undefined {
  const allowed = (type: Resource['resourceType']) => !f.resourceTypes || f.resourceTypes.includes(type);
  const observations = allowed('Observation') ? t.observations.filter((o) => observationMatches(f, o)) : [];
  const alongside = t.observations.length === 0 || observations.length > 0;
  const devices = alongside && allowed('Device') ? t.devices : [];
  const patients = alongside && allowed('Patient') ? t.patients : undefined;
  const auditEvents = alongside && allowed('AuditEvent') ? t.auditEvents : undefined;
  if (!observations.length && !devices.length && !patients?.length && !auditEvents?.length) return undefined;
  if (observations.length === t.observations.length && devices === t.devices && patients === t.patients && auditEvents === t.auditEvents)
    return t;
  const out: Reading = { ...t, observations, devices };
  if (patients) out.patients = patients;
  else delete out.patients;
  if (auditEvents) out.auditEvents = auditEvents;
  else delete out.auditEvents;
  return out;
}

/** The jobs a destination gets: each job's readings through its filter; jobs left empty are dropped. */
export function jobsForDestination(f: DestinationFilter, jobs: DeliveryJob[], route: RouteInfo = {}): DeliveryJob[] {
  if (!anyIn(f.sendingFacilities, [route.sendingFacility])) return [];
  const out: DeliveryJob[] = [];
  for (const job of jobs) {
    if (!anyIn(f.adapters, [job.adapterId]) || !anyIn(f.channels, [job.channel])) continue;
    const translations = job.translations.map((t) => filterReading(f, t)).filter((t): t is Reading => !!t);
    if (translations.length)
      out.push(
        translations.length === job.translations.length && translations.every((t, i) => t === job.translations[i])
          ? job
          : { ...job, translations },
      );
  }
  return out;
}

export class DestinationQueues implements JobQueue {
  /** Each queue's group commit: concurrent messages share one write per round trip (queue/group-commit.ts). */
  private readonly groups = new Map<DeliveryQueue, GroupCommit>();

  /**
   * @param options.combineReadings messages written together are combined into jobs of up to this many readings
   *   (queue/group-commit.ts; INGEST_COMBINE); 0 or absent: one job per message.
   */
  constructor(
    readonly routes: RoutedQueue[],
    options: { combineReadings?: number } = {},
  ) {
    for (const r of routes)
      if (!this.groups.has(r.queue)) this.groups.set(r.queue, new GroupCommit(r.queue, undefined, options.combineReadings ?? 0));
  }

  /** Round trips, the messages they carried, and the jobs combined batches wrote, summed over the destination queues. */
  groupStats(): { batches: number; requests: number; largest: number; combined: number } {
    const all = [...this.groups.values()].map((g) => g.stats);
    return {
      batches: all.reduce((n, s) => n + s.batches, 0),
      requests: all.reduce((n, s) => n + s.requests, 0),
      largest: Math.max(0, ...all.map((s) => s.largest)),
      combined: all.reduce((n, s) => n + s.combined, 0),
    };
  }

  /** The first destination's queue (the `ehr` one without a destinations file). */
  get primary(): RoutedQueue {
    return this.routes[0];
  }

  get(name: string): RoutedQueue | undefined {
    return this.routes.find((r) => r.destination.name === name);
  }

  isReady(): boolean {
    return this.routes.every((r) => r.queue.isReady());
  }

  /**
   * Queues every destination's share at once and resolves with the job ids (deduplicated: the same content has the same
   * id in every queue) once all are in Redis. One refusal refuses the message: the sender resends, and the queues that
   * took it recognise the jobs. Messages arriving while a queue's write is in flight are written together in its next one.
   */
  async enqueue(jobs: DeliveryJob[], route: RouteInfo = {}): Promise<string[]> {
    const shares = this.routes
      .filter((r) => r.destination.type !== 'subscriber')
      .map((r) => ({ r, jobs: jobsForDestination(r.destination.filter, jobs, route) }))
      .filter((s) => s.jobs.length);
    const results = await Promise.allSettled(shares.map((s) => (this.groups.get(s.r.queue) ?? new GroupCommit(s.r.queue)).enqueue(s.jobs)));
    const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed) {
      const err = failed.reason;
      if (err instanceof GatewayError) {
        const i = results.indexOf(failed);
        err.message = `destination '${shares[i].r.destination.name}': ${err.message}`;
      }
      throw err;
    }
    return [...new Set(results.flatMap((x) => (x.status === 'fulfilled' ? x.value : [])))];
  }

  /** A device update or held data: to every destination whose filter takes it, each under a fresh id. */
  async requeue(job: DeliveryJob): Promise<string> {
    const ids: string[] = [];
    for (const r of this.routes) {
      if (r.destination.type === 'subscriber') continue;
      const [mine] = jobsForDestination(r.destination.filter, [job]);
      if (mine) ids.push(await r.queue.requeue(mine));
    }
    return ids[0] ?? '';
  }

  close(): Promise<void> {
    return Promise.all(this.routes.map((r) => r.queue.close())).then(() => undefined);
  }
}

/**
 * A subscriber's job: what its source destination wrote (each Observation with the id the destination gave it), with
 * the event number of its first Observation (the others follow in order).
 */
export interface NotificationJob extends DeliveryJob {
  firstEvent: number;
  /** When the source destination had written it: the events' timestamp. */
  deliveredAt?: string;
}

/** The Redis key of a subscriber's event counter: the events since the subscription started. */
export const subscriberEventsKey = (name: string) => `gw:sub:${name}:events`;
/** A notification numbered but not queued (the subscriber's queue was full): its source job's retries skip it. */
const subscriberDroppedKey = (name: string, jobId: string) => `gw:sub:${name}:dropped:${jobId}`;
/** How long a dropped notification is remembered: longer than a source job is retried. */
const DROPPED_MEMORY_S = 7 * 24 * 3600;

/**
 * Feeds subscribers. When a FHIR destination has written a job, the worker hands the written readings here (before it
 * completes the job): each subscriber following that destination gets the part its filter lets through, in its own
 * queue, numbered. If that fails (Redis), the destination's job fails and is retried: its writes are conditional, so
 * the retry finds what it wrote, and the notification job, whose id is derived from the content, is queued once.
 *
 * A subscriber's queue is bounded by QUEUE_MAX_DEPTH as every queue is, but there is no sender to refuse here, and
 * refusing would hold up the destination the subscriber follows. So a notification that finds the queue full is not
 * queued: its events are still numbered, and the subscriber sees the gap in `event-number` and
 * `events-since-subscription-start` (the IG's way to tell a consumer it missed events, which it then reads from the
 * FHIR destination). `onDropped` is told (a counter and a warning). Without the bound, a subscriber down for days
 * would fill Redis, and a Redis that refuses writes refuses every device's readings.
 */
export class SubscriberFeed {
  constructor(
    private readonly routes: RoutedQueue[],
    private readonly options: { onDropped?: (subscriber: string, events: number, depth: number) => void } = {},
  ) {}

  /** The subscribers following a destination. */
  following(source: string): RoutedQueue[] {
    return this.routes.filter((r) => r.destination.subscriber?.source === source);
  }

  /** Queues the written job for every subscriber following `source`; resolves once each has it in Redis. */
  async delivered(source: string, job: DeliveryJob): Promise<void> {
    await Promise.all(this.following(source).map((r) => this.notify(r, job)));
  }

  private async notify(r: RoutedQueue, job: DeliveryJob): Promise<void> {
    const [mine] = jobsForDestination(r.destination.filter, [job]);
    const events = mine?.translations.reduce((n, t) => n + t.observations.length, 0) ?? 0;
    if (!mine || !events) return;
    const bull = r.queue.bull;
    const jobId = jobIdFor(mine);
    const name = r.destination.name;
    const droppedKey = subscriberDroppedKey(name, jobId);
    // Queued already, or numbered and not queued (a retry of the source's job): its events keep their numbers.
    const [queued, dropped] = await Promise.all([bull.getJob(jobId), r.queue.redis.exists(droppedKey)]);
    if (queued || dropped) return;
    const depth = await r.queue.depth();
    const last = await r.queue.redis.incrby(subscriberEventsKey(name), events);
    if (depth + 1 > r.queue.settings.maxDepth) {
      // Remembered as long as a completed notification is, so that a retry of the source's job does not number it again.
      await r.queue.redis.set(droppedKey, String(last), 'EX', DROPPED_MEMORY_S);
      this.options.onDropped?.(name, events, depth);
      return;
    }
    const data: NotificationJob = { ...mine, firstEvent: last - events + 1, deliveredAt: new Date().toISOString() };
    await bull.add(data, { jobId });
    r.queue.noteAdded(1);
  }
}
