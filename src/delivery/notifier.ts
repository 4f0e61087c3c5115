/**
 * Subscribers: clinical systems notified as the FHIR Subscriptions R5 Backport IG's rest-hook channel does, for FHIR R4
 * (http://hl7.org/fhir/uv/subscriptions-backport/). A notification is a Bundle of type `history` whose first entry is
 * the subscription status, a `Parameters` resource (profile backport-subscription-status-r4): `subscription`, `topic`,
 * `status`, `type` (`event-notification` or `heartbeat`), `events-since-subscription-start` and, per event, a
 * `notification-event` with `event-number`, `timestamp` and `focus`. The entry's request is `GET
 * Subscription/<id>/$status` (a history Bundle needs one, bdl-3/bdl-4). The other entries are the focus Observations:
 * their fullUrl on the FHIR destination the subscriber follows, a `POST Observation` request and a 201 response, and
 * with `full-resource` the resource itself.
 *
 * Each event is one Observation written to the destination the subscriber follows (its `source`): the subscriber's jobs
 * are queued when that destination has written them (queue/routing.ts SubscriberFeed), so the references resolve there.
 * Event numbers are given when the job is queued and kept across retries and replays: a consumer recognises a
 * notification it has seen.
 *
 * The notification goes through the worker like a FHIR write (worker.ts): its own queue, retries with backoff for 5xx,
 * 408, 429 and timeouts, a dead letter at once for other 4xx, the subscriber's own circuit breaker. Heartbeats are not
 * queued: each worker process has a timer, and the first to find the subscriber quiet for a whole period (a Redis key
 * that every notification renews) sends one.
 */
import type { Bundle, BundleEntry, Observation, Parameters, ParametersParameter } from 'fhir/r4';
import type { RedisClient } from '../queue/connection.js';
import type { SubscriberSettings } from '../config/destinations.js';
import { deterministicUuid } from '../core/ids.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { QueuedJob } from '../queue/queue.js';
import { type NotificationJob, subscriberEventsKey } from '../queue/routing.js';
import type { ReadingResult } from './attempt.js';
import type { CircuitBreaker } from './breaker.js';
import { EhrClient, EhrError } from './ehr-client.js';
import { PermanentError } from './errors.js';
import type { JobAttempts } from './worker.js';

/** The Backport IG's profile of the R4 subscription status. */
export const SUBSCRIPTION_STATUS_PROFILE =
  'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4';
/** The Backport IG's profile of an R4 notification Bundle. */
export const NOTIFICATION_PROFILE =
  'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4';

/** One event of a notification: its number, when it happened and the Observation it is about. */
export interface NotificationEvent {
  eventNumber: number;
  timestamp: string;
  /** The Observation's absolute URL on the source destination. */
  focus: string;
  resource?: Observation;
}

/** The notification Bundle (see the file's comment). */
export function notificationBundle(
  s: Pick<SubscriberSettings, 'subscription' | 'topic' | 'payload'>,
  type: 'event-notification' | 'heartbeat',
  eventsSinceStart: number,
  events: NotificationEvent[],
  now = new Date(),
): Bundle {
  const parameter: ParametersParameter[] = [
    { name: 'subscription', valueReference: { reference: s.subscription } },
    { name: 'topic', valueCanonical: s.topic },
    { name: 'status', valueCode: 'active' },
    { name: 'type', valueCode: type },
    // A string in R4 (an integer64 in R5).
    { name: 'events-since-subscription-start', valueString: String(eventsSinceStart) },
    ...events.map((e) => ({
      name: 'notification-event',
      part: [
        { name: 'event-number', valueString: String(e.eventNumber) },
        { name: 'timestamp', valueInstant: e.timestamp },
        { name: 'focus', valueReference: { reference: e.focus } },
      ],
    })),
  ];
  const status: Parameters = { resourceType: 'Parameters', meta: { profile: [SUBSCRIPTION_STATUS_PROFILE] }, parameter };
  const first = events[0]?.eventNumber ?? 0;
  const seed = `${s.subscription}|${type}|${eventsSinceStart}|${first}|${now.toISOString()}`;
  const entry: BundleEntry[] = [
    {
      fullUrl: `urn:uuid:${deterministicUuid(seed, 'status')}`,
      resource: status,
      request: { method: 'GET', url: `${s.subscription}/$status` },
      response: { status: '200' },
    },
    ...events.map(
      (e): BundleEntry => ({
        fullUrl: e.focus,
        ...(s.payload === 'full-resource' && e.resource ? { resource: e.resource } : {}),
        request: { method: 'POST', url: 'Observation' },
        response: { status: '201' },
      }),
    ),
  ];
  return {
    resourceType: 'Bundle',
    id: deterministicUuid(seed, 'bundle'),
    meta: { profile: [NOTIFICATION_PROFILE] },
    type: 'history',
    timestamp: now.toISOString(),
    entry,
  };
}

