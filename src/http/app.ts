/**
 * The express app: health and readiness, the ingest API, the operations API (status, dead letters, adapters), metrics,
 * and the sandbox EHR when no EHR is configured. Every refusal is an OperationOutcome.
 */
import express, { type Router } from 'express';
import helmet from 'helmet';
import type { Config, Role } from '../config/index.js';
import type { AdapterRegistry } from '../adapters/registry.js';
import type { Ingestor } from '../pipeline/pipeline.js';
import type { DeliveryQueue } from '../queue/queue.js';
import type { DeadLetterStore } from '../delivery/dead-letters.js';
import type { EhrClient } from '../delivery/ehr-client.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { SandboxEhr } from '../sandbox/sandbox.js';
import { notFound, outcome, issue, GatewayError, unavailable } from '../core/errors.js';
import { errorHandler, notFoundHandler, requireJson } from './errors.js';
import type { AccessControl } from '../access/auth.js';
import { RefusedStore } from '../pipeline/refused.js';
import { withoutCredentials } from '../observability/redact.js';

export interface AppDeps {
  config: Config;
  role: Role;
  version: string;
  registry: AdapterRegistry;
  pipeline?: Ingestor;
  queue: DeliveryQueue;
  deadLetters: DeadLetterStore;
  ehr: () => EhrClient | undefined;
  metrics: Metrics;
  log: Logger;
  sandbox?: SandboxEhr;
  access: AccessControl;
  /** Routers of other features (HL7v2, adapters API, devices), mounted after the core routes. */
  routers?: Router[];
}

/** ?offset=&limit= of the list routes: limit 1..500, default 100. */
function page(query: Record<string, unknown>): { offset: number; limit: number } {
  return {
    offset: Math.max(0, Number(query.offset ?? 0) || 0),
    limit: Math.min(500, Math.max(1, Number(query.limit ?? 100) || 100)),
  };
}

