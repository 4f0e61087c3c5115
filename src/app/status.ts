/**
 * What the gateway says about itself: GET /api/status, GET /metrics (operators) and the readiness check behind
 * /readyz. It reads every part, so it lives in the composition root.
 */
import express, { type RequestHandler, type Router } from 'express';
import type { AdapterRegistry } from '../adapters/registry.js';
import { BREAKER_STATES, type BreakerSnapshot } from '../delivery/breaker.js';
import type { DeliveryState, DestinationState } from './deliveries.js';
import type { Config } from '../config/index.js';
import type { DeadLetterStore } from '../delivery/dead-letters.js';
import type { EhrClient } from '../delivery/ehr-client.js';
import type { Metrics, Sample } from '../observability/metrics.js';
import { withoutCredentials } from '../observability/redact.js';
import { type DeliveryQueue, withTimeout } from '../queue/queue.js';
import type { DestinationQueues } from '../queue/routing.js';
import type { Destination } from '../config/destinations.js';

/** One destination as the status routes read it. */
export interface DestinationView {
  destination: Destination;
  queue: DeliveryQueue;
  ehr: EhrClient;
  deadLetters: DeadLetterStore;
}

export type { DeliveryState, DestinationState } from './deliveries.js';

export interface StatusDeps {
  config: Config;
  version: string;
  registry: AdapterRegistry;
  queues: DestinationQueues;
  deadLetters: Map<string, DeadLetterStore>;
  /** Every destination (set once the HTTP server listens: the sandbox's URL is known then). */
  deliveries: () => DestinationView[];
  /** The destinations this process delivers to (none in the ingest role). */
  delivering: DeliveryState;
  /** Role all's delivery thread, when delivery runs on one. */
  deliveryThread?: () => { running: boolean; restarts: number };
  metrics: Metrics;
  operatorOnly: RequestHandler;
}

const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed'] as const;

/** A destination's breaker as /api/status has always shown it (`breakerEnabled`, `waitingJobs`). */
function breakerFields({ enabled, ...b }: DestinationState['breaker']): Record<string, unknown> {
  return { ...b, breakerEnabled: enabled };
}

/** What a breaker snapshot says, for /readyz (no counters: the route needs no credential). */
function briefly(b: BreakerSnapshot): Record<string, unknown> {
  return { state: b.state, since: b.since, lastError: b.lastError, nextProbeAt: b.nextProbeAt };
}

export function statusRoutes(deps: StatusDeps): Router {
  const { config, queues, metrics } = deps;
  const queue = queues.primary.queue;
  const router = express.Router();
  // What the process holds (docs/scaling.md, Memory): watch the resident memory for a slope.
  metrics.gauge('process_resident_memory_bytes', () => process.memoryUsage.rss());
  metrics.gauge('process_heap_used_bytes', () => process.memoryUsage().heapUsed);
  // Prometheus state set: one series per state, 1 for the current one.
  metrics.gaugeFamily('destination_breaker_state', async () =>
    (await deps.delivering()).flatMap(({ breaker: b }) =>
      BREAKER_STATES.map((state) => ({ labels: { destination: b.destination, state }, value: +(b.state === state) })),
    ),
  );
  metrics.gaugeFamily('destination_breaker_waiting_jobs', async () =>
    (await deps.delivering()).map(({ breaker: b }) => ({ labels: { destination: b.destination }, value: b.waitingJobs })),
  );
  // Read from Redis at scrape time (a few LLEN/ZCARD and two reads per queue), skipped while it is down, each queue's
  // bounded in time. Every destination's queue (a subscriber's too): with several, each fills and drains on its own. A
  // queue whose read fails is left out of this scrape; the others still answer.
  const perQueue = async <T>(read: (q: DeliveryQueue) => Promise<T>, samples: (destination: string, v: T) => Sample[]) => {
    if (!queue.isReady()) throw new Error('Redis is not reachable');
    const all = await Promise.all(
      queues.routes.map(async (r) => {
        const v = await withTimeout(read(r.queue), 1000, 'Redis did not answer').catch(() => undefined);
        return v === undefined ? [] : samples(r.destination.name, v);
      }),
    );
    return all.flat();
  };
  metrics.gaugeFamily('queue_jobs', () =>
    perQueue(
      (q) => q.counts(),
      (destination, c) => QUEUE_STATES.map((state) => ({ labels: { destination, state }, value: c[state] ?? 0 })),
    ),
  );
  metrics.gaugeFamily('queue_oldest_waiting_age_seconds', () =>
    perQueue(
      (q) => q.oldestWaitingAgeSeconds(),
      (destination, age) => [{ labels: { destination }, value: age }],
    ),
  );
  router.get('/metrics', deps.operatorOnly, async (_req, res) => {
    res.type('text/plain; version=0.0.4').send(await metrics.render());
  });
  router.get('/api/status', deps.operatorOnly, async (_req, res) => {
    const ready = queue.isReady();
    let deliveryError: string | undefined;
    const states = await deps.delivering().catch((err: Error) => {
      deliveryError = err.message;
      return [];
    });
    const delivering = new Map(states.map((d) => [d.breaker.destination, d]));
    const destinations = await Promise.all(
      deps.deliveries().map(async (d) => {
        const counts = ready ? await d.queue.counts().catch(() => undefined) : undefined;
        const dead = ready ? await d.deadLetters.count().catch(() => undefined) : undefined;
        const state = delivering.get(d.destination.name);
        const written = state?.writeMode;
        return {
          ...(state ? breakerFields(state.breaker) : { destination: d.destination.name }),
          baseUrl: withoutCredentials(d.ehr.baseUrl),
          sandbox: d.destination.sandbox,
          writeMode: written?.mode ?? d.destination.writeMode ?? null,
          writeModeSource: written?.source ?? (d.destination.writeMode ? 'configured' : null),
          queue: counts ? { name: d.queue.settings.queueName, ...counts, maxDepth: config.queueMaxDepth } : null,
          deadLetters: dead ?? null,
        };
      }),
    );
    const primary = destinations[0];
    res.json({
      version: deps.version,
      role: config.role,
      fhirBaseUrl: primary?.baseUrl || null,
      sandbox: config.sandbox,
      unknownPatientPolicy: config.unknownPatientPolicy,
      redis: { status: ready ? 'ready' : queue.connectionStatus(), embedded: !config.redisUrl && !config.redisSentinels.length },
      // The first destination's queue and dead letters, as before there were several; each one's under destinations.
      queue: primary?.queue ?? null,
      deadLetters: primary?.deadLetters ?? null,
      destinations,
      // Role all with DELIVERY_THREAD: whether the thread runs, and how often it was started again.
      ...(deps.deliveryThread ? { deliveryThread: { ...deps.deliveryThread(), ...(deliveryError ? { error: deliveryError } : {}) } } : {}),
      adapters: deps.registry.list().map((a) => a.id),
    });
  });
  return router;
}

