/**
 * What the gateway says about itself: GET /api/status, GET /metrics (operators) and the readiness check behind
 * /readyz. It reads every part, so it lives in the composition root.
 */
import express, { type RequestHandler, type Router } from 'express';
import type { AdapterRegistry } from '../adapters/registry.js';
import type { Config } from '../config/index.js';
import type { DeadLetterStore } from '../delivery/dead-letters.js';
import type { EhrClient } from '../delivery/ehr-client.js';
import type { Metrics } from '../observability/metrics.js';
import { withoutCredentials } from '../observability/redact.js';
import type { DeliveryQueue } from '../queue/queue.js';

export interface StatusDeps {
  config: Config;
  version: string;
  registry: AdapterRegistry;
  queue: DeliveryQueue;
  deadLetters: DeadLetterStore;
  ehr: () => EhrClient | undefined;
  metrics: Metrics;
  operatorOnly: RequestHandler;
}

export function statusRoutes(deps: StatusDeps): Router {
  const { config, queue, deadLetters, metrics } = deps;
  const router = express.Router();
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
      adapters: deps.registry.list().map((a) => a.id),
    });
  });
  return router;
}

/** The readiness problems of this process: Redis, and (roles that deliver) the EHR, checked at most every 2 s. */
export function readiness(queue: DeliveryQueue, ehr: () => EhrClient | undefined, delivers: boolean): () => Promise<string[]> {
  let ehrCheck = { at: 0, error: undefined as string | undefined };
  return async () => {
    const problems: string[] = [];
    if (!queue.isReady()) problems.push('Redis is not reachable');
    const client = ehr();
    if (delivers && client) {
      if (Date.now() - ehrCheck.at > 2000) {
        const error = await client.ping().then(
          () => undefined,
          (e: Error) => e.message,
        );
        ehrCheck = { at: Date.now(), error };
      }
      if (ehrCheck.error) problems.push(`EHR: ${ehrCheck.error}`);
    }
    return problems;
  };
}
