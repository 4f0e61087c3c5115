/**
 * The gateway's core configuration: its keys (see schema.ts for the format) and the typed object the code reads.
 * Feature fragments (HL7v2, devices, MQTT, plugins) live with their features; app/features.ts lists them all once
 * (ALL_KEYS) and loads them together, so every error of every fragment is reported at once.
 */
import proxyaddr from 'proxy-addr';
import { type DestinationAuthConfig, EHR_AUTH_METHODS, readDestinationAuth, SIGNING_ALGS } from './ehr-auth.js';
import { type Destination, defaultDestination, readDestinationsFile } from './destinations.js';
import { ConfigError, type ConfigKey, type ConfigValue, describeKeys, loadKeys } from './schema.js';

export { ConfigError } from './schema.js';

export const MAPPING_KEYS: readonly ConfigKey[] = [
  {
    env: 'MAPPINGS_DIR',
    type: 'string',
    description: 'Folder of declarative device mappings (one folder per adapter). Unset: the mappings/ folder shipped with the gateway',
  },
  { env: 'MAPPINGS_WATCH', type: 'bool', default: 'true', description: 'Reload mappings when their files change' },
];

export const CORE_KEYS: readonly ConfigKey[] = [
  {
    env: 'GATEWAY_ROLE',
    type: 'enum',
    default: 'all',
    values: ['all', 'ingest', 'worker'],
    description:
      'What this process does: all (ingest and delivery), ingest (receive, translate, validate, enqueue) or worker (deliver queued jobs); --role overrides it',
  },
  {
    env: 'DELIVERY_THREAD',
    type: 'enum',
    default: 'auto',
    values: ['auto', 'on', 'off'],
    description:
      'Role all: deliver on a thread of its own beside ingest, so that the process uses two cores (auto: on where the process may use at least two, its CPU affinity and its cgroup CPU quota counted). off: ingest and delivery share one thread (docs/scaling.md)',
  },
  { env: 'PORT', type: 'int', default: '8080', min: 0, max: 65535, description: 'HTTP port (ingest API, admin API, sandbox EHR)' },
  { env: 'HOST', type: 'string', default: '127.0.0.1', description: 'HTTP bind address (0.0.0.0 in containers)' },
  {
    env: 'TRUST_PROXY',
    type: 'list',
    description:
      'The load balancers or reverse proxies in front of the HTTP port (addresses, CIDR blocks, or loopback, linklocal, uniquelocal; only the proxies: a client inside these could name any address for itself): from them X-Forwarded-For gives the client address (failed-authentication limit, audit) and X-Forwarded-Proto whether it used TLS (the console cookie is then Secure). Unset: the TCP peer, and those headers are ignored (docs/security.md)',
  },
  {
    env: 'REDIS_URL',
    type: 'url',
    description:
      'Redis for the queue and gateway state. Unset (and neither REDIS_SENTINELS nor REDIS_CLUSTER_NODES set): start a private redis-server (AOF on) under REDIS_DATA_DIR',
  },
  {
    env: 'REDIS_DATA_DIR',
    type: 'string',
    default: 'data/redis',
    description: 'Data folder of the private redis-server started when REDIS_URL is unset',
  },
  {
    env: 'REDIS_APPENDFSYNC',
    type: 'enum',
    default: 'everysec',
    values: ['everysec', 'always'],
    description:
      'When the private redis-server (REDIS_URL unset) writes its AOF to disk: everysec (a crash of the machine can lose about the last second of acknowledged readings) or always (before every acknowledgement; slower, see docs/operations.md). Your own Redis: set appendfsync there',
  },
  {
    env: 'REDIS_SENTINELS',
    type: 'list',
    description:
      'Redis Sentinels (host:port,host:port): the gateway asks them for the master named REDIS_SENTINEL_NAME and follows it across a failover (docs/scaling.md). REDIS_URL then gives only the password and database',
  },
  {
    env: 'REDIS_SENTINEL_NAME',
    type: 'string',
    default: 'mymaster',
    description: "The master's name in the Sentinels' configuration (sentinel monitor <name> ...), when REDIS_SENTINELS is set",
  },
  {
    env: 'REDIS_CLUSTER_NODES',
    type: 'list',
    description:
      'Nodes of a Redis Cluster (host:port,host:port; some are enough, the others are learnt from them): every connection is a cluster client and the keys used together carry hash tags, each destination queue its own (docs/scaling.md). Not with REDIS_SENTINELS; REDIS_URL then gives only the password',
  },
  {
    env: 'REDIS_WAIT_REPLICAS',
    type: 'int',
    default: '0',
    min: 0,
    max: 16,
    description:
      'Replicas that must hold a job before its sender is acknowledged (Redis WAIT after each enqueue); a shortfall within REDIS_WAIT_TIMEOUT_MS refuses with 503. 0: acknowledge on the master alone (a failover can lose the last acknowledged jobs, docs/scaling.md)',
  },
  {
    env: 'REDIS_WAIT_TIMEOUT_MS',
    type: 'int',
    default: '1000',
    min: 1,
    max: 60000,
    description: 'How long an enqueue waits for REDIS_WAIT_REPLICAS replicas before it refuses with 503',
  },
  {
    env: 'REDIS_COMMAND_TIMEOUT_MS',
    type: 'int',
    default: '10000',
    min: 0,
    max: 600000,
    description:
      "How long a command of the gateway's own Redis connection (device registry, credentials, refusals, audit trail, the APIs) waits for Redis's answer before it fails and the request is answered 503: Redis connected but not answering (blocked, paused, a network partition) would otherwise hold API requests for as long. 0: no bound. The queue's connections are bound by ENQUEUE_TIMEOUT_MS and bull's lock duration instead",
  },
  {
    env: 'FHIR_BASE_URL',
    type: 'url',
    description: 'Base URL of the EHR FHIR R4 server. Unset: serve and use the in-memory sandbox EHR at /sandbox/fhir',
  },
  {
    env: 'SANDBOX_PERSIST',
    type: 'bool',
    default: 'true',
    description:
      "Keep the sandbox EHR's data across restarts in SANDBOX_DATA_DIR (false: in memory only). Used only when FHIR_BASE_URL is unset",
  },
  {
    env: 'SANDBOX_DATA_DIR',
    type: 'string',
    default: 'data/sandbox',
    description:
      'Data folder of the sandbox EHR (a snapshot of its resources, rewritten after writes: within about a second, later for a large sandbox)',
  },
  {
    env: 'SANDBOX_MAX_OBSERVATIONS',
    type: 'int',
    default: '20000',
    min: 0,
    description:
      "Most Observations the sandbox EHR keeps (0: no limit); past it the oldest are dropped. The sandbox holds its data in the gateway process's memory, about 2 KB an Observation",
  },
  {
    env: 'SANDBOX_AUTH',
    type: 'enum',
    default: 'none',
    values: ['none', 'smart'],
    description:
      'What the sandbox EHR demands: none, or smart (OAuth2 bearer tokens from its token endpoint, issued to the clients of SANDBOX_SMART_CLIENTS by SMART Backend Services or a client secret, and their scopes enforced)',
  },
  {
    env: 'SANDBOX_SMART_CLIENTS',
    type: 'string',
    secret: true,
    description:
      'Clients of the sandbox EHR when SANDBOX_AUTH=smart: JSON (or a JSON file) of client id -> {"jwks_url": URL (relative: on the sandbox\'s own host) | "jwks": {keys}, or "secret", and "scope": the allowed scopes}',
  },
  {
    env: 'SANDBOX_TOKEN_LIFETIME_S',
    type: 'int',
    default: '300',
    min: 1,
    max: 86400,
    description: 'Lifetime of the access tokens the sandbox EHR issues when SANDBOX_AUTH=smart',
  },
  {
    env: 'FHIR_AUTH',
    type: 'enum',
    default: 'none',
    values: EHR_AUTH_METHODS,
    description:
      'How the gateway authenticates to the EHR: none, bearer (FHIR_BEARER_TOKEN), smart (SMART Backend Services: a JWT signed with FHIR_SMART_KEYS) or client-secret (OAuth2 client credentials). See docs/ehr.md',
  },
  {
    env: 'DESTINATIONS_FILE',
    type: 'string',
    description:
      'JSON file of the delivery destinations (several FHIR servers, each with its own queue, auth, write mode and filter; see docs/destinations.md). Unset: one destination, ehr, from FHIR_BASE_URL and FHIR_AUTH',
  },
  { env: 'FHIR_BEARER_TOKEN', type: 'string', secret: true, description: 'Static bearer token sent to the EHR when FHIR_AUTH=bearer' },
  {
    env: 'FHIR_CLIENT_ID',
    type: 'string',
    description: "The gateway's OAuth2 client id at the EHR's authorization server (FHIR_AUTH=smart or client-secret)",
  },
  {
    env: 'FHIR_SMART_KEYS',
    type: 'list',
    description:
      "The gateway's private keys (PEM or JWK files, or folders of them, in name order) when FHIR_AUTH=smart: the first signs, all are published at /.well-known/jwks.json (key rotation)",
  },
  {
    env: 'FHIR_SMART_ALG',
    type: 'enum',
    values: SIGNING_ALGS,
    description: 'Algorithm of the client assertion (FHIR_AUTH=smart). Unset: RS384 for an RSA key, ES384 for an EC P-384 key',
  },
  {
    env: 'FHIR_SCOPES',
    type: 'string',
    description:
      'Scopes requested from the token endpoint, space-separated, as the EHR names them (SMART v1 system/Observation.write or v2 system/Observation.c; Azure: <fhir-url>/.default)',
  },
  {
    env: 'FHIR_TOKEN_URL',
    type: 'url',
    description: "The EHR's token endpoint. Unset: discovered from <FHIR_BASE_URL>/.well-known/smart-configuration",
  },
  { env: 'FHIR_CLIENT_SECRET', type: 'string', secret: true, description: 'The client secret when FHIR_AUTH=client-secret' },
  {
    env: 'FHIR_CLIENT_AUTH_METHOD',
    type: 'enum',
    default: 'basic',
    values: ['basic', 'post'],
    description:
      'How the client secret is sent to the token endpoint: basic (client_secret_basic, an Authorization header) or post (client_secret_post, in the form)',
  },
  {
    env: 'FHIR_TLS_CERT',
    type: 'string',
    description: 'Mutual TLS to the EHR: the client certificate (PEM file), with FHIR_TLS_KEY. Combines with any FHIR_AUTH',
  },
  { env: 'FHIR_TLS_KEY', type: 'string', secret: true, description: 'Mutual TLS to the EHR: the private key (PEM file) of FHIR_TLS_CERT' },
  {
    env: 'FHIR_TLS_CA',
    type: 'string',
    description:
      "CA certificates (PEM file) the EHR's and token endpoint's TLS certificates are checked against, for a private CA (replaces the public CAs for the EHR's host)",
  },
  { env: 'FHIR_TIMEOUT_MS', type: 'int', default: '15000', min: 100, description: 'Timeout of every EHR request' },
  {
    env: 'UNKNOWN_PATIENT_POLICY',
    type: 'enum',
    values: ['reject', 'create'],
    description:
      'Patient the EHR does not know: reject (dead letter; default with a real EHR) or create a minimal Patient (default with the sandbox)',
  },
  {
    env: 'DEVICE_IDENTIFIER_SYSTEM',
    type: 'string',
    default: 'urn:iomt-gateway:device-id',
    description: "Identifier system of device ids that payloads carry without one (set it to your organisation's)",
  },
  {
    env: 'PATIENT_IDENTIFIER_SYSTEM',
    type: 'string',
    default: 'urn:iomt-gateway:patient-id',
    description: 'Identifier system of patient ids (MRNs) that payloads carry without one (set it to your MRN system)',
  },
  { env: 'QUEUE_NAME', type: 'string', default: 'iomt-delivery', description: 'Name of the bull delivery queue in Redis' },
  {
    env: 'QUEUE_MAX_DEPTH',
    type: 'int',
    default: '100000',
    min: 1,
    description: 'Jobs waiting or delayed above which ingest answers 503 (backpressure)',
  },
  {
    env: 'ENQUEUE_TIMEOUT_MS',
    type: 'int',
    default: '5000',
    min: 10,
    description:
      'How long ingest (translation, device checks, queue write), keeping a refused message, replaying a kept one and a request\'s credential reads may wait on Redis before the caller is answered 503 / AE "retry later" (MQTT: no PUBACK, the broker redelivers)',
  },
  { env: 'DELIVERY_CONCURRENCY', type: 'int', default: '16', min: 1, max: 1000, description: 'Jobs one worker process delivers at once' },
  {
    env: 'DELIVERY_BATCH_MAX',
    type: 'int',
    default: '100',
    min: 1,
    max: 1000,
    description:
      'Most readings in one job (a larger message becomes several) and in one EHR transaction, which carries the jobs that arrive while earlier ones are in flight (1: one reading per job and per transaction)',
  },
  {
    env: 'INGEST_COMBINE',
    type: 'bool',
    default: 'true',
    description:
      'Messages that arrive while an enqueue is in flight are queued together as jobs of up to DELIVERY_BATCH_MAX readings (each still acknowledged only once its readings are in Redis); false: one job per message',
  },
  {
    env: 'DELIVERY_TRANSACTIONS',
    type: 'int',
    default: '2',
    min: 1,
    max: 100,
    description: 'Most EHR transactions one worker process has in flight',
  },
  {
    env: 'DELIVERY_DEVICE_CACHE_S',
    type: 'int',
    default: '0',
    min: 0,
    max: 86400,
    description:
      "How long a Device's id, learnt from the EHR's answer to a transaction, is used instead of writing the Device again (a conditional create, a search on the EHR, in every transaction). A transaction the EHR refuses that referred to a Device by id is written again with the Device's conditional create. Only for an EHR that refuses a reference to a Device it does not have (HAPI FHIR does by default): one that does not would keep Observations that refer to a Device it lost or deleted. A destinations file sets it per destination (deviceCacheS). 0: every transaction carries its Devices",
  },
  {
    env: 'DELIVERY_ATTEMPTS',
    type: 'int',
    default: '10',
    min: 1,
    description: 'Attempts per job (first try included) before it becomes a dead letter',
  },
  { env: 'RETRY_BASE_DELAY_MS', type: 'int', default: '1000', min: 1, description: 'First retry delay; doubles per attempt, with jitter' },
  {
    env: 'RETRY_MAX_DELAY_MS',
    type: 'int',
    default: '300000',
    min: 1,
    description: 'Cap of the retry delay (also caps an EHR Retry-After)',
  },
  {
    env: 'BREAKER_FAILURE_THRESHOLD',
    type: 'int',
    default: '10',
    min: 0,
    description:
      'Failures of the EHR in a row (no answer, timeout, 5xx, 429, 408; not a 4xx refusal of a reading) after which its circuit breaker opens: no request is sent but one probe at a time, and waiting readings keep their attempts (an outage delays them, it does not dead-letter them). 0: no breaker',
  },
  {
    env: 'BREAKER_PROBE_INTERVAL_MS',
    type: 'int',
    default: '5000',
    min: 10,
    description: 'Time from the opening of the circuit breaker to its first probe; doubles after each failed probe (with jitter)',
  },
  {
    env: 'BREAKER_PROBE_MAX_INTERVAL_MS',
    type: 'int',
    default: '60000',
    min: 10,
    description: 'Cap of the time between two probes of an open circuit breaker',
  },
  {
    env: 'QUEUE_LOCK_DURATION_MS',
    type: 'int',
    default: '30000',
    min: 100,
    description: "A job's lock; a worker that dies is detected after this",
  },
  {
    env: 'QUEUE_STALLED_INTERVAL_MS',
    type: 'int',
    default: '5000',
    min: 100,
    description: 'How often workers look for jobs of dead workers',
  },
  {
    env: 'KEY_LOCK_WAIT_MS',
    type: 'int',
    default: '20000',
    min: 10,
    description: 'How long a job waits for another job of the same device or patient before it is retried',
  },
  {
    env: 'DEDUPE_WINDOW_S',
    type: 'int',
    default: '300',
    min: 1,
    description:
      'How long an identical submission (same adapter, same content) is answered as a resend of the first (same job id) instead of being queued again. A resend after the window is queued: it reaches an EHR that lost the data, and conditional creates keep an EHR that has it free of duplicates',
  },
  {
    env: 'JOB_RETENTION_COMPLETED',
    type: 'int',
    default: '10000',
    min: 0,
    description: 'Completed jobs kept in Redis, for inspection (identical submissions are one job within DEDUPE_WINDOW_S)',
  },
  {
    env: 'REFUSALS_MAX',
    type: 'int',
    default: '10000',
    min: 1,
    description:
      'Refused messages of every channel kept (raw, with the reason) for inspection and replay at /api/refusals; oldest dropped first',
  },
  {
    env: 'REFUSALS_MAX_PAYLOAD_BYTES',
    type: 'int',
    default: '65536',
    min: 1024,
    description:
      'Largest refused payload kept whole; a larger one is kept as its first bytes with its size and SHA-256, and cannot be replayed (the sender must resend it)',
  },
  {
    env: 'REFUSALS_MAX_BYTES',
    type: 'int',
    default: '104857600',
    min: 65536,
    description:
      'Bytes the refusal store may hold in all (entries with their payloads); oldest dropped first. At least twice REFUSALS_MAX_PAYLOAD_BYTES',
  },
  { env: 'INGEST_MAX_BODY_BYTES', type: 'int', default: '1048576', min: 1024, description: 'Largest accepted request body' },
  {
    env: 'ADMIN_API_KEY',
    type: 'string',
    secret: true,
    description:
      'Bootstrap admin key for /api (Authorization: Bearer <key>). Unset: /api is open on the bind address; set it in production',
  },
  { env: 'SHUTDOWN_TIMEOUT_MS', type: 'int', default: '30000', min: 0, description: 'How long shutdown waits for in-flight jobs' },
  {
    env: 'HEAP_GROWTH_PERCENT',
    type: 'int',
    default: '100',
    min: 0,
    max: 1000,
    description:
      'How far the JavaScript heap may grow past what a full garbage collection left live before the next one (percent); lower uses less memory and more CPU. 0: V8 decides (up to 300 on a large machine). Applied by the start command (docs/scaling.md, Memory)',
  },
  {
    env: 'LOG_LEVEL',
    type: 'enum',
    default: 'info',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    description: 'Log level (logs are JSON lines, without PHI)',
  },
  {
    env: 'LOG_FORMAT',
    type: 'enum',
    default: 'json',
    values: ['json', 'pretty'],
    description: 'json: one JSON line per event (for log collectors); pretty: a readable line for a terminal. Both without PHI',
  },
];

