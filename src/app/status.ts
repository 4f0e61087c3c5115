/**
 * What the gateway says about itself: GET /api/status, GET /metrics (operators) and the readiness check behind
 * /readyz. It reads every part, so it lives in the composition root.
 */
import express, { type RequestHandler, type Router } from 'express';
import type { AdapterRegistry } from '../adapters/registry.js';
import { BREAKER_STATES, type BreakerSnapshot, type CircuitBreaker } from '../delivery/breaker.js';
import type { Config } from '../config/index.js';
import type { DeadLetterStore } from '../delivery/dead-letters.js';
import type { EhrClient } from '../delivery/ehr-client.js';
import type { Metrics } from '../observability/metrics.js';
import { withoutCredentials } from '../observability/redact.js';
import { type DeliveryQueue, withTimeout } from '../queue/queue.js';

export interface StatusDeps {
  config: Config;
  version: string;
  registry: AdapterRegistry;
  queue: DeliveryQueue;
  deadLetters: DeadLetterStore;
  ehr: () => EhrClient | undefined;
  /** The circuit breakers of the destinations this process delivers to (none in the ingest role). */
  breakers: () => CircuitBreaker[];
  metrics: Metrics;
  operatorOnly: RequestHandler;
}

const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed'] as const;

/** What a breaker snapshot says, for /readyz (no counters: the route needs no credential). */
function briefly(b: BreakerSnapshot): Record<string, unknown> {
  return { state: b.state, since: b.since, lastError: b.lastError, nextProbeAt: b.nextProbeAt };
}

export function statusRoutes(deps: StatusDeps): Router {
  const { config, queue, deadLetters, metrics } = deps;
  const router = express.Router();
  // Prometheus state set: one series per state, 1 for the current one.
  metrics.gaugeFamily('destination_breaker_state', () =>
    deps
      .breakers()
      .flatMap((b) => BREAKER_STATES.map((state) => ({ labels: { destination: b.destination, state }, value: +(b.state === state) }))),
  );
  metrics.gaugeFamily('destination_breaker_waiting_jobs', () =>
    deps.breakers().map((b) => ({ labels: { destination: b.destination }, value: b.waiting })),
  );
  // Read from Redis at scrape time (a few LLEN/ZCARD and two reads), skipped while it is down or slow.
  const fromRedis = async <T>(read: () => Promise<T>): Promise<T> => {
    if (!queue.isReady()) throw new Error('Redis is not reachable');
    return withTimeout(read(), 1000, 'Redis did not answer');
  };
  metrics.gaugeFamily('queue_jobs', () =>
    fromRedis(() => queue.counts()).then((c) => QUEUE_STATES.map((state) => ({ labels: { state }, value: c[state] ?? 0 }))),
  );
  metrics.gauge('queue_oldest_waiting_age_seconds', () => fromRedis(() => queue.oldestWaitingAgeSeconds()));
  router.get('/metrics', deps.operatorOnly, async (_req, res) => {
    res.type('text/plain; version=0.0.4').send(await metrics.render());
  });
  router.get('/api/status', deps.operatorOnly, async (_req, res) => {
    const ready = queue.isReady();
    const counts = ready ? await queue.counts().catch(() => undefined) : undefined;
    const dead = ready ? await deadLetters.count().catch(() => undefined) : undefined;
    res.json({
      version: deps.version,
      role: config.role,
      fhirBaseUrl: withoutCredentials(deps.ehr()?.baseUrl ?? config.fhirBaseUrl ?? '') || null,
      sandbox: config.sandbox,
      unknownPatientPolicy: config.unknownPatientPolicy,
      redis: { status: ready ? 'ready' : queue.connectionStatus(), embedded: !config.redisUrl },
      queue: counts ? { name: config.queueName, ...counts, maxDepth: config.queueMaxDepth } : null,
      deadLetters: dead ?? null,
      destinations: deps.breakers().map((b) => ({ ...b.snapshot(), breakerEnabled: b.enabled, waitingJobs: b.waiting })),
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
  queue: DeliveryQueue,
  ehr: () => EhrClient | undefined,
  breakers: () => CircuitBreaker[],
  delivers: boolean,
): () => Promise<{ problems: string[]; details?: Record<string, unknown> }> {
  let ehrCheck = { at: 0, error: undefined as string | undefined };
  return async () => {
    const problems: string[] = [];
    if (!queue.isReady()) problems.push('Redis is not reachable');
    if (!delivers) return { problems };
    const warnings: string[] = [];
    const destinations = Object.fromEntries(breakers().map((b) => [b.destination, briefly(b.snapshot())]));
    const client = ehr();
    if (client && (client.breaker?.state ?? 'closed') === 'closed') {
      if (Date.now() - ehrCheck.at > 2000) {
        const error = await client.ping().then(
          () => undefined,
          (e: Error) => e.message,
        );
        ehrCheck = { at: Date.now(), error };
      }
      if (ehrCheck.error) warnings.push(`EHR: ${ehrCheck.error}`);
    }
    for (const [name, b] of Object.entries(destinations))
      if (b.state !== 'closed')
        warnings.push(`destination '${name}': circuit breaker ${String(b.state)} (${String(b.lastError)}); readings are queued`);
    return { problems, details: { destinations, ...(warnings.length ? { warnings } : {}) } };
  };
}
