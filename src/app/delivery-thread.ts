/**
 * The delivery thread of role all (DELIVERY_THREAD): the workers of every destination, on a JavaScript thread of their
 * own beside ingest, so that one gateway process uses two cores. Ingest and delivery share nothing but Redis, as the
 * ingest and worker roles do; this thread opens its own connections and queues.
 *
 * It tells the gateway's thread (delivery-host.ts) how each job was settled, for the console, and answers its
 * questions: the destinations' breakers and write modes (/api/status, /readyz) and its counters (/metrics).
 */
import { Writable } from 'node:stream';
import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config/index.js';
import { DeadLetterStore } from '../delivery/dead-letters.js';
import type { DeliveryEvent } from '../delivery/worker.js';
import { type PreparedEhrAuth, prepareEhrAuth } from '../ehr-auth/index.js';
import { createLogger } from '../observability/logger.js';
import { Metrics, type MetricsSnapshot } from '../observability/metrics.js';
import { createRedis, type RedisTarget, reopenWhenEnded } from '../queue/connection.js';
import {
  type Delivery,
  type DestinationState,
  deliveryClients,
  localDeliveryState,
  openQueues,
  type SandboxAccess,
  startWorkers,
} from './deliveries.js';

/** What the gateway's thread gives the delivery thread (structured-cloned). */
export interface ThreadData {
  config: Config;
  /** Redis as the gateway resolved it (the private redis-server's URL included). */
  target: RedisTarget;
  sandbox: SandboxAccess;
  /** The level of the gateway's logger (a logger given to the gateway may differ from LOG_LEVEL). */
  logLevel: string;
}

export type ToThread =
  | { op: 'state'; id: number }
  | { op: 'metrics'; id: number }
  | { op: 'ping'; id: number; destination: string }
  | { op: 'stop' };

export type FromThread =
  | { op: 'ready' }
  | { op: 'failed'; message: string }
  | { op: 'settled'; events: DeliveryEvent[] }
  | { op: 'log'; text: string }
  | { op: 'state'; id: number; state: DestinationState[] }
  | { op: 'metrics'; id: number; metrics: MetricsSnapshot }
  | { op: 'ping'; id: number; error?: string }
  | { op: 'stopped' };

/** Settlements are sent in batches: one message per this many ms at most, not one per job. */
const SETTLED_FLUSH_MS = 20;

/**
 * A stream that hands its JSON lines to the gateway's thread, which writes them where its own go (its logger's
 * destination, or pino-pretty): one log, in order within each thread, that a test or an embedding program captures.
 */
function forwardedLog(send: (m: FromThread) => void): Writable & { flush(): void } {
  let text = '';
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (text) send({ op: 'log', text });
    text = '';
  };
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      text += chunk.toString();
      timer ??= setTimeout(flush, SETTLED_FLUSH_MS);
      cb();
    },
  });
  return Object.assign(stream, { flush });
}

async function run(
  data: ThreadData,
  send: (m: FromThread) => void,
  port: NonNullable<typeof parentPort>,
  logStream: ReturnType<typeof forwardedLog>,
): Promise<void> {
  const { config } = data;
  const log = createLogger(data.logLevel, logStream, 'json').child({ thread: 'delivery' });
  // A failure nothing caught ends the thread (the gateway starts it again), but first its last lines reach the log.
  const fail = (err: unknown) => {
    log.fatal({ error: err instanceof Error ? (err.stack ?? err.message) : String(err) }, 'the delivery thread failed');
    logStream.flush();
    process.exit(1);
  };
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  const metrics = new Metrics();
  const ehrAuth = await prepareEhrAuth(config.ehrAuth);
  const destinationAuths = new Map<string, PreparedEhrAuth>();
  for (const d of config.destinations) if (d.ehrAuth) destinationAuths.set(d.name, await prepareEhrAuth(d.ehrAuth));
  let stopping = false;
  const redis = createRedis(data.target, { maxRetriesPerRequest: 2, enableAutoPipelining: true });
  reopenWhenEnded(redis, () => stopping);
  const routes = openQueues(config, data.target);
  await Promise.all(routes.map((r) => r.queue.whenReady()));
  const deadLetters = new Map(routes.map((r) => [r.destination.name, new DeadLetterStore(redis, r.destination.name)]));
  const deliveries: Delivery[] = deliveryClients({
    config,
    routes,
    deadLetters,
    sandbox: data.sandbox,
    ehrAuth,
    destinationAuths,
    log,
    metrics,
  });

  let settled: DeliveryEvent[] = [];
  let flushTimer: NodeJS.Timeout | undefined;
  const flush = () => {
    flushTimer = undefined;
    if (!settled.length) return;
    send({ op: 'settled', events: settled });
    settled = [];
  };
  const observer = {
    settled(e: DeliveryEvent) {
      settled.push(e);
      flushTimer ??= setTimeout(flush, SETTLED_FLUSH_MS);
    },
  };
  startWorkers(deliveries, { config, routes, redis, log, metrics, observer });
  const state = localDeliveryState(() => deliveries);

  port.on('message', (m: ToThread) => {
    if (m.op === 'state') void state().then((s) => send({ op: 'state', id: m.id, state: s }));
    else if (m.op === 'metrics') send({ op: 'metrics', id: m.id, metrics: metrics.snapshot() });
    else if (m.op === 'ping') {
      // /readyz of the gateway: asked with this thread's client, its authentication and connections (one token cache).
      const d = deliveries.find((x) => x.destination.name === m.destination);
      void (d ? d.ehr.ping() : Promise.resolve()).then(
        () => send({ op: 'ping', id: m.id }),
        (err: Error) => send({ op: 'ping', id: m.id, error: err.message }),
      );
    } else if (m.op === 'stop' && !stopping) {
      stopping = true;
      void (async () => {
        // As the gateway stops its own workers: the jobs in flight are finished, then the queues closed.
        await Promise.all(deliveries.map((d) => d.worker?.stop()));
        await Promise.all(routes.map((r) => r.queue.close()));
        clearTimeout(flushTimer);
        flush();
        redis.disconnect();
      })()
        .catch((err: Error) => log.warn({ error: err.message }, 'the delivery thread did not stop cleanly'))
        .finally(() => {
          logStream.flush();
          send({ op: 'stopped' });
        });
    }
  });
  send({ op: 'ready' });
}

if (parentPort) {
  const port = parentPort;
  const send = (m: FromThread) => port.postMessage(m);
  const logStream = forwardedLog(send);
  run(workerData as ThreadData, send, port, logStream).catch((err: Error) => {
    // The lines logged before the failure first: the gateway ends the thread when it reads 'failed'.
    logStream.flush();
    send({ op: 'failed', message: err.message });
  });
}