export type Role = 'all' | 'ingest' | 'worker';
export const ROLES: readonly Role[] = ['all', 'ingest', 'worker'];

export interface Config {
  role: Role;
  /** DELIVERY_THREAD: role all delivers on a thread of its own (app/delivery-thread.ts). */
  deliveryThread: 'auto' | 'on' | 'off';
  port: number;
  host: string;
  /** TRUST_PROXY: the proxies whose forwarding headers are believed (http/client.ts); empty: none. */
  trustProxy: string[];
  redisUrl?: string;
  redisDataDir: string;
  redisAppendFsync: 'everysec' | 'always';
  /** host:port of each Redis Sentinel (empty: REDIS_URL or the private redis-server). */
  redisSentinels: string[];
  redisSentinelName: string;
  /** host:port of some nodes of a Redis Cluster (empty: not a cluster). */
  redisClusterNodes: string[];
  redisWaitReplicas: number;
  redisWaitTimeoutMs: number;
  /** REDIS_COMMAND_TIMEOUT_MS: the bound on each command of the gateway's own connection (0: none). */
  redisCommandTimeoutMs: number;
  fhirBaseUrl?: string;
  sandbox: boolean;
  /** Where readings are delivered: DESTINATIONS_FILE, or the one destination `ehr` (FHIR_BASE_URL or the sandbox). */
  destinations: Destination[];
  /** DESTINATIONS_FILE: the destinations come from a file (no FHIR_AUTH for the destination named ehr). */
  destinationsFile?: string;
  /** Where the sandbox keeps its data (undefined: in memory). */
  sandboxDataDir?: string;
  sandboxMaxObservations: number;
  fhirAuth: DestinationAuthConfig['auth']['method'];
  fhirBearerToken?: string;
  /** How the gateway authenticates to the EHR (FHIR_AUTH and the keys beside it). */
  ehrAuth: DestinationAuthConfig;
  /** What the sandbox EHR demands, and of whom. */
  sandboxAuth: { mode: 'none' | 'smart'; clients?: string; tokenLifetimeS: number };
  fhirTimeoutMs: number;
  unknownPatientPolicy: 'reject' | 'create';
  deviceIdentifierSystem: string;
  patientIdentifierSystem: string;
  queueName: string;
  queueMaxDepth: number;
  enqueueTimeoutMs: number;
  deliveryConcurrency: number;
  deliveryBatchMax: number;
  /** INGEST_COMBINE: concurrent messages share jobs (queue/group-commit.ts). */
  ingestCombine: boolean;
  deliveryTransactions: number;
  /** DELIVERY_DEVICE_CACHE_S. */
  deliveryDeviceCacheS: number;
  deliveryAttempts: number;
  retryBaseDelayMs: number;
  retryMaxDelayMs: number;
  breakerFailureThreshold: number;
  breakerProbeIntervalMs: number;
  breakerProbeMaxIntervalMs: number;
  queueLockDurationMs: number;
  queueStalledIntervalMs: number;
  keyLockWaitMs: number;
  jobRetentionCompleted: number;
  dedupeWindowS: number;
  ingestMaxBodyBytes: number;
  refusalsMax: number;
  refusalsMaxPayloadBytes: number;
  refusalsMaxBytes: number;
  adminApiKey?: string;
  shutdownTimeoutMs: number;
  heapGrowthPercent: number;
  logLevel: string;
  logFormat: 'json' | 'pretty';
  /** Every key's value by env name, for feature fragments. */
  raw: ReadonlyMap<string, ConfigValue>;
}