/**
 * The HTTP client of a subscriber's endpoint: an EhrClient for its timeout, its classification of failures and its
 * circuit breaker, that POSTs notification Bundles with the configured headers.
 */
export class SubscriberClient extends EhrClient {
  constructor(
    private readonly endpoint: string,
    private readonly headers: Record<string, string>,
    timeoutMs: number,
    metrics: Metrics | undefined,
    breaker: CircuitBreaker,
  ) {
    super({ baseUrl: endpoint, timeoutMs, metrics }, breaker);
  }

  /** POSTs a notification; a failure is an EhrError (retryable or not) naming the subscriber. */
  async notify(bundle: Bundle): Promise<void> {
    const name = this.breaker?.destination ?? 'subscriber';
    try {
      await this.request(`notification to subscriber '${name}'`, async ({ signal }) => {
        const res = await fetch(this.endpoint, {
          method: 'POST',
          headers: { ...this.headers, 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
          body: JSON.stringify(bundle),
          signal,
        });
        const text = await res.text();
        if (res.ok) return undefined;
        let data: unknown;
        try {
          data = JSON.parse(text);
        } catch {
          data = undefined;
        }
        // The shape classify() reads (fhir-kit-client's errors).
        throw Object.assign(new Error(`HTTP ${res.status}`), { response: { status: res.status, data }, config: { headers: res.headers } });
      });
    } catch (err) {
      if (err instanceof EhrError) err.message = err.message.replace(/\bthe EHR\b|\bEHR\b/, 'the subscriber');
      throw err;
    }
  }

  /** A subscriber has no /metadata: its readiness is its circuit breaker's state. */
  override async ping(): Promise<void> {}
}

/** Notifies one subscriber: the worker's attempt of a subscriber's job, and the heartbeat timer. */
export class Notifier implements JobAttempts {
  private timer?: NodeJS.Timeout;
  private readonly quietKey: string;

  constructor(
    private readonly name: string,
    private readonly settings: SubscriberSettings,
    private readonly client: SubscriberClient,
    private readonly redis: RedisClient,
    /** The base URL of the FHIR destination the subscriber follows (where the focus Observations are). */
    private readonly sourceBaseUrl: () => string,
    private readonly log: Logger,
  ) {
    this.quietKey = `gw:sub:${name}:quiet`;
  }

  private get periodMs(): number | undefined {
    return this.settings.heartbeatSeconds ? this.settings.heartbeatSeconds * 1000 : undefined;
  }

  /** The events of a job: one per Observation, numbered from the job's first, with its URL on the source. */
  events(job: NotificationJob): NotificationEvent[] {
    const base = this.sourceBaseUrl().replace(/\/+$/, '');
    const at = job.deliveredAt ?? job.receivedAt;
    return job.translations
      .flatMap((t) => t.observations)
      .map((o, i) => ({ eventNumber: job.firstEvent + i, timestamp: at, focus: `${base}/Observation/${o.id}`, resource: o }));
  }

  async attempt(job: QueuedJob): Promise<ReadingResult[]> {
    const data = job.data as NotificationJob;
    const events = this.events(data);
    const since = Number(await this.redis.get(subscriberEventsKey(this.name))) || events[events.length - 1]?.eventNumber || 0;
    const bundle = notificationBundle(this.settings, 'event-notification', since, events);
    try {
      await this.client.notify(bundle);
    } catch (err) {
      if (err instanceof EhrError && !err.retryable) throw new PermanentError(err.message, 'rejected', err);
      throw err;
    }
    await this.quiet();
    return data.translations.map((t) => ({ transactionEntries: bundle.entry?.length ?? 0, observations: t.observations.length }));
  }

  /** Something was sent: no heartbeat for a whole period from now. */
  private async quiet(): Promise<void> {
    const ms = this.periodMs;
    if (ms) await this.redis.set(this.quietKey, '1', 'PX', ms).catch(() => undefined);
  }

  /** Sends a heartbeat if nothing was sent to this subscriber by any process for a whole period. */
  async heartbeat(): Promise<boolean> {
    const ms = this.periodMs;
    if (!ms || this.client.breaker?.state === 'open') return false;
    const claimed = await this.redis.set(this.quietKey, '1', 'PX', ms, 'NX').catch(() => null);
    if (claimed !== 'OK') return false;
    const since = Number(await this.redis.get(subscriberEventsKey(this.name))) || 0;
    try {
      await this.client.notify(notificationBundle(this.settings, 'heartbeat', since, []));
      this.log.debug({ destination: this.name, eventsSinceSubscriptionStart: since }, 'heartbeat sent');
      return true;
    } catch (err) {
      this.log.warn({ destination: this.name, error: (err as Error).message }, 'heartbeat not delivered');
      return false;
    }
  }

  start(): void {
    const ms = this.periodMs;
    if (!ms || this.timer) return;
    // The first period starts now: a heartbeat is for a subscriber that has heard nothing for a period.
    void this.quiet();
    this.timer = setInterval(() => void this.heartbeat(), Math.max(250, Math.floor(ms / 4)));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
