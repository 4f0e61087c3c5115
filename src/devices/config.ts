/**
 * Configuration of device management, access control and audit (a fragment of the one schema; see config/schema.ts).
 * Maps are written as comma-separated `key=value` lists, e.g. `DEVICE_OFFLINE_AFTER_MS_BY_TYPE=spo2=60000,scale=86400000`.
 */
import { ConfigError, type ConfigKey, type ConfigValue } from '../config/schema.js';

export const UnknownDevicePolicies = { reject: 'reject', hold: 'hold', accept: 'accept' } as const;
export type UnknownDevicePolicy = (typeof UnknownDevicePolicies)[keyof typeof UnknownDevicePolicies];
const POLICY_VALUES = Object.values(UnknownDevicePolicies);

/** Whose charts a device's readings may be filed in (see docs/security.md, "Patient integrity and plausibility"). */
export const PatientBindings = { assignedOnly: 'assigned-only', any: 'any' } as const;
export type PatientBinding = (typeof PatientBindings)[keyof typeof PatientBindings];

export const DEVICE_KEYS: readonly ConfigKey[] = [
  {
    env: 'DEVICE_PATIENT_BINDING',
    type: 'enum',
    default: 'assigned-only',
    values: Object.values(PatientBindings),
    description:
      "assigned-only: a device credential (HTTP device key, MQTT topic) files readings only for its device's assigned patient, in PATIENT_IDENTIFIER_SYSTEM (a reading naming another patient or system, or a device without an assignment naming one, is refused with 403), and sends no patient demographics; a vendor credential may not name another patient than the device's assignment. any: readings may name any patient (deployments that trust their devices)",
  },
  {
    env: 'UNKNOWN_DEVICE_POLICY',
    type: 'enum',
    values: POLICY_VALUES,
    description:
      'Data of a device the registry does not know (default: reject with a real EHR, accept with the sandbox EHR): reject (403), hold (auto-register as registered and keep the data until it is activated) or accept (auto-register as active and deliver)',
  },
  {
    env: 'UNKNOWN_DEVICE_POLICY_HTTP',
    type: 'enum',
    values: POLICY_VALUES,
    description: 'UNKNOWN_DEVICE_POLICY for the HTTP channel (unset: the default policy)',
  },
  {
    env: 'UNKNOWN_DEVICE_POLICY_MLLP',
    type: 'enum',
    values: POLICY_VALUES,
    description: 'UNKNOWN_DEVICE_POLICY for the MLLP (HL7v2) channel (unset: the default policy)',
  },
  {
    env: 'UNKNOWN_DEVICE_POLICY_MQTT',
    type: 'enum',
    values: POLICY_VALUES,
    description: 'UNKNOWN_DEVICE_POLICY for the MQTT channel (unset: the default policy)',
  },
  {
    env: 'UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES',
    type: 'list',
    description: 'UNKNOWN_DEVICE_POLICY per MLLP sending facility (MSH-4), e.g. ICU_A=accept,WARD_3=hold; wins over the channel policy',
  },
  {
    env: 'DEVICE_OFFLINE_AFTER_MS',
    type: 'int',
    default: '900000',
    min: 1,
    description: 'An active device that sent nothing for this long is offline',
  },
  {
    env: 'DEVICE_OFFLINE_AFTER_MS_BY_TYPE',
    type: 'list',
    description: "DEVICE_OFFLINE_AFTER_MS per device type (the registry record's type), e.g. pulse-oximeter=60000,weight-scale=172800000",
  },
  {
    env: 'DEVICE_OFFLINE_CHECK_INTERVAL_MS',
    type: 'int',
    default: '30000',
    min: 10,
    description: 'How often the gateway looks for devices that went offline (metrics, webhook)',
  },
  {
    env: 'DEVICE_WEBHOOK_URL',
    type: 'url',
    description: 'POSTed a JSON event on every device state change and offline/online alert (failures are logged, never block)',
  },
  { env: 'DEVICE_WEBHOOK_TIMEOUT_MS', type: 'int', default: '5000', min: 10, description: 'Timeout of one webhook POST' },
  {
    env: 'DEVICE_HELD_MAX',
    type: 'int',
    default: '1000',
    min: 1,
    description: 'Readings held per unknown device (UNKNOWN_DEVICE_POLICY=hold); above it, new data is refused (429)',
  },
  {
    env: 'DEVICE_CACHE_MAX',
    type: 'int',
    default: '20000',
    min: 0,
    description:
      "Device records (and identifiers) an ingest process keeps in memory, so that a message's devices are not read from Redis each time. Redis announces every change of them (client-side caching, CLIENT TRACKING) and the entry is dropped; while that connection is down, every read goes to Redis. 0: always read from Redis. Not used on a Redis Cluster",
  },
  {
    env: 'CREDENTIAL_CACHE_TTL_MS',
    type: 'int',
    default: '30000',
    min: 0,
    description:
      'How long a verified API key is trusted from memory (scrypt is not paid per request). A revocation made on another instance is seen within this time at worst (usually at once, via Redis pub/sub)',
  },
  {
    env: 'CREDENTIAL_ROTATION_OVERLAP_MS',
    type: 'int',
    default: '86400000',
    min: 0,
    description: 'After a key is rotated, the old key stays valid this long',
  },
  {
    env: 'CREDENTIAL_SIGNING_KEY',
    type: 'string',
    secret: true,
    description:
      'Master key (32+ characters) that encrypts the HMAC signing secrets issued with vendor keys. Unset: no signing secrets, HMAC-signed requests are refused',
  },
  {
    env: 'HMAC_WINDOW_S',
    type: 'int',
    default: '300',
    min: 1,
    max: 3600,
    description:
      'HMAC-signed requests: the largest allowed difference between X-Gateway-Timestamp and the gateway clock; signatures are remembered twice as long to refuse replays',
  },
  {
    env: 'RATE_LIMIT_PER_MINUTE',
    type: 'int',
    default: '1200',
    min: 0,
    description: 'Requests per minute per credential (token bucket in Redis, shared by every instance); 0 = no limit',
  },
  {
    env: 'RATE_LIMIT_BURST',
    type: 'int',
    default: '120',
    min: 1,
    description: 'Token bucket size: requests a credential may send at once above its steady rate',
  },
  {
    env: 'AUTH_FAILURE_LIMIT',
    type: 'int',
    default: '20',
    min: 0,
    description:
      'Failed authentications (401) per source address (an IPv6 address by its /64) within AUTH_FAILURE_WINDOW_S; beyond it every request from that address is answered 429 with Retry-After, before any key is checked, until the window ends. Counted in Redis, shared by every instance; 0 = no limit',
  },
  {
    env: 'AUTH_FAILURE_WINDOW_S',
    type: 'int',
    default: '60',
    min: 1,
    max: 3600,
    description:
      'Window of AUTH_FAILURE_LIMIT (aligned to the clock), and of the audit of failed authentications: one AuditEvent per source (address and key id) at its first failure in a window, one summary with the count when the window ends',
  },
  {
    env: 'MLLP_ALLOWED_SENDERS',
    type: 'list',
    description:
      'MLLP senders per sending facility (MSH-4): FACILITY=entry|entry,... where an entry is an IP address, a CIDR block (10.1.0.0/16) or cert:<SHA-256 fingerprint of the TLS client certificate>; facility * applies to any facility. Unset: any sender with the sandbox EHR; with FHIR_BASE_URL set, MLLP answers AR to everyone unless mutual TLS or MLLP_ALLOW_ANY_SENDER',
  },
  { env: 'AUDIT_FORWARD', type: 'bool', default: 'false', description: 'Also send every AuditEvent to the EHR through the delivery queue' },
  {
    env: 'AUDIT_MAX_EVENTS',
    type: 'int',
    default: '100000',
    min: 100,
    description:
      'Lifecycle and data AuditEvents kept in Redis (gw:audit: administrative actions, device lifecycle, credentials, adapters; oldest dropped first; forward them with AUDIT_FORWARD for long-term retention)',
  },
  {
    env: 'AUDIT_SECURITY_MAX_EVENTS',
    type: 'int',
    default: '100000',
    min: 100,
    description:
      'Security AuditEvents kept in Redis (gw:audit:security: refused access and refused data), apart from AUDIT_MAX_EVENTS so that a flood of refusals never evicts lifecycle history',
  },
];

