/**
 * The delivery side of a process, built the same way wherever it runs: in the gateway's own thread (roles worker, and
 * all with DELIVERY_THREAD off) or on the delivery thread of role all (delivery-thread.ts). Each destination gets its
 * queue, its client and circuit breaker, its dead letters and, where this side delivers, its worker.
 */
import type { Config } from '../config/index.js';
import { bearerToken, DEFAULT_DESTINATION, type Destination } from '../config/destinations.js';
import type { RedisClient, RedisTarget } from '../queue/connection.js';
import { DeliveryQueue } from '../queue/queue.js';
import { type RoutedQueue, SubscriberFeed } from '../queue/routing.js';
import { type BreakerSnapshot, CircuitBreaker } from '../delivery/breaker.js';
import type { ResolvedWriteMode } from '../delivery/writer.js';
import type { DeadLetterStore } from '../delivery/dead-letters.js';
import { EhrClient } from '../delivery/ehr-client.js';
import { Notifier, SubscriberClient } from '../delivery/notifier.js';
import { backoffDelay, type DeliveryObserver, DeliveryWorker } from '../delivery/worker.js';
import type { PreparedEhrAuth } from '../ehr-auth/index.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

/** One destination as this process runs it. */
export interface Delivery {
  destination: Destination;
  queue: DeliveryQueue;
  ehr: EhrClient;
  deadLetters: DeadLetterStore;
  worker?: DeliveryWorker;
}

/** What the delivering side knows of one destination: its circuit breaker and the write mode its worker chose. */
export interface DestinationState {
  breaker: BreakerSnapshot & { enabled: boolean; waitingJobs: number };
  writeMode?: ResolvedWriteMode;
}

/**
 * The delivering side of a process, as its status routes read it: its workers in the gateway's thread, or the
 * delivery thread of role all (delivery-host.ts). Empty where the process does not deliver (role ingest).
 */
export type DeliveryState = () => Promise<DestinationState[]>;

/** The state of the workers among `deliveries` (those that run in this thread). */
export function localDeliveryState(deliveries: () => Delivery[]): DeliveryState {
  return async () =>
    deliveries().flatMap((d) => {
      const b = d.ehr.breaker;
      if (!d.worker || !b) return [];
      return [{ breaker: { ...b.snapshot(), enabled: b.enabled, waitingJobs: b.waiting }, writeMode: d.worker.writer.known }];
    });
}

/** One bull queue per destination. The destination `ehr` keeps QUEUE_NAME, so an upgrade delivers what is queued. */
export function openQueues(config: Config, target: RedisTarget): RoutedQueue[] {
  return config.destinations.map((destination) => ({
    destination,
    queue: new DeliveryQueue(
      {
        redisUrl: target.url,
        sentinels: target.sentinels,
        sentinelName: config.redisSentinelName,
        clusterNodes: target.clusterNodes,
        waitReplicas: config.redisWaitReplicas,
        waitTimeoutMs: config.redisWaitTimeoutMs,
        queueName: destination.name === DEFAULT_DESTINATION ? config.queueName : `${config.queueName}.${destination.name}`,
        maxDepth: config.queueMaxDepth,
        enqueueTimeoutMs: config.enqueueTimeoutMs,
        attempts: config.deliveryAttempts,
        lockDurationMs: config.queueLockDurationMs,
        stalledIntervalMs: config.queueStalledIntervalMs,
        retentionCompleted: config.jobRetentionCompleted,
        dedupeWindowS: config.dedupeWindowS,
        retryBaseDelayMs: config.retryBaseDelayMs,
        retryMaxDelayMs: config.retryMaxDelayMs,
      },
      (attemptsMade, err) => backoffDelay(attemptsMade, err, config.retryBaseDelayMs, config.retryMaxDelayMs),
    ),
  }));
}

/** How this process reaches the sandbox EHR it serves (the sandbox is served by the gateway's HTTP server). */
export interface SandboxAccess {
  /** The sandbox's FHIR base URL. */
  url: string;
  /** The key this process's own delivery presents (access/sandbox.ts); undefined with SANDBOX_AUTH=smart. */
  key?: string;
}

export interface ClientParts {
  config: Config;
  routes: RoutedQueue[];
  deadLetters: Map<string, DeadLetterStore>;
  sandbox: SandboxAccess;
  /** FHIR_AUTH's keys and settings (the default destination). */
  ehrAuth: PreparedEhrAuth;
  /** Each DESTINATIONS_FILE entry's with SMART, a client secret or mutual TLS. */
  destinationAuths: Map<string, PreparedEhrAuth>;
  log: Logger;
  metrics: Metrics;
}

