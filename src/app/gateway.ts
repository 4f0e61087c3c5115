/**
 * The composition root: builds the parts for a role and starts/stops them in order.
 *   all    — ingest (HTTP, MLLP, MQTT) and delivery in one process (npm start); delivery on a thread of its own
 *            (DELIVERY_THREAD, delivery-thread.ts) where it may use two cores (core/cores.ts)
 *   ingest — receive, translate, validate, enqueue; no delivery
 *   worker — deliver queued jobs to the EHR; HTTP serves health, status and the operations API only
 * Any number of ingest and worker processes can share one Redis.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import type { Role } from '../config/index.js';
import type { Config } from '../config/index.js';
import { AdapterRegistry } from '../adapters/registry.js';
import type { DeviceAdapter } from '../core/contract.js';
import { Pipeline } from '../pipeline/pipeline.js';
import { readReadingChecks } from '../fhir/plausibility.js';
import { RefusalStore } from '../pipeline/refusals.js';
import { migrateLegacyRefusals } from '../pipeline/legacy-refusals.js';
import { refusalRoutes } from '../pipeline/routes.js';
import { type DeliveryQueue, withTimeout } from '../queue/queue.js';
import {
  createRedis,
  describeTarget,
  isCluster,
  masters,
  type RedisClient,
  type RedisTarget,
  reopenWhenEnded,
} from '../queue/connection.js';
import { EmbeddedRedis } from '../queue/embedded-redis.js';
import { DestinationQueues } from '../queue/routing.js';
import { DeadLetterStore } from '../delivery/dead-letters.js';
import { deadLetterRoutes } from '../delivery/routes.js';
import type { EhrClient } from '../delivery/ehr-client.js';
import type { DeliveryWorker } from '../delivery/worker.js';
import type { SandboxEhr } from '../sandbox/sandbox.js';
import { readSandboxClients } from '../sandbox/auth.js';
import { jwksRoutes, type PreparedEhrAuth, prepareEhrAuth } from '../ehr-auth/index.js';
import { createApp, withHotRoutes } from '../http/app.js';
import { errorHandler } from '../http/errors.js';
import { openApiRoutes } from '../http/openapi.js';
import { MEASUREMENTS_SCHEMA } from '../adapters/measurements-format.js';
import type { AccessControl } from '../access/auth.js';
import { protectedSandbox } from '../access/sandbox.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { withoutCredentials } from '../observability/redact.js';
import { initValidation } from '../fhir/validate.js';
import { type Console, ConsoleStats, createConsole, readConsoleConfig } from '../console/index.js';
import { buildFeatures, type Features } from './features.js';
import { readiness, statusRoutes } from './status.js';
import {
  type Delivery,
  type DeliveryState,
  deliveryClients,
  localDeliveryState,
  openQueues,
  type SandboxAccess,
  startWorkers,
} from './deliveries.js';
import { usableCores } from '../core/cores.js';
import { DeliveryThread, deliversOnThread } from './delivery-host.js';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;

/** A start-up failure the operator fixes by configuration: main.ts prints its one-line message and exits 1. */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