export interface DeviceConfig {
  unknownDevicePolicy: UnknownDevicePolicy;
  patientBinding: PatientBinding;
  channelPolicy: Partial<Record<string, UnknownDevicePolicy>>;
  facilityPolicy: Map<string, UnknownDevicePolicy>;
  offlineAfterMs: number;
  offlineAfterMsByType: Map<string, number>;
  offlineCheckIntervalMs: number;
  webhookUrl?: string;
  webhookTimeoutMs: number;
  heldMax: number;
  credentialCacheTtlMs: number;
  deviceCacheMax: number;
  rotationOverlapMs: number;
  rateLimitPerMinute: number;
  rateLimitBurst: number;
  signingKey?: string;
  hmacWindowS: number;
  mllpAllowedSenders: string[];
  auditForward: boolean;
  auditMaxEvents: number;
  auditSecurityMaxEvents: number;
  authFailureLimit: number;
  authFailureWindowS: number;
  adminApiKey?: string;
  deviceIdentifierSystem: string;
  patientIdentifierSystem: string;
}

/** Parses `k=v` list entries; reports malformed ones. */
export function parseMap<T>(entries: string[], env: string, value: (v: string) => T | undefined, errors: string[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const e of entries) {
    const i = e.indexOf('=');
    const k = i > 0 ? e.slice(0, i).trim() : '';
    const v = i > 0 ? value(e.slice(i + 1).trim()) : undefined;
    if (!k || v === undefined) errors.push(`${env}: '${e}' is not key=value with a valid value`);
    else out.set(k, v);
  }
  return out;
}

