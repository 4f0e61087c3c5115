/**
 * The features the gateway runs with, wired explicitly in one place, and the complete list of configuration keys.
 * Every process runs this same list; the role and the configuration decide what is on (a worker has no channels and
 * no guard; MQTT needs MQTT_URL; MLLP needs MLLP_ENABLED). Order matters and is stated here, not discovered:
 *
 *   1. device management: access control (API keys), the audit trail, the ingest guard, the device API;
 *   2. adapters, in precedence order: the built-ins and hl7v2, the mappings folder, plugins, registered adapters
 *      (each refuses an id an earlier one holds);
 *   3. the channels: HTTP, HL7v2 (MLLP and POST /hl7v2), MQTT.
 */
import type { RequestHandler, Router } from 'express';
import type { RedisClient } from '../queue/connection.js';
import { MllpAllowList, mllpSenderPolicy } from '../access/mllp-senders.js';
import { mappingsFolder } from '../adapters/mapping/folder.js';
import { loadPluginsInto } from '../adapters/plugins.js';
import type { AdapterRegistry } from '../adapters/registry.js';
import type { AccessControl } from '../access/auth.js';
import type { Channel } from '../channels/channel.js';
import { httpChannel } from '../channels/http.js';
import { mllpChannel } from '../channels/mllp/index.js';
import { mqttChannel } from '../channels/mqtt/channel.js';
import { MQTT_KEYS, mqttConfig } from '../channels/mqtt/config.js';
import type { RoleName } from '../core/contract.js';
import { type Config, CORE_KEYS, configHelp, loadConfig, MAPPING_KEYS } from '../config/index.js';
import { ConfigError, type ConfigKey, envFile, loadKeys } from '../config/schema.js';
import { initValidation } from '../fhir/validate.js';
import { createDeviceManagement, type DeviceManagement, DEVICE_KEYS, readDeviceConfig } from '../devices/index.js';
import { createHl7Adapter } from '../hl7v2/adapter.js';
import { HL7_KEYS, readHl7Config } from '../hl7v2/config.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import { READING_CHECK_KEYS, readReadingChecks } from '../fhir/plausibility.js';
import type { RefusalStore } from '../pipeline/refusals.js';
import type { JobQueue } from '../queue/routing.js';
import { PLUGIN_KEYS } from '../adapters/config.js';
import { configureTemplateLimits, readTemplateLimits } from '../adapters/limits.js';
import { closeTemplatePool } from '../adapters/mapping/pool.js';
import { createRegistration } from '../registration/service.js';
import { CONSOLE_KEYS } from '../console/config.js';
import { readSandboxClients } from '../sandbox/auth.js';

/** Every key of every feature, in the order --help prints them. */
export const ALL_KEYS: readonly ConfigKey[] = [
  ...CORE_KEYS,
  ...MAPPING_KEYS,
  ...READING_CHECK_KEYS,
  ...PLUGIN_KEYS,
  ...HL7_KEYS,
  ...DEVICE_KEYS,
  ...MQTT_KEYS,
  ...CONSOLE_KEYS,
];

/**
 * Loads and checks the whole configuration: the core keys and every feature fragment, with every error of every
 * fragment in one ConfigError.
 */
export function loadGatewayConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const errors: string[] = [];
  const collect = <T>(read: () => T): T | undefined => {
    try {
      return read();
    } catch (err) {
      if (err instanceof ConfigError) errors.push(...err.errors);
      else throw err;
      return undefined;
    }
  };
  const config = collect(() => loadConfig(env, ALL_KEYS));
  // The fragments are checked even when the core keys have errors, so that every error is reported at once.
  const raw = config?.raw ?? loadKeys(ALL_KEYS, env).values;
  const core = config ?? { deviceIdentifierSystem: '', patientIdentifierSystem: '' };
  collect(() => readDeviceConfig(raw, core));
  collect(() => readReadingChecks(raw));
  if (raw.get('SANDBOX_AUTH') === 'smart' && raw.get('SANDBOX_SMART_CLIENTS'))
    errors.push(...readSandboxClients(raw.get('SANDBOX_SMART_CLIENTS') as string).errors);
  errors.push(...new MllpAllowList((raw.get('MLLP_ALLOWED_SENDERS') as string[] | undefined) ?? []).errors, ...readHl7Config(raw).errors);
  if (errors.length || !config) throw new ConfigError([...new Set(errors)]);
  return config;
}

export function gatewayConfigHelp(): string {
  return configHelp(ALL_KEYS);
}

/** Every key as an environment file (.env.example). */
export function gatewayEnvFile(): string {
  return envFile(ALL_KEYS);
}

/** The parts the gateway has built before the features: what they are wired to. */
export interface CoreParts {
  config: Config;
  redis: RedisClient;
  /** Every destination's queue: what the device registry and the audit trail queue through. */
  queue: JobQueue;
  registry: AdapterRegistry;
  /** Present in the roles that ingest. */
  pipeline?: Pipeline;
  refusals: RefusalStore;
  log: Logger;
  metrics: Metrics;
}