export function createApp(deps: AppDeps): express.Express {
  const { config, queue, deadLetters, metrics, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(helmet());

  app.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));

  let ehrCheck = { at: 0, error: undefined as string | undefined };
  app.get('/readyz', async (_req, res) => {
    const problems: string[] = [];
    if (!queue.isReady()) problems.push('Redis is not reachable');
    const ehr = deps.ehr();
    if (deps.role !== 'ingest' && ehr) {
      if (Date.now() - ehrCheck.at > 2000) {
        const error = await ehr.ping().then(() => undefined, (e: Error) => e.message);
        ehrCheck = { at: Date.now(), error };
      }
      if (ehrCheck.error) problems.push(`EHR: ${ehrCheck.error}`);
    }
    if (problems.length) {
      res.status(503).setHeader('Retry-After', '5');
      return void res.type('application/fhir+json').json(outcome(problems.map((p) => issue('transient', p))));
    }
    res.json({ status: 'ready' });
  });

  if (deps.sandbox) app.use('/sandbox/fhir', deps.sandbox.router);

  const { access } = deps;
  const ops = access.require('operator');
  const refused = new RefusedStore(queue.redis);
  const requireRedis = () => {
    if (!queue.isReady()) throw unavailable('Redis is not reachable', 5);
  };
  const json = express.json({ limit: config.ingestMaxBodyBytes, type: ['application/json', 'application/fhir+json', 'application/*+json'] });

  app.get('/metrics', ops, async (_req, res) => {
    res.type('text/plain; version=0.0.4').send(await metrics.render());
  });

  if (deps.pipeline) {
    const pipeline = deps.pipeline;
    app.post('/ingest/:adapter', access.require('device', 'vendor'), requireJson, json, async (req, res) => {
      if (req.body === undefined) throw new GatewayError(400, outcome([issue('required', 'the body is empty')]));
      const message = {
        body: req.body as unknown,
        channel: 'http',
        receivedAt: new Date().toISOString(),
        attributes: { remoteAddress: req.socket.remoteAddress ?? '' },
        principal: req.principal,
      };
      const adapterId = String(req.params.adapter);
      try {
        const result = await pipeline.ingest(adapterId, message);
        res.status(202).json({ jobIds: result.jobIds, readings: result.translations.length, observations: result.observations });
      } catch (err) {
        // Keep what could not be mapped (unknown adapter, translation or validation errors) for inspection and replay.
        if (err instanceof GatewayError && (err.status === 404 || err.status === 422) && queue.isReady()) {
          const id = await refused.add({ adapterId, channel: 'http', receivedAt: message.receivedAt, status: err.status, outcome: err.outcome, body: message.body, attributes: message.attributes, principal: message.principal }).catch(() => undefined);
          if (id) res.setHeader('X-Refused-Id', id);
        }
        throw err;
      }
    });

    app.get('/api/refused', ops, async (req, res) => {
      requireRedis();
      const { offset, limit } = page(req.query);
      res.json(await refused.list(offset, limit));
    });
    app.get('/api/refused/:id', ops, async (req, res) => {
      requireRedis();
      const r = await refused.get(String(req.params.id));
      if (!r) throw notFound(`no refused payload '${req.params.id}'`);
      res.json(r);
    });
    app.post('/api/refused/:id/replay', ops, async (req, res) => {
      requireRedis();
      const id = String(req.params.id);
      const r = await refused.get(id);
      if (!r) throw notFound(`no refused payload '${id}'`);
      // Replayed as its original sender sent it (same adapter, same credential's rights), through the whole pipeline.
      const result = await pipeline.ingest(r.adapterId, { body: r.body, channel: r.channel, receivedAt: r.receivedAt, attributes: { ...r.attributes, replayOf: id }, principal: r.principal });
      await refused.delete(id);
      log.info({ refused: id, jobs: result.jobIds.length }, 'refused payload replayed');
      res.status(202).json({ jobIds: result.jobIds, readings: result.translations.length, observations: result.observations });
    });
    app.delete('/api/refused/:id', access.require(), async (req, res) => {
      requireRedis();
      if (!(await refused.delete(String(req.params.id)))) throw notFound(`no refused payload '${req.params.id}'`);
      res.status(204).end();
    });
  }

  app.get('/api/status', ops, async (_req, res) => {
    const redis = queue.isReady() ? 'ready' : queue.bull.client.status;
    const counts = queue.isReady() ? await queue.counts().catch(() => undefined) : undefined;
    const dead = queue.isReady() ? await deadLetters.count().catch(() => undefined) : undefined;
    res.json({
      version: deps.version,
      role: deps.role,
      fhirBaseUrl: withoutCredentials(deps.ehr()?.baseUrl ?? config.fhirBaseUrl ?? '') || null,
      sandbox: config.sandbox,
      unknownPatientPolicy: config.unknownPatientPolicy,
      redis: { status: redis, embedded: !config.redisUrl },
      queue: counts ? { name: config.queueName, ...counts, maxDepth: config.queueMaxDepth } : null,
      deadLetters: dead ?? null,
      adapters: deps.registry.list().map((a) => a.id),
    });
  });

  // GET /api/adapters and the registration API: adapters/registration.ts.

  app.get('/api/dead-letters', ops, async (req, res) => {
    requireRedis();
    const { offset, limit } = page(req.query);
    res.json(await deadLetters.list(offset, limit));
  });
  app.get('/api/dead-letters/:id', ops, async (req, res) => {
    requireRedis();
    const d = await deadLetters.get(String(req.params.id));
    if (!d) throw notFound(`no dead letter '${req.params.id}'`);
    res.json(d);
  });
  app.post('/api/dead-letters/:id/retry', ops, async (req, res) => {
    requireRedis();
    const id = String(req.params.id);
    const d = await deadLetters.get(id);
    if (!d) throw notFound(`no dead letter '${id}'`);
    const jobId = await queue.requeue({ ...d.job, replayOf: id });
    await deadLetters.delete(id);
    log.info({ deadLetter: id, jobId }, 'dead letter replayed');
    res.status(202).json({ jobId });
  });
  app.delete('/api/dead-letters/:id', access.require(), async (req, res) => {
    requireRedis();
    if (!(await deadLetters.delete(String(req.params.id)))) throw notFound(`no dead letter '${req.params.id}'`);
    res.status(204).end();
  });

  for (const r of deps.routers ?? []) app.use(r);

  app.use(notFoundHandler);
  app.use(errorHandler(log));
  return app;
}