function portError(err: NodeJS.ErrnoException & { port?: number }, key: string, port: number | undefined): StartupError {
  const where = `${key}=${port ?? '?'}`;
  return err.code === 'EACCES'
    ? new StartupError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges); choose another ${key}`, {
        cause: err,
      })
    : new StartupError(
        `cannot listen on ${where}: the port is in use (another gateway or program listens there); stop it or set ${key} to a free port`,
        { cause: err },
      );
}

function listen(server: Server, port: number, host: string, key: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' || err.code === 'EACCES' ? portError(err, key, port) : err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

export type { Delivery } from './deliveries.js';

export interface GatewayOptions {
  logger?: Logger;
  /** Extra adapters (tests, benchmarks), registered before the features' adapters. */
  adapters?: DeviceAdapter[];
}

export class Gateway {
  readonly log: Logger;
  readonly metrics = new Metrics();
  readonly registry: AdapterRegistry;
  redis?: RedisClient;
  /** The queue of the first destination (`ehr` without a destinations file). */
  queue?: DeliveryQueue;
  /** Every destination's queue. */
  queues?: DestinationQueues;
  /** Every destination: its queue, client, dead letters and (in a delivering role) worker. */
  deliveries: Delivery[] = [];
  sandbox?: SandboxEhr;
  worker?: DeliveryWorker;
  /** Role all with DELIVERY_THREAD: the thread its workers run on (none of `deliveries` has a worker then). */
  deliveryThread?: DeliveryThread;
  ehr?: EhrClient;
  access?: AccessControl;
  refusals?: RefusalStore;
  features?: Features;
  /** What the console's overview counts (fed by the pipeline and the worker of this process). */
  readonly stats = new ConsoleStats();
  console?: Console;
  private server?: Server;
  private embedded?: EmbeddedRedis;
  private starting?: Promise<void>;
  private stopping?: Promise<void>;
  url = '';

  constructor(
    readonly config: Config,
    readonly role: Role = config.role,
    options: GatewayOptions = {},
  ) {
    this.log = options.logger ?? createLogger(config.logLevel, undefined, config.logFormat);
    this.registry = new AdapterRegistry();
    for (const a of options.adapters ?? []) this.registry.register(a);
  }

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const { config, log } = this;
    // First: a bad key or certificate file stops the start before anything runs.
    const ehrAuth = await prepareEhrAuth(config.ehrAuth);
    // Destinations of a DESTINATIONS_FILE with SMART, a client secret or mutual TLS: their keys and TLS files, read now.
    const destinationAuths = new Map<string, PreparedEhrAuth>();
    for (const d of config.destinations) if (d.ehrAuth) destinationAuths.set(d.name, await prepareEhrAuth(d.ehrAuth));
    // One JWKS for every key the gateway signs with (FHIR_SMART_KEYS and the file's SMART destinations).
    const jwks = [ehrAuth, ...destinationAuths.values()].flatMap((a) => a.keys?.jwks.keys ?? []);
    const publishedKeys = jwks.length ? { keys: [...new Map(jwks.map((k) => [k.kid, k])).values()] } : undefined;
    // The R4 definitions validate what a process ingests: indexed now where it ingests, so that the first reading does
    // not wait for them; a worker indexes them only if it validates something (fhir/validate.ts). With the sandbox on,
    // every resource type, which the sandbox then reuses (sandbox/sandbox.ts).
    if (this.role !== 'worker' || config.sandbox) initValidation({ allTypes: config.sandbox });
    let redisUrl = config.redisUrl;
    const sentinels = config.redisSentinels.length ? config.redisSentinels : undefined;
    const clusterNodes = config.redisClusterNodes.length ? config.redisClusterNodes : undefined;
    if (!redisUrl && !sentinels && !clusterNodes) {
      this.embedded = new EmbeddedRedis({ dataDir: config.redisDataDir, appendFsync: config.redisAppendFsync });
      redisUrl = await this.embedded.start();
      const shared = this.embedded.sharedWith;
      if (shared)
        log.info(
          { redis: redisUrl, dataDir: config.redisDataDir, redisPid: shared },
          'sharing the private redis-server another gateway process started on this data folder',
        );
      else
        log.info(
          { redis: redisUrl, dataDir: config.redisDataDir, appendfsync: config.redisAppendFsync },
          'started a private redis-server (AOF on); set REDIS_URL to use your own',
        );
    }
    const target: RedisTarget = { url: redisUrl, sentinels, sentinelName: config.redisSentinelName, clusterNodes };
    if (sentinels) log.info({ redis: describeTarget(target) }, 'Redis through Sentinel: following the master they name');
    if (clusterNodes)
      log.info({ redis: describeTarget(target) }, 'Redis Cluster: keys used together and each destination queue carry their own hash tag');
    // Auto-pipelining: the commands of one event-loop turn leave in one write (ingest issues several per message).
    // Each command is bounded (REDIS_COMMAND_TIMEOUT_MS): a Redis that is connected but does not answer fails it, and
    // the request that waited on it is answered 503 (http/errors.ts), instead of waiting for as long as Redis does.
    const redis = createRedis(target, {
      maxRetriesPerRequest: 2,
      enableAutoPipelining: true,
      ...(config.redisCommandTimeoutMs ? { commandTimeout: config.redisCommandTimeoutMs } : {}),
    });
    this.redis = redis;
    reopenWhenEnded(redis, () => this.stopping !== undefined);
    await this.checkRedis(redis);

    const routes = openQueues(config, target);
    const queues = new DestinationQueues(routes, { combineReadings: config.ingestCombine ? config.deliveryBatchMax : 0 });
    this.queues = queues;
    const queue = queues.primary.queue;
    this.queue = queue;
    await Promise.all(routes.map((r) => r.queue.whenReady()));
    const deadLetterStores = new Map(routes.map((r) => [r.destination.name, new DeadLetterStore(redis, r.destination.name)]));
    // Gauges read Redis: skipped while it is down, so that /metrics answers when it is needed most.
    for (const r of routes) {
      const whenReady =
        <T>(read: () => Promise<T>) =>
        async () => {
          if (!r.queue.isReady()) throw new Error('Redis is not reachable');
          return withTimeout(read(), 1000, 'Redis did not answer');
        };
      const label = `{destination="${r.destination.name}"}`;
      const store = deadLetterStores.get(r.destination.name) as DeadLetterStore;
      this.metrics.gauge(
        `queue_waiting${label}`,
        whenReady(async () => (await r.queue.counts()).waiting),
      );
      this.metrics.gauge(
        `dead_letters${label}`,
        whenReady(() => store.count()),
      );
    }

    const ingest = this.role !== 'worker';
    const deliver = this.role !== 'ingest';
    const context = { deviceIdentifierSystem: config.deviceIdentifierSystem, patientIdentifierSystem: config.patientIdentifierSystem };
    const pipeline = ingest ? new Pipeline(this.registry, queues, context, this.metrics, config.deliveryBatchMax) : undefined;
    if (pipeline) pipeline.checks = readReadingChecks(config.raw);
    if (pipeline) pipeline.observer = this.stats;
    if (config.sandbox) {
      const { mode, clients, tokenLifetimeS } = config.sandboxAuth;
      // Loaded only here: the FHIR engine (@medplum/fhir-router) and its search parameters cost memory in every
      // process otherwise, and a gateway with FHIR_BASE_URL set never serves a sandbox.
      const { createSandboxEhr } = await import('../sandbox/sandbox.js');
      let droppedBefore = false;
      this.sandbox = await createSandboxEhr({
        maxObservations: config.sandboxMaxObservations,
        onDropped: (count, kept) => {
          if (droppedBefore) return;
          droppedBefore = true;
          log.warn(
            { kept, dropped: count },
            'the sandbox EHR holds SANDBOX_MAX_OBSERVATIONS Observations: from now on it drops the oldest as new ones arrive',
          );
        },
        auth: mode === 'smart' ? { clients: readSandboxClients(clients).clients, tokenLifetimeS } : undefined,
        dataDir: config.sandboxDataDir,
        onFolderTaken: (owner) =>
          log.warn(
            { dataDir: config.sandboxDataDir, owner },
            'the sandbox data folder belongs to another gateway process: this one serves a sandbox in memory',
          ),
      });
    }
    const refusals = new RefusalStore(
      redis,
      {
        maxEntries: config.refusalsMax,
        maxPayloadBytes: config.refusalsMaxPayloadBytes,
        maxBytes: config.refusalsMaxBytes,
      },
      this.metrics,
      config.enqueueTimeoutMs,
    );
    this.refusals = refusals;
    const moved = await migrateLegacyRefusals(redis, refusals).catch((err: Error) => {
      log.warn({ error: err.message }, 'refusals kept by an earlier version could not be moved to /api/refusals yet');
      return 0;
    });
    if (moved) log.info({ moved }, 'refusals kept by an earlier version moved to /api/refusals');

    const features = await buildFeatures({
      config,
      redis,
      queue: queues,
      registry: this.registry,
      pipeline,
      refusals,
      log,
      metrics: this.metrics,
    });
    this.features = features;
    this.access = features.access;
    const { requireRole } = features;
    // The sandbox takes an operator credential; this process's own delivery presents a key made here (access/sandbox.ts).
    const sandboxKey = randomBytes(32).toString('base64url');
    // SANDBOX_AUTH=smart: the sandbox checks SMART tokens itself (sandbox/auth.ts), as an EHR would.
    const sandboxSmart = config.sandboxAuth.mode === 'smart';
    // Role all delivers on a thread of its own where DELIVERY_THREAD says so (delivery-thread.ts); the status routes
    // then ask that thread what its workers know.
    const cores = usableCores();
    const threaded = deliversOnThread(config, this.role, () => cores.cores);
    const delivering: DeliveryState =
      threaded && deliver
        ? async () => (this.deliveryThread ? this.deliveryThread.state() : [])
        : localDeliveryState(() => this.deliveries);
    const consoleConfig = readConsoleConfig(config.raw);
    let app: ReturnType<typeof createApp> | undefined;
    this.console = consoleConfig.enabled
      ? createConsole({
          config: consoleConfig,
          redis,
          access: features.devices.access,
          audit: features.devices.audit,
          queue,
          stats: this.stats,
          app: () => app as NonNullable<typeof app>,
          log,
          maxBodyBytes: config.ingestMaxBodyBytes,
        })
      : undefined;
    app = createApp({
      log,
      trustProxy: config.trustProxy,
      readiness: readiness(
        queues,
        () => this.deliveries,
        delivering,
        deliver,
        threaded && deliver
          ? (name) =>
              this.deliveryThread
                ? // A token to fetch, the request, a renewal after a 401 and the request again: twice the timeout, and some.
                  this.deliveryThread.ping(name, 2 * (config.destinations.find((d) => d.name === name)?.timeoutMs ?? 10_000) + 1000)
                : Promise.resolve()
          : undefined,
      ),
      sandbox: this.sandbox
        ? sandboxSmart
          ? this.sandbox.router
          : protectedSandbox(this.sandbox.router, sandboxKey, requireRole('operator'))
        : undefined,
      // The channels first: their routes are the busiest (every device message) and share no path with the others, so
      // a message is matched against a handful of routes, not against every route of the operations API before them.
      routers: [
        ...features.channels.flatMap((c) => (c.router ? [c.router] : [])),
        statusRoutes({
          config,
          version: VERSION,
          registry: this.registry,
          queues,
          deadLetters: deadLetterStores,
          deliveries: () => this.deliveries,
          delivering,
          deliveryThread:
            threaded && deliver
              ? () => ({ running: this.deliveryThread?.running ?? false, restarts: this.deliveryThread?.restarts ?? 0 })
              : undefined,
          metrics: this.metrics,
          operatorOnly: requireRole('operator'),
        }),
        openApiRoutes({
          version: VERSION,
          ingest,
          sandbox: !!this.sandbox,
          mqtt: features.channels.some((c) => c.name === 'mqtt'),
          jwks: !!publishedKeys,
          measurementsSchema: MEASUREMENTS_SCHEMA,
        }),
        deadLetterRoutes({
          destinations: routes.map((r) => ({
            name: r.destination.name,
            queue: r.queue,
            deadLetters: deadLetterStores.get(r.destination.name) as DeadLetterStore,
          })),
          requireRole,
          log,
        }),
        refusalRoutes({ refusals, requireRole, isReady: () => queue.isReady(), log }),
        ...(publishedKeys ? [jwksRoutes(publishedKeys)] : []),
        ...features.routers,
        ...(this.console ? [this.console.router] : []),
      ],
    });
    // Not app.listen: express 5 calls its callback on a listen error too, so a busy port looked like a start.
    const server = createServer(
      withHotRoutes(
        app,
        features.channels.flatMap((c) => c.hotRoutes ?? []),
        errorHandler(log),
      ),
    );
    server.keepAliveTimeout = 65_000;
    server.requestTimeout = 60_000;
    this.server = server;
    await listen(server, config.port, config.host, 'PORT');
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${this.port}`;

    const sandboxUrl = `${this.url}/sandbox/fhir`;
    const fhirBaseUrl = config.destinations[0].baseUrl ?? sandboxUrl;
    const sandbox: SandboxAccess = { url: sandboxUrl, key: sandboxSmart ? undefined : sandboxKey };
    this.deliveries = deliveryClients({
      config,
      routes,
      deadLetters: deadLetterStores,
      sandbox,
      ehrAuth,
      destinationAuths,
      log,
      metrics: this.metrics,
    });
    this.ehr = this.deliveries[0].ehr;
    if (deliver && threaded) {
      // Its own connections and queues: ingest and delivery share nothing but Redis, as the two roles do.
      const thread = new DeliveryThread(
        { config, target, sandbox, logLevel: log.level },
        { log, metrics: this.metrics, observer: this.stats },
      );
      this.deliveryThread = thread;
      await thread.start().catch((err: Error) => {
        throw new StartupError(`${err.message}; DELIVERY_THREAD=off delivers on the gateway's own thread`, { cause: err });
      });
      log.info({ thread: 'delivery' }, 'delivering on a thread of its own (DELIVERY_THREAD)');
    } else if (deliver) {
      startWorkers(this.deliveries, { config, routes, redis, log, metrics: this.metrics, observer: this.stats });
      this.worker = this.deliveries[0].worker;
    }
    for (const part of features.parts) {
      await part.start().catch((err: NodeJS.ErrnoException & { port?: number }) => {
        if (err?.code === 'EADDRINUSE' || err?.code === 'EACCES') throw portError(err, 'MLLP_PORT', err.port);
        throw err;
      });
    }
    await this.console?.start();
    if (config.sandbox) {
      log.warn(
        { fhirBaseUrl },
        `SANDBOX EHR: delivering to the sandbox FHIR server (${this.sandbox?.dataFile ? `data kept in ${this.sandbox.dataFile}` : 'in memory: data is lost at restart'}; not for clinical use). Set FHIR_BASE_URL to deliver to your EHR`,
      );
    }
    if (!config.adminApiKey) log.warn('ADMIN_API_KEY is not set: /api, /ingest and /metrics accept requests without a credential');
    log.info(
      {
        url: this.url,
        role: this.role,
        version: VERSION,
        fhirBaseUrl: withoutCredentials(fhirBaseUrl),
        destinations: this.deliveries.map((d) => `${d.destination.name}=${withoutCredentials(d.ehr.baseUrl)}`),
        unknownPatientPolicy: config.unknownPatientPolicy,
        ...(this.role === 'all' ? { deliveryThread: threaded ? 'on' : 'off', cores: cores.cores, cpuQuota: cores.quota } : {}),
        // glibc's malloc arenas per thread (docs/scaling.md): npm start and the container image set 2.
        mallocArenaMax: process.env.MALLOC_ARENA_MAX ?? null,
      },
      'gateway started',
    );
  }

  /** Warns when Redis (each master of a cluster) can evict keys (jobs would be lost) or keeps nothing on disk. */
  private async checkRedis(redis: RedisClient): Promise<void> {
    try {
      const nodes = await masters(redis, 10_000);
      for (const node of nodes) {
        const where = isCluster(redis) ? { node: `${node.options.host}:${node.options.port}` } : {};
        const [, policy] = (await node.config('GET', 'maxmemory-policy')) as [string, string];
        if (policy !== 'noeviction') {
          this.log.warn(
            { policy, ...where },
            `REDIS maxmemory-policy is '${policy}', not 'noeviction': under memory pressure Redis may EVICT QUEUED JOBS, losing acknowledged data. Set maxmemory-policy noeviction`,
          );
        }
        const [, aof] = (await node.config('GET', 'appendonly')) as [string, string];
        if (aof !== 'yes')
          this.log.warn(
            where,
            'Redis has AOF off (appendonly no): a crash of Redis itself loses acknowledged jobs. Enable appendonly yes for the durability guarantee',
          );
      }
    } catch (err) {
      this.log.warn(
        { error: (err as Error).message },
        'could not read the Redis configuration (CONFIG GET refused?); make sure maxmemory-policy is noeviction and AOF is on',
      );
    }
  }

  /** Graceful: stop accepting, finish in-flight jobs, close the queue and Redis. Safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    await this.starting?.catch(() => undefined);
    const log = this.log;
    const server = this.server;
    const closed = server ? new Promise<void>((res) => server.close(() => res())) : Promise.resolve();
    await this.console?.stop();
    for (const part of [...(this.features?.parts ?? [])].reverse())
      await part.stop().catch((err: Error) => log.warn({ error: err.message }, 'a part failed to stop'));
    server?.closeIdleConnections();
    const timeout = new Promise<void>((res) => setTimeout(res, this.config.shutdownTimeoutMs).unref());
    // The delivery thread gets the same time, then is ended: awaited below in any case, so that it never outlives the
    // Redis connections and the private redis-server closed after this.
    const threadStopped = this.deliveryThread?.stop(this.config.shutdownTimeoutMs);
    await Promise.race([
      (async () => {
        await Promise.all([...this.deliveries.map((d) => d.worker?.stop()), threadStopped]);
        await this.queues?.close();
      })(),
      timeout,
    ]);
    await threadStopped;
    server?.closeAllConnections();
    await closed;
    this.redis?.disconnect();
    await this.sandbox?.close().catch((err: Error) => log.warn({ error: err.message }, 'the sandbox snapshot could not be written'));
    await this.embedded?.stop();
    log.info('gateway stopped');
  }
}