/**
 * Loads `keys` (the core keys and any feature fragments; app/features.ts passes them all) from `env`. Throws a
 * ConfigError with every error.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, keys: readonly ConfigKey[] = [...CORE_KEYS, ...MAPPING_KEYS]): Config {
  const { values: v, errors } = loadKeys(keys, env);
  const s = (k: string) => v.get(k) as string;
  const n = (k: string) => v.get(k) as number;
  const fhirBaseUrl = v.get('FHIR_BASE_URL') as string | undefined;
  const destinationsFile = v.get('DESTINATIONS_FILE') as string | undefined;
  let destinations: Destination[] = [];
  if (destinationsFile) {
    if (fhirBaseUrl) errors.push('set either FHIR_BASE_URL or DESTINATIONS_FILE, not both (name the EHR in the file)');
    const r = readDestinationsFile(destinationsFile, { timeoutMs: n('FHIR_TIMEOUT_MS') }, env);
    errors.push(...r.errors);
    destinations = r.destinations;
  } else {
    destinations = [
      defaultDestination({
        fhirBaseUrl,
        fhirAuth: s('FHIR_AUTH') as Config['fhirAuth'],
        fhirBearerToken: v.get('FHIR_BEARER_TOKEN') as string | undefined,
        fhirTimeoutMs: n('FHIR_TIMEOUT_MS'),
      }),
    ];
  }
  // The sandbox EHR is served when a destination is the sandbox (without a file: when FHIR_BASE_URL is unset).
  const sandbox = destinations.some((d) => d.sandbox);
  if (n('BREAKER_PROBE_MAX_INTERVAL_MS') < n('BREAKER_PROBE_INTERVAL_MS'))
    errors.push('BREAKER_PROBE_MAX_INTERVAL_MS must not be less than BREAKER_PROBE_INTERVAL_MS');
  if (n('REFUSALS_MAX_BYTES') < 2 * n('REFUSALS_MAX_PAYLOAD_BYTES'))
    errors.push('REFUSALS_MAX_BYTES must be at least twice REFUSALS_MAX_PAYLOAD_BYTES (the store must hold more than one entry)');
  const ehrAuth = readDestinationAuth(v);
  errors.push(...ehrAuth.errors);
  if (s('SANDBOX_AUTH') === 'smart' && !v.get('SANDBOX_SMART_CLIENTS'))
    errors.push('SANDBOX_SMART_CLIENTS is required when SANDBOX_AUTH=smart: the clients the sandbox EHR issues tokens to');
  const redisSentinels = (v.get('REDIS_SENTINELS') as string[] | undefined) ?? [];
  const redisClusterNodes = (v.get('REDIS_CLUSTER_NODES') as string[] | undefined) ?? [];
  for (const [key, list] of [
    ['REDIS_SENTINELS', redisSentinels],
    ['REDIS_CLUSTER_NODES', redisClusterNodes],
  ] as const) {
    for (const a of list) {
      const m = /^(?:\[[^\]]+\]|[^:\s]+):(\d{1,5})$/.exec(a);
      if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) errors.push(`${key}: '${a}' is not host:port`);
    }
  }
  if (redisClusterNodes.length && redisSentinels.length)
    errors.push(
      'REDIS_CLUSTER_NODES and REDIS_SENTINELS cannot both be set: a Redis Cluster fails over by itself (its replicas take over), without Sentinels',
    );
  const redisUrl = v.get('REDIS_URL') as string | undefined;
  if (redisClusterNodes.length && redisUrl && !/^\/?0?$/.test(new URL(redisUrl).pathname))
    errors.push(
      'REDIS_URL names a database other than 0, which a Redis Cluster does not have: with REDIS_CLUSTER_NODES it gives only the password',
    );
  const trustProxy = (v.get('TRUST_PROXY') as string[] | undefined) ?? [];
  try {
    // A number is an address to proxy-addr (2 is 0.0.0.2), though express reads it as a count of hops: neither is meant.
    const count = trustProxy.find((a) => /^\d+$/.test(a));
    if (count) throw new Error(`'${count}' is not an address: name the proxies, not how many there are`);
    // Trusting every address lets any client write the address it is counted and audited under.
    const everyone = trustProxy.find((a) => /\/0+$/.test(a));
    if (everyone) throw new Error(`'${everyone}' trusts every address: name the proxies' addresses or their own subnet`);
    if (trustProxy.length) proxyaddr.compile(trustProxy);
  } catch (err) {
    errors.push(`TRUST_PROXY: ${(err as Error).message} (addresses, CIDR blocks, or loopback, linklocal, uniquelocal)`);
  }
  if (errors.length) throw new ConfigError(errors);
  return {
    role: s('GATEWAY_ROLE') as Role,
    deliveryThread: s('DELIVERY_THREAD') as Config['deliveryThread'],
    port: n('PORT'),
    host: s('HOST'),
    trustProxy,
    redisUrl,
    redisDataDir: s('REDIS_DATA_DIR'),
    redisAppendFsync: s('REDIS_APPENDFSYNC') as Config['redisAppendFsync'],
    redisSentinels,
    redisSentinelName: s('REDIS_SENTINEL_NAME'),
    redisClusterNodes,
    redisWaitReplicas: n('REDIS_WAIT_REPLICAS'),
    redisWaitTimeoutMs: n('REDIS_WAIT_TIMEOUT_MS'),
    redisCommandTimeoutMs: n('REDIS_COMMAND_TIMEOUT_MS'),
    fhirBaseUrl,
    sandbox,
    destinations,
    destinationsFile,
    sandboxDataDir: v.get('SANDBOX_PERSIST') === false ? undefined : s('SANDBOX_DATA_DIR'),
    sandboxMaxObservations: n('SANDBOX_MAX_OBSERVATIONS'),
    fhirAuth: s('FHIR_AUTH') as Config['fhirAuth'],
    fhirBearerToken: v.get('FHIR_BEARER_TOKEN') as string | undefined,
    ehrAuth: ehrAuth.value as DestinationAuthConfig,
    sandboxAuth: {
      mode: s('SANDBOX_AUTH') as 'none' | 'smart',
      clients: v.get('SANDBOX_SMART_CLIENTS') as string | undefined,
      tokenLifetimeS: n('SANDBOX_TOKEN_LIFETIME_S'),
    },
    fhirTimeoutMs: n('FHIR_TIMEOUT_MS'),
    unknownPatientPolicy: ((v.get('UNKNOWN_PATIENT_POLICY') as string | undefined) ??
      (destinations.filter((d) => d.type === 'fhir').every((d) => d.sandbox) ? 'create' : 'reject')) as Config['unknownPatientPolicy'],
    deviceIdentifierSystem: s('DEVICE_IDENTIFIER_SYSTEM'),
    patientIdentifierSystem: s('PATIENT_IDENTIFIER_SYSTEM'),
    queueName: s('QUEUE_NAME'),
    queueMaxDepth: n('QUEUE_MAX_DEPTH'),
    enqueueTimeoutMs: n('ENQUEUE_TIMEOUT_MS'),
    deliveryConcurrency: n('DELIVERY_CONCURRENCY'),
    deliveryBatchMax: n('DELIVERY_BATCH_MAX'),
    ingestCombine: v.get('INGEST_COMBINE') !== false,
    deliveryTransactions: n('DELIVERY_TRANSACTIONS'),
    deliveryDeviceCacheS: n('DELIVERY_DEVICE_CACHE_S'),
    deliveryAttempts: n('DELIVERY_ATTEMPTS'),
    retryBaseDelayMs: n('RETRY_BASE_DELAY_MS'),
    retryMaxDelayMs: n('RETRY_MAX_DELAY_MS'),
    breakerFailureThreshold: n('BREAKER_FAILURE_THRESHOLD'),
    breakerProbeIntervalMs: n('BREAKER_PROBE_INTERVAL_MS'),
    breakerProbeMaxIntervalMs: n('BREAKER_PROBE_MAX_INTERVAL_MS'),
    queueLockDurationMs: n('QUEUE_LOCK_DURATION_MS'),
    queueStalledIntervalMs: n('QUEUE_STALLED_INTERVAL_MS'),
    keyLockWaitMs: n('KEY_LOCK_WAIT_MS'),
    jobRetentionCompleted: n('JOB_RETENTION_COMPLETED'),
    dedupeWindowS: n('DEDUPE_WINDOW_S'),
    ingestMaxBodyBytes: n('INGEST_MAX_BODY_BYTES'),
    refusalsMax: n('REFUSALS_MAX'),
    refusalsMaxPayloadBytes: n('REFUSALS_MAX_PAYLOAD_BYTES'),
    refusalsMaxBytes: n('REFUSALS_MAX_BYTES'),
    adminApiKey: v.get('ADMIN_API_KEY') as string | undefined,
    shutdownTimeoutMs: n('SHUTDOWN_TIMEOUT_MS'),
    heapGrowthPercent: n('HEAP_GROWTH_PERCENT'),
    logLevel: s('LOG_LEVEL'),
    logFormat: s('LOG_FORMAT') as Config['logFormat'],
    raw: v,
  };
}

export function configHelp(keys: readonly ConfigKey[]): string {
  return describeKeys(keys);
}