/**
 * The readiness of this process: Redis must be reachable (ingest needs it to acknowledge anything). The EHR is not a
 * readiness condition: while it is down the gateway still accepts and queues readings, which is what its queue is
 * for. What a delivering process knows of the EHR is said beside: each destination's circuit breaker and, while the
 * breaker is closed, whether /metadata answers (asked at most every 2 s; never while the breaker is open, so that
 * readiness checks add no requests to an EHR that is down).
 */
export function readiness(
  queues: DestinationQueues,
  deliveries: () => DestinationView[],
  delivering: DeliveryState,
  delivers: boolean,
  /** Asks a destination's /metadata: through the client that delivers to it (role all's thread: there). */
  ping: (destination: string) => Promise<void> = (name) =>
    deliveries()
      .find((d) => d.destination.name === name)
      ?.ehr.ping() ?? Promise.resolve(),
): () => Promise<{ problems: string[]; details?: Record<string, unknown> }> {
  const checks = new Map<string, { at: number; error?: string }>();
  return async () => {
    const problems: string[] = [];
    if (!queues.isReady()) problems.push('Redis is not reachable');
    if (!delivers) return { problems };
    const warnings: string[] = [];
    // Role all's delivery thread that does not run (it is being started again) or answer: readings are still accepted
    // and queued, so ready, with the reason; and no destination is pinged while its breaker state is unknown.
    const states = await delivering().catch((err: Error) => {
      warnings.push(`${err.message}: readings are queued, not delivered`);
      return undefined;
    });
    const destinations = Object.fromEntries((states ?? []).map(({ breaker: b }) => [b.destination, briefly(b)]));
    // Each destination is asked on its own, at once: one that does not answer does not delay the others' answer.
    await Promise.all(
      (states ? deliveries() : []).map(async ({ destination }) => {
        if ((destinations[destination.name]?.state ?? 'closed') !== 'closed') return;
        let check = checks.get(destination.name);
        if (!check || Date.now() - check.at > 2000) {
          const error = await ping(destination.name).then(
            () => undefined,
            (e: Error) => e.message,
          );
          check = { at: Date.now(), error };
          checks.set(destination.name, check);
        }
        if (check.error) warnings.push(`${destination.name === 'ehr' ? 'EHR' : `destination '${destination.name}'`}: ${check.error}`);
      }),
    );
    for (const [name, b] of Object.entries(destinations))
      if (b.state !== 'closed')
        warnings.push(`destination '${name}': circuit breaker ${String(b.state)} (${String(b.lastError)}); readings are queued`);
    return { problems, details: { destinations, ...(warnings.length ? { warnings } : {}) } };
  };
}
