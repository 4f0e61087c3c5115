/**
 * Device management, access control and audit, built once by app/features.ts: the AccessControl (API keys), the
 * ingest guard (device policy; roles that ingest), the routers (devices, vendors, operators' keys, audit), the audit
 * trail and the offline monitor. Its configuration is DEVICE_KEYS (devices/config.ts).
 */
import type { Router } from 'express';
import type { RedisClient } from '../queue/connection.js';
import type { ConfigKey } from '../config/schema.js';
import { ApiKeyAccess } from '../access/access.js';
import { CredentialStore } from '../access/credentials.js';
import type { AdapterRegistry } from '../adapters/registry.js';
import { AuditTrail } from '../audit/store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { JobQueue } from '../queue/routing.js';
import { DEVICE_KEYS, type DeviceConfig } from './config.js';
import { DeviceGuard } from './guard.js';
import { OfflineMonitor } from './monitor.js';
import { Notifier } from './notify.js';
import { DeviceRegistry } from './registry.js';
import { createRecordCache, DEVICE_CACHE_TTL_MS } from './record-cache.js';
import { buildRouter, deviceRoutes } from './routes.js';
import { DeviceService } from './service.js';

export { DEVICE_KEYS, readDeviceConfig } from './config.js';
export { deviceUpdateTranslation, deviceRegistryVersion, REGISTRY_VERSION_URL } from './fhir.js';

export interface DeviceManagementDeps {
  redis: RedisClient;
  queue: JobQueue;
  adapters: AdapterRegistry;
  config: DeviceConfig;
  /** Largest accepted request body of the device API. */
  maxBodyBytes: number;
  /** Does this process ingest? (the guard exists only where messages arrive) */
  ingest: boolean;
  /** ENQUEUE_TIMEOUT_MS: how long a request's credential check may wait for Redis (ApiKeyAccessOptions). */
  redisTimeoutMs?: number;
  log: Logger;
  metrics: Metrics;
}

export interface DeviceManagement {
  access: ApiKeyAccess;
  guard?: DeviceGuard;
  routers: Router[];
  keys: readonly ConfigKey[];
  service: DeviceService;
  audit: AuditTrail;
  monitor: OfflineMonitor;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createDeviceManagement(deps: DeviceManagementDeps): DeviceManagement {
  const { redis, queue, log, metrics, adapters, config } = deps;
  const audit = new AuditTrail(
    redis,
    {
      deviceSystem: config.deviceIdentifierSystem,
      maxEvents: config.auditMaxEvents,
      securityMaxEvents: config.auditSecurityMaxEvents,
      forward: config.auditForward,
    },
    queue,
    log,
    metrics,
  );
  const credentials = new CredentialStore(redis);
  const access = new ApiKeyAccess(
    credentials,
    redis,
    {
      adminApiKey: config.adminApiKey,
      cacheTtlMs: config.credentialCacheTtlMs,
      rateLimitPerMinute: config.rateLimitPerMinute,
      rateLimitBurst: config.rateLimitBurst,
      signingKey: config.signingKey,
      hmacWindowS: config.hmacWindowS,
      maxBodyBytes: deps.maxBodyBytes,
      authFailureLimit: config.authFailureLimit,
      authFailureWindowS: config.authFailureWindowS,
      redisTimeoutMs: deps.redisTimeoutMs,
    },
    audit,
    log,
    metrics,
  );
  const notifier = new Notifier(config.webhookUrl, config.webhookTimeoutMs, log, metrics);
  const devices = new DeviceRegistry(redis);
  // Where messages arrive, their devices' records are read from memory that Redis keeps true (record-cache.ts).
  const cache = deps.ingest
    ? createRecordCache(redis, devices.readPrefixes, { max: config.deviceCacheMax, ttlMs: DEVICE_CACHE_TTL_MS }, log)
    : undefined;
  devices.cache = cache;
  if (cache) {
    metrics.gauge('device_cache_entries', () => cache.size);
    metrics.gauge('device_cache_active', () => +cache.active);
    metrics.gauge('device_cache_lookups_total{result="hit"}', () => cache.hits);
    metrics.gauge('device_cache_lookups_total{result="miss"}', () => cache.misses);
  }
  const service = new DeviceService(devices, credentials, access, queue, adapters, audit, notifier, config, log, metrics);
  const guard = deps.ingest ? new DeviceGuard(service, log, metrics) : undefined;
  const monitor = new OfflineMonitor(service, notifier, config.offlineCheckIntervalMs, log, metrics);
  const router = buildRouter(deviceRoutes(service, audit), access, deps.maxBodyBytes);
  let started = false;
  let stopping: Promise<void> | undefined;
  return {
    access,
    guard,
    routers: [router],
    keys: DEVICE_KEYS,
    service,
    audit,
    monitor,
    async start() {
      if (started) return;
      started = true;
      await access.start();
      await cache?.start();
      // Records written before devices were found by their EUI-64 too get their index entry (idempotent).
      await devices.indexAliases().catch((err: Error) => log.warn({ error: err.message }, 'device identifiers could not be indexed yet'));
      monitor.start();
    },
    stop() {
      stopping ??= (async () => {
        await monitor.stop();
        await access.stop();
        await cache?.stop();
        await notifier.drain();
      })();
      return stopping;
    },
  };
}
