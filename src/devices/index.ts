/**
 * Device management, access control and audit as one gateway extension:
 *
 *   new Gateway(config, role, { extensions: [createDeviceManagement] })
 *
 * gives the gateway its AccessControl (API keys), the ingest guard (device policy), the routers (devices, vendors,
 * operators' keys, audit) and the offline monitor. Its configuration keys are DEVICE_KEYS (devices/config.ts).
 */
import type { Router } from 'express';
import type { ExtensionContext, Extension } from '../app/gateway.js';
import type { ConfigKey } from '../config/schema.js';
import { ApiKeyAccess } from '../access/access.js';
import { CredentialStore } from '../access/credentials.js';
import { configureMllpSenders } from '../access/mllp-senders.js';
import { AuditTrail } from '../audit/store.js';
import { DEVICE_KEYS, readDeviceConfig } from './config.js';
import { DeviceGuard } from './guard.js';
import { OfflineMonitor } from './monitor.js';
import { Notifier } from './notify.js';
import { DeviceRegistry } from './registry.js';
import { buildRouter, deviceRoutes } from './routes.js';
import { DeviceService } from './service.js';

export { DEVICE_KEYS } from './config.js';
export { mllpSenderAllowed } from '../access/mllp-senders.js';
export { deviceUpdateTranslation, deviceRegistryVersion, REGISTRY_VERSION_URL } from './fhir.js';

export interface DeviceManagement extends Extension {
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

/**
 * Builds the extension. `env` is read only for keys that `ctx.config.raw` does not hold (until DEVICE_KEYS is part of
 * the schema; tests pass their own env).
 */
export async function createDeviceManagement(ctx: ExtensionContext, env: NodeJS.ProcessEnv = process.env): Promise<DeviceManagement> {
  const { redis, queue, log, metrics, registry: adapters } = ctx;
  const config = readDeviceConfig(ctx.config.raw, ctx.config, env);
  const mllp = configureMllpSenders(config.mllpAllowedSenders);
  if (mllp.errors.length) throw new Error(`invalid configuration:\n  - ${mllp.errors.join('\n  - ')}`);
  const audit = new AuditTrail(redis, { deviceSystem: config.deviceIdentifierSystem, maxEvents: config.auditMaxEvents, forward: config.auditForward }, queue, log, metrics);
  const credentials = new CredentialStore(redis);
  const access = new ApiKeyAccess(credentials, redis, { adminApiKey: config.adminApiKey, cacheTtlMs: config.credentialCacheTtlMs, rateLimitPerMinute: config.rateLimitPerMinute, rateLimitBurst: config.rateLimitBurst, signingKey: config.signingKey, hmacWindowS: config.hmacWindowS, maxBodyBytes: ctx.config.ingestMaxBodyBytes }, audit, log, metrics);
  const notifier = new Notifier(config.webhookUrl, config.webhookTimeoutMs, log, metrics);
  const devices = new DeviceRegistry(redis);
  const service = new DeviceService(devices, credentials, access, queue, adapters, audit, notifier, config, log, metrics);
  const guard = ctx.pipeline ? new DeviceGuard(service, log, metrics) : undefined;
  const monitor = new OfflineMonitor(service, notifier, config.offlineCheckIntervalMs, log, metrics);
  const router = buildRouter(deviceRoutes(service, audit), access, ctx.config.ingestMaxBodyBytes);
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
      monitor.start();
    },
    stop() {
      stopping ??= (async () => {
        await monitor.stop();
        await access.stop();
        await notifier.drain();
      })();
      return stopping;
    },
  };
}