/**
 * Each destination: its own client and circuit breaker: one that is slow or down never delays another. The default
 * destination (no DESTINATIONS_FILE) authenticates as FHIR_AUTH says (ehr-auth/: SMART, client secret, mutual TLS);
 * the sandbox without SMART takes this process's own key (access/sandbox.ts).
 */
export function deliveryClients(p: ClientParts): Delivery[] {
  const { config, log, metrics } = p;
  const breakerSettings = {
    failureThreshold: config.breakerFailureThreshold,
    probeIntervalMs: config.breakerProbeIntervalMs,
    probeMaxIntervalMs: config.breakerProbeMaxIntervalMs,
  };
  return p.routes.map(({ destination, queue }) => {
    const deadLetters = p.deadLetters.get(destination.name) as DeadLetterStore;
    const breaker = new CircuitBreaker(destination.name, breakerSettings, { log, metrics });
    const sub = destination.subscriber;
    if (sub) {
      const client = new SubscriberClient(sub.endpoint, sub.headers, destination.timeoutMs, metrics, breaker);
      return { destination, queue, deadLetters, ehr: client };
    }
    const baseUrl = destination.baseUrl ?? p.sandbox.url;
    const primary = destination.name === DEFAULT_DESTINATION && !config.destinationsFile;
    return {
      destination,
      queue,
      deadLetters,
      ehr: new EhrClient(
        {
          baseUrl,
          timeoutMs: destination.timeoutMs,
          bearerToken: destination.sandbox ? p.sandbox.key : primary ? undefined : bearerToken(destination.auth),
          auth: (primary ? p.ehrAuth : p.destinationAuths.get(destination.name))?.connect({
            destination: destination.name,
            baseUrl,
            timeoutMs: destination.timeoutMs,
            log,
          }),
          metrics,
        },
        breaker,
      ),
    };
  });
}

/**
 * Starts a worker for each destination (concurrency, locks: one destination never waits for another). Subscribers
 * are queued when the FHIR destination they follow has written a job (queue/routing.ts SubscriberFeed).
 */
export function startWorkers(
  deliveries: Delivery[],
  p: { config: Config; routes: RoutedQueue[]; redis: RedisClient; log: Logger; metrics: Metrics; observer: DeliveryObserver },
): void {
  const { config, log } = p;
  const warnedAt = new Map<string, number>();
  const feed = new SubscriberFeed(p.routes, {
    onDropped: (subscriber, events, depth) => {
      p.metrics.inc('subscriber_events_dropped_total', { destination: subscriber }, events);
      if (Date.now() - (warnedAt.get(subscriber) ?? 0) < 60_000) return;
      warnedAt.set(subscriber, Date.now());
      log.warn(
        { destination: subscriber, depth, maxDepth: config.queueMaxDepth },
        "a subscriber's queue is full (QUEUE_MAX_DEPTH): new notifications are not queued; their event numbers are skipped, so the consumer sees the gap (the readings are at the FHIR destination)",
      );
    },
  });
  const baseUrlOf = (name: string) => deliveries.find((d) => d.destination.name === name)?.ehr.baseUrl ?? '';
  for (const d of deliveries) {
    const sub = d.destination.subscriber;
    const name = d.destination.name;
    const notifier =
      sub && d.ehr instanceof SubscriberClient ? new Notifier(name, sub, d.ehr, p.redis, () => baseUrlOf(sub.source), log) : undefined;
    const followed = feed.following(name).length > 0;
    d.worker = new DeliveryWorker(
      d.queue,
      d.ehr,
      d.deadLetters,
      {
        destination: d.destination.name,
        writeMode: d.destination.writeMode,
        conditionalCreate: d.destination.conditionalCreate,
        concurrency: d.destination.concurrency ?? config.deliveryConcurrency,
        unknownPatientPolicy: config.unknownPatientPolicy,
        keyLockWaitMs: config.keyLockWaitMs,
        fhirTimeoutMs: d.destination.timeoutMs,
        retryBaseDelayMs: config.retryBaseDelayMs,
        retryMaxDelayMs: config.retryMaxDelayMs,
        batchMax: config.deliveryBatchMax,
        transactionsInFlight: config.deliveryTransactions,
        deviceIdCacheMs: (d.destination.deviceCacheS ?? config.deliveryDeviceCacheS) * 1000,
        onDelivered: followed ? (job) => feed.delivered(name, job) : undefined,
      },
      log,
      p.metrics,
      notifier,
    );
    d.worker.observer = p.observer;
    d.worker.start();
  }
}