/** Something started after the HTTP server listens and stopped first, in reverse order. */
export interface Part {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface Features {
  access: AccessControl;
  requireRole(...roles: RoleName[]): RequestHandler;
  devices: DeviceManagement;
  channels: Channel[];
  /** Routers of the features (devices, adapters); channel routers are in `channels`. */
  routers: Router[];
  /** Started in this order after the HTTP server listens; stopped in reverse. */
  parts: Part[];
}

export async function buildFeatures(core: CoreParts): Promise<Features> {
  const { config, redis, queue, registry, pipeline, refusals, log, metrics } = core;
  const context = { deviceIdentifierSystem: config.deviceIdentifierSystem, patientIdentifierSystem: config.patientIdentifierSystem };

  // 1. Device management: access control, audit, the guard (roles that ingest), the device API.
  const deviceConfig = readDeviceConfig(config.raw, config);
  const devices = createDeviceManagement({
    redis,
    queue,
    adapters: registry,
    config: deviceConfig,
    maxBodyBytes: config.ingestMaxBodyBytes,
    ingest: !!pipeline,
    redisTimeoutMs: config.enqueueTimeoutMs,
    log,
    metrics,
  });
  if (pipeline && devices.guard) pipeline.guard = devices.guard;
  // Forwarding audit events validates each one before it is queued (audit/store.ts). A worker does not index the R4
  // definitions at start otherwise, and indexing them at its first event would hold its event loop for a second.
  if (deviceConfig.auditForward) initValidation();
  const access = devices.access;
  const requireRole = (...roles: RoleName[]) => access.require(...roles);

  // 2. Adapters: hl7v2 (the built-ins are in the registry already), the mappings folder, plugins, registered ones.
  //    The limits on templates and on work per message apply to every source, so they are set first.
  configureTemplateLimits(readTemplateLimits(config.raw));
  // The template workers start at the first message a mapping translates (the budget never counts a worker's start):
  // each is an isolate of its own (about 25–35 MiB of RSS, measured), which a process that never meets a mapping's
  // message should not hold.
  const templates: Part = { start: async () => undefined, stop: () => closeTemplatePool() };
  const hl7 = readHl7Config(config.raw);
  if (hl7.errors.length) throw new ConfigError(hl7.errors);
  registry.register(createHl7Adapter(hl7.config));
  const mappings = mappingsFolder({
    registry,
    dir: config.raw.get('MAPPINGS_DIR') as string | undefined,
    watch: config.raw.get('MAPPINGS_WATCH') !== false,
    log,
    admin: requireRole(),
    readers: requireRole('operator', 'vendor'),
  });
  const plugins = await loadPluginsInto(registry, config);
  for (const e of plugins.errors) log.error({ plugin: e.source, error: e.message }, 'plugin not loaded');
  if (plugins.ids.length || plugins.errors.length) log.info({ plugins: plugins.ids, errors: plugins.errors.length }, 'plugins loaded');
  const registration = await createRegistration({
    redis,
    registry,
    pollIntervalMs: config.raw.get('ADAPTERS_POLL_INTERVAL_MS') as number,
    maxBodyBytes: config.ingestMaxBodyBytes,
    context,
    requireRole,
    audit: devices.audit,
    log,
    metrics,
  });

  // 3. Channels (roles that ingest).
  const channels: Channel[] = [];
  if (pipeline) {
    const ingestAuth = requireRole('device', 'vendor');
    const senderPolicy = mllpSenderPolicy({
      entries: deviceConfig.mllpAllowedSenders,
      production: !config.sandbox,
      mutualTls: !!hl7.config.tls?.requireClientCert,
      allowAny: hl7.config.allowAnySender,
    });
    if (hl7.config.mllpEnabled) log[senderPolicy.level](senderPolicy.message);
    channels.push(
      httpChannel({
        ingestor: pipeline,
        refusals,
        auth: ingestAuth,
        maxBodyBytes: config.ingestMaxBodyBytes,
        adapterVendor: (id) => registration.ownerOf(id),
        answerWithinMs: config.enqueueTimeoutMs,
      }),
    );
    channels.push(
      mllpChannel({
        ingestor: pipeline,
        redis,
        refusals,
        config: hl7.config,
        log,
        metrics,
        senders: senderPolicy.senders,
        auth: ingestAuth,
        maxBodyBytes: config.ingestMaxBodyBytes,
        answerWithinMs: config.enqueueTimeoutMs,
      }),
    );
    const mqtt = mqttConfig(config.raw);
    if (mqtt.url)
      channels.push(
        mqttChannel({
          config: mqtt,
          ingestor: pipeline,
          refusals,
          log,
          metrics,
          operatorOnly: requireRole('operator'),
          answerWithinMs: config.enqueueTimeoutMs,
        }),
      );
  } else if (config.raw.get('MQTT_URL')) {
    log.info('MQTT_URL is set but this process does not ingest (role worker): the MQTT channel is off here');
  }

  return {
    access,
    requireRole,
    devices,
    channels,
    routers: [...devices.routers, mappings.router, registration.router],
    parts: [templates, devices, mappings, registration, ...channels],
  };
}