/** Reads the device keys from the loaded configuration (`config.raw`). Throws a ConfigError with every error at once. */
export function readDeviceConfig(
  raw: ReadonlyMap<string, ConfigValue>,
  core: { adminApiKey?: string; deviceIdentifierSystem: string; patientIdentifierSystem: string; sandbox?: boolean },
): DeviceConfig {
  const errors: string[] = [];
  const v = (k: string) => raw.get(k);
  const policy = (s: string) => ((POLICY_VALUES as readonly string[]).includes(s) ? (s as UnknownDevicePolicy) : undefined);
  const ms = (s: string) => (/^\d+$/.test(s) && Number(s) > 0 ? Number(s) : undefined);
  const channelPolicy: DeviceConfig['channelPolicy'] = {};
  for (const ch of ['http', 'mllp', 'mqtt']) {
    const p = v(`UNKNOWN_DEVICE_POLICY_${ch.toUpperCase()}`) as UnknownDevicePolicy | undefined;
    if (p) channelPolicy[ch] = p;
  }
  const cfg: DeviceConfig = {
    unknownDevicePolicy: (v('UNKNOWN_DEVICE_POLICY') as UnknownDevicePolicy | undefined) ?? (core.sandbox ? 'accept' : 'reject'),
    patientBinding: (v('DEVICE_PATIENT_BINDING') as PatientBinding | undefined) ?? 'assigned-only',
    channelPolicy,
    facilityPolicy: parseMap(
      (v('UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES') as string[] | undefined) ?? [],
      'UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES',
      policy,
      errors,
    ),
    offlineAfterMs: v('DEVICE_OFFLINE_AFTER_MS') as number,
    offlineAfterMsByType: parseMap(
      (v('DEVICE_OFFLINE_AFTER_MS_BY_TYPE') as string[] | undefined) ?? [],
      'DEVICE_OFFLINE_AFTER_MS_BY_TYPE',
      ms,
      errors,
    ),
    offlineCheckIntervalMs: v('DEVICE_OFFLINE_CHECK_INTERVAL_MS') as number,
    webhookUrl: v('DEVICE_WEBHOOK_URL') as string | undefined,
    webhookTimeoutMs: v('DEVICE_WEBHOOK_TIMEOUT_MS') as number,
    heldMax: v('DEVICE_HELD_MAX') as number,
    credentialCacheTtlMs: v('CREDENTIAL_CACHE_TTL_MS') as number,
    deviceCacheMax: v('DEVICE_CACHE_MAX') as number,
    rotationOverlapMs: v('CREDENTIAL_ROTATION_OVERLAP_MS') as number,
    rateLimitPerMinute: v('RATE_LIMIT_PER_MINUTE') as number,
    rateLimitBurst: v('RATE_LIMIT_BURST') as number,
    signingKey: v('CREDENTIAL_SIGNING_KEY') as string | undefined,
    hmacWindowS: v('HMAC_WINDOW_S') as number,
    mllpAllowedSenders: (v('MLLP_ALLOWED_SENDERS') as string[] | undefined) ?? [],
    auditForward: v('AUDIT_FORWARD') as boolean,
    auditMaxEvents: v('AUDIT_MAX_EVENTS') as number,
    auditSecurityMaxEvents: v('AUDIT_SECURITY_MAX_EVENTS') as number,
    authFailureLimit: v('AUTH_FAILURE_LIMIT') as number,
    authFailureWindowS: v('AUTH_FAILURE_WINDOW_S') as number,
    adminApiKey: core.adminApiKey,
    deviceIdentifierSystem: core.deviceIdentifierSystem,
    patientIdentifierSystem: core.patientIdentifierSystem,
  };
  if (cfg.signingKey !== undefined && cfg.signingKey.length < 32) errors.push('CREDENTIAL_SIGNING_KEY must be at least 32 characters');
  if (errors.length) throw new ConfigError(errors);
  return cfg;
}
