/**
 * Delivery destinations: the FHIR servers the gateway delivers readings to, and the subscribers notified of what a FHIR
 * destination wrote (`"type": "subscriber"`, delivery/notifier.ts), each with its own queue, worker, circuit breaker,
 * dead letters and metrics. Configured in one JSON file (DESTINATIONS_FILE),
 * checked at start-up with every error listed; without a file, the one destination `ehr` is built from FHIR_BASE_URL
 * and FHIR_AUTH (or the sandbox EHR), as before.
 *
 * JSON rather than YAML: the `yaml` package is a development dependency of the project only.
 *
 * The file:
 *   { "destinations": [ { "name": "ehr", "baseUrl": "https://ehr.example.org/fhir", "auth": { "type": "bearer",
 *     "tokenEnv": "EHR_TOKEN" }, "writeMode": "individual", "timeoutMs": 15000, "concurrency": 8,
 *     "filter": { "resourceTypes": ["Observation", "Device"], "categories": ["vital-signs"], "codes": ["http://loinc.org|8867-4"],
 *     "adapters": ["measurements"], "channels": ["http"], "sendingFacilities": ["ICU"] } } ] }
 */
import { readFileSync } from 'node:fs';
import { type AuthKeyNames, type DestinationAuthConfig, readDestinationAuth } from './ehr-auth.js';
import type { ConfigValue } from './schema.js';

/**
 * How a destination is authenticated. `none` and `bearer` are sent as they are; `smart` (SMART Backend Services) and
 * `client-secret` (OAuth2 client credentials), and `tls` (mutual TLS) with any type, are carried as `ehrAuth`, the
 * same configuration FHIR_AUTH gives the one EHR without a file, and acted on by ehr-auth/.
 */
export type DestinationAuth =
  | { type: 'none' }
  | { type: 'bearer'; token?: string; tokenEnv?: string }
  | { type: 'smart' | 'client-secret' };
export const AUTH_TYPES = ['none', 'bearer', 'smart', 'client-secret'] as const satisfies readonly DestinationAuth['type'][];

/**
 * How readings are written: one transaction Bundle (all or nothing), one batch Bundle per dependency level (devices
 * and patients, then observations), or one request per resource. Unset: chosen from the server's CapabilityStatement.
 */
export const WRITE_MODES = ['transaction', 'batch', 'individual'] as const;
export type WriteMode = (typeof WRITE_MODES)[number];

/** What a subscriber's notifications carry (the Backport IG's `content` codes; `empty` is not offered). */
export const SUBSCRIBER_PAYLOADS = ['id-only', 'full-resource'] as const;
export type SubscriberPayload = (typeof SUBSCRIBER_PAYLOADS)[number];

/** The topic a subscriber is told about when its entry names none. */
export const DEFAULT_SUBSCRIBER_TOPIC = 'urn:iomt-gateway:topic:device-observation';

/**
 * A subscriber (`"type": "subscriber"`): a clinical system notified as the FHIR Subscriptions R5 Backport IG's rest-hook
 * channel does, after the FHIR destination it follows (`source`) has written the readings: the notification references
 * the Observations on that destination.
 */
export interface SubscriberSettings {
  /** The consumer's rest-hook endpoint (http or https). */
  endpoint: string;
  /** Headers sent with each notification (values read from the environment at start-up where `{ "env": … }`). */
  headers: Record<string, string>;
  payload: SubscriberPayload;
  /** A heartbeat notification after this many seconds with nothing sent (undefined: none). */
  heartbeatSeconds?: number;
  /** The name of the FHIR destination whose written Observations are reported. */
  source: string;
  /** The canonical URL of the topic, told in every notification. */
  topic: string;
  /** The Subscription reference told in every notification (default `Subscription/<name>`). */
  subscription: string;
}

/** Resource types a destination can be given. */
export const FILTER_RESOURCE_TYPES = ['Observation', 'Device', 'Patient', 'AuditEvent'] as const;

/** What a destination receives; every list that is set must match (an unset list matches everything). */
export interface DestinationFilter {
  resourceTypes?: string[];
  /** Observation category codes (e.g. vital-signs); an Observation matches when one of its categories is listed. */
  categories?: string[];
  /** Observation codes, `system|code` or a bare `code` (any system); an Observation matches when one coding is listed. */
  codes?: string[];
  adapters?: string[];
  channels?: string[];
  /** HL7v2 sending facilities (MSH-4); messages without one (HTTP, MQTT) do not match a set list. */
  sendingFacilities?: string[];
  /** Patient identifiers, `system|value` or a bare `value` (any system): Observations whose subject is one of them. */
  patients?: string[];
  /** Device identifiers, `system|value` or a bare `value`: Observations made by one of these devices. */
  devices?: string[];
}

export interface Destination {
  name: string;
  type: 'fhir' | 'subscriber';
  /** The FHIR base URL; undefined for the embedded sandbox EHR (`"sandbox": true`). */
  baseUrl?: string;
  sandbox: boolean;
  auth: DestinationAuth;
  /** SMART, client secret or mutual TLS (ehr-auth/): set when the entry's auth needs more than a static header. */
  ehrAuth?: DestinationAuthConfig;
  /** Undefined: chosen from the CapabilityStatement when the worker starts. */
  writeMode?: WriteMode;
  /** Individual mode: whether to send If-None-Exist (undefined: what the CapabilityStatement says). */
  conditionalCreate?: boolean;
  timeoutMs: number;
  /** Jobs delivered at once by each worker process (undefined: DELIVERY_CONCURRENCY). */
  concurrency?: number;
  /**
   * How long a Device id learnt from this destination's answers is used (seconds; 0: off; undefined:
   * DELIVERY_DEVICE_CACHE_S). Only for a server that refuses a reference to a resource it does not have.
   */
  deviceCacheS?: number;
  filter: DestinationFilter;
  /** Set for a subscriber (type `subscriber`). */
  subscriber?: SubscriberSettings;
}

/** The name of the destination built from FHIR_BASE_URL when there is no file; it keeps QUEUE_NAME and the old keys. */
export const DEFAULT_DESTINATION = 'ehr';

const NAME = /^[a-z0-9][a-z0-9_-]{0,39}$/;
const TOP_KEYS = ['destinations'];
const DEST_KEYS = [
  'name',
  'type',
  'baseUrl',
  'sandbox',
  'auth',
  'writeMode',
  'conditionalCreate',
  'timeoutMs',
  'concurrency',
  'deviceCacheS',
  'filter',
];
const SUBSCRIBER_KEYS = [
  'name',
  'type',
  'endpoint',
  'headers',
  'payload',
  'heartbeatSeconds',
  'source',
  'topic',
  'subscription',
  'timeoutMs',
  'concurrency',
  'filter',
];
const FILTER_KEYS = ['resourceTypes', 'categories', 'codes', 'adapters', 'channels', 'sendingFacilities', 'patients', 'devices'] as const;
const AUTH_KEYS: Record<string, string[]> = {
  none: ['type', 'tls'],
  bearer: ['type', 'token', 'tokenEnv', 'tls'],
  smart: ['type', 'clientId', 'keys', 'alg', 'scopes', 'tokenUrl', 'tls'],
  'client-secret': ['type', 'clientId', 'clientSecretEnv', 'authMethod', 'scopes', 'tokenUrl', 'tls'],
};
const TLS_KEYS = ['cert', 'key', 'ca'];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface DestinationDefaults {
  timeoutMs: number;
}

/**
 * Checks a parsed destinations document; answers the destinations, or every error found (each naming where it is:
 * `destinations[1].filter.codes[0]`).
 */
export function parseDestinations(
  doc: unknown,
  defaults: DestinationDefaults,
  env: NodeJS.ProcessEnv = process.env,
): { destinations: Destination[]; errors: string[] } {
  const errors: string[] = [];
  const destinations: Destination[] = [];
  if (!isObject(doc)) return { destinations, errors: ['the file must hold an object with a "destinations" list'] };
  for (const k of Object.keys(doc)) if (!TOP_KEYS.includes(k)) errors.push(`unknown key '${k}' (expected: destinations)`);
  const list = doc.destinations;
  if (!Array.isArray(list) || list.length === 0) {
    errors.push('"destinations" must be a list of at least one destination');
    return { destinations, errors };
  }
  const seen = new Map<string, number>();
  list.forEach((d, i) => {
    const at = `destinations[${i}]`;
    if (!isObject(d)) {
      errors.push(`${at}: must be an object`);
      return;
    }
    const name = d.name;
    if (d.type === 'subscriber') {
      checkName(name, at, seen, i, errors);
      destinations.push(parseSubscriber(d, at, typeof name === 'string' ? name : `#${i}`, defaults, errors, env));
      return;
    }
    for (const k of Object.keys(d)) if (!DEST_KEYS.includes(k)) errors.push(`${at}: unknown key '${k}'`);
    checkName(name, at, seen, i, errors);
    if (d.type !== undefined && d.type !== 'fhir')
      errors.push(`${at}.type: '${String(d.type)}' is not a destination type (fhir, subscriber)`);
    const sandbox = d.sandbox === true;
    if (d.sandbox !== undefined && typeof d.sandbox !== 'boolean') errors.push(`${at}.sandbox: must be true or false`);
    let baseUrl: string | undefined;
    if (d.baseUrl !== undefined) {
      if (typeof d.baseUrl !== 'string') errors.push(`${at}.baseUrl: must be a URL`);
      else {
        try {
          const u = new URL(d.baseUrl);
          if (u.protocol !== 'http:' && u.protocol !== 'https:') errors.push(`${at}.baseUrl: '${d.baseUrl}' is not an http(s) URL`);
          else baseUrl = d.baseUrl.replace(/\/+$/, '');
        } catch {
          errors.push(`${at}.baseUrl: '${d.baseUrl}' is not a URL`);
        }
      }
    }
    if (sandbox && d.baseUrl !== undefined) errors.push(`${at}: set either baseUrl or "sandbox": true, not both`);
    if (!sandbox && d.baseUrl === undefined) errors.push(`${at}: baseUrl is required (or "sandbox": true for the sandbox EHR)`);
    const auth = parseAuth(d.auth, `${at}.auth`, errors, env);
    const ehrAuth = parseEhrAuth(d.auth, `${at}.auth`, errors, env);
    let writeMode: WriteMode | undefined;
    if (d.writeMode !== undefined) {
      if (WRITE_MODES.includes(d.writeMode as WriteMode)) writeMode = d.writeMode as WriteMode;
      else
        errors.push(
          `${at}.writeMode: '${String(d.writeMode)}' is not one of ${WRITE_MODES.join(', ')} (or leave it out to choose from the server's CapabilityStatement)`,
        );
    }
    if (d.conditionalCreate !== undefined && typeof d.conditionalCreate !== 'boolean')
      errors.push(`${at}.conditionalCreate: must be true or false`);
    const timeoutMs = int(d, 'timeoutMs', 100, 600_000, at, errors) ?? defaults.timeoutMs;
    const concurrency = int(d, 'concurrency', 1, 1000, at, errors);
    const deviceCacheS = int(d, 'deviceCacheS', 0, 86_400, at, errors);
    const filter = parseFilter(d.filter, `${at}.filter`, errors);
    destinations.push({
      name: typeof name === 'string' ? name : `#${i}`,
      type: 'fhir',
      baseUrl,
      sandbox,
      auth,
      ...(ehrAuth ? { ehrAuth } : {}),
      writeMode,
      conditionalCreate: typeof d.conditionalCreate === 'boolean' ? d.conditionalCreate : undefined,
      timeoutMs,
      concurrency,
      ...(deviceCacheS !== undefined ? { deviceCacheS } : {}),
      filter,
    });
  });
  // A subscriber follows a FHIR destination of the file: the first one unless it names another.
  const fhir = destinations.filter((d) => d.type === 'fhir');
  list.forEach((d, i) => {
    const sub = isObject(d) && d.type === 'subscriber' ? destinations.find((x) => x.name === d.name)?.subscriber : undefined;
    if (!sub) return;
    if (d.source === undefined) {
      if (fhir.length) sub.source = fhir[0].name;
      else errors.push(`destinations[${i}]: a subscriber follows a FHIR destination, and the file has none`);
    } else if (!fhir.some((f) => f.name === sub.source))
      errors.push(
        `destinations[${i}].source: '${sub.source}' is not a FHIR destination of the file (${fhir.map((f) => f.name).join(', ') || 'none'})`,
      );
  });
  // FHIR destinations first: the first destination is the default of the dead-letter API and /api/status.
  return { destinations: [...fhir, ...destinations.filter((d) => d.type === 'subscriber')], errors };
}

function checkName(name: unknown, at: string, seen: Map<string, number>, i: number, errors: string[]): void {
  if (typeof name !== 'string' || !NAME.test(name)) {
    errors.push(`${at}.name: must be 1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit`);
  } else if (seen.has(name)) {
    errors.push(`${at}.name: '${name}' is also the name of destinations[${seen.get(name)}]`);
  } else seen.set(name, i);
}

function int(d: Record<string, unknown>, k: string, min: number, max: number, at: string, errors: string[]): number | undefined {
  const v = d[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    errors.push(`${at}.${k}: must be a whole number from ${min} to ${max}`);
    return undefined;
  }
  return v;
}

/** A header name (RFC 9110 token) and a value without control characters. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function parseSubscriber(
  d: Record<string, unknown>,
  at: string,
  name: string,
  defaults: DestinationDefaults,
  errors: string[],
  env: NodeJS.ProcessEnv,
): Destination {
  for (const k of Object.keys(d))
    if (!SUBSCRIBER_KEYS.includes(k)) errors.push(`${at}: unknown key '${k}' for a subscriber (keys: ${SUBSCRIBER_KEYS.join(', ')})`);
  let endpoint = '';
  if (typeof d.endpoint !== 'string') errors.push(`${at}.endpoint: the subscriber's rest-hook URL is required`);
  else {
    try {
      const u = new URL(d.endpoint);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') errors.push(`${at}.endpoint: '${d.endpoint}' is not an http(s) URL`);
      else endpoint = d.endpoint;
    } catch {
      errors.push(`${at}.endpoint: '${d.endpoint}' is not a URL`);
    }
  }
  const headers: Record<string, string> = {};
  if (d.headers !== undefined) {
    if (!isObject(d.headers)) errors.push(`${at}.headers: must be an object of header names to values`);
    else
      for (const [h, v] of Object.entries(d.headers)) {
        const where = `${at}.headers.${h}`;
        if (!HEADER_NAME.test(h)) errors.push(`${where}: not a header name`);
        let value: string | undefined;
        if (typeof v === 'string') value = v;
        else if (isObject(v) && typeof v.env === 'string' && Object.keys(v).length === 1) {
          value = env[v.env];
          if (value === undefined) errors.push(`${where}.env: the environment variable ${v.env} is not set`);
        } else errors.push(`${where}: must be a string or { "env": "VARIABLE" } (keep secrets out of the file)`);
        if (value !== undefined && !HEADER_VALUE.test(value)) errors.push(`${where}: the value has control characters`);
        else if (value !== undefined) headers[h.toLowerCase()] = value;
      }
  }
  let payload: SubscriberPayload = 'id-only';
  if (d.payload !== undefined) {
    if (SUBSCRIBER_PAYLOADS.includes(d.payload as SubscriberPayload)) payload = d.payload as SubscriberPayload;
    else errors.push(`${at}.payload: '${String(d.payload)}' is not one of ${SUBSCRIBER_PAYLOADS.join(', ')}`);
  }
  const heartbeatSeconds = int(d, 'heartbeatSeconds', 1, 86_400, at, errors);
  const str = (k: 'source' | 'topic' | 'subscription'): string | undefined => {
    const v = d[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !v.trim()) {
      errors.push(`${at}.${k}: must be a non-empty string`);
      return undefined;
    }
    return v;
  };
  const topic = str('topic');
  if (topic !== undefined && !/^[a-z][a-z0-9+.-]*:\S+$/i.test(topic)) errors.push(`${at}.topic: '${topic}' is not a canonical URL`);
  const filter = parseFilter(d.filter, `${at}.filter`, errors);
  if (filter.sendingFacilities)
    errors.push(`${at}.filter.sendingFacilities: not offered for a subscriber (it is notified of what its source delivered)`);
  return {
    name,
    type: 'subscriber',
    sandbox: false,
    auth: { type: 'none' },
    timeoutMs: int(d, 'timeoutMs', 100, 600_000, at, errors) ?? defaults.timeoutMs,
    concurrency: int(d, 'concurrency', 1, 1000, at, errors),
    filter,
    subscriber: {
      endpoint,
      headers,
      payload,
      heartbeatSeconds,
      source: str('source') ?? '',
      topic: topic ?? DEFAULT_SUBSCRIBER_TOPIC,
      subscription: str('subscription') ?? `Subscription/${name}`,
    },
  };
}

function parseAuth(v: unknown, at: string, errors: string[], env: NodeJS.ProcessEnv): DestinationAuth {
  if (v === undefined) return { type: 'none' };
  if (!isObject(v) || typeof v.type !== 'string' || !AUTH_KEYS[v.type]) {
    errors.push(`${at}: must be an object with "type": one of ${AUTH_TYPES.join(', ')}`);
    return { type: 'none' };
  }
  for (const k of Object.keys(v)) if (!AUTH_KEYS[v.type].includes(k)) errors.push(`${at}: unknown key '${k}' for type '${v.type}'`);
  if (v.type === 'none') return { type: 'none' };
  if (v.type === 'smart' || v.type === 'client-secret') return { type: v.type };
  const token = typeof v.token === 'string' && v.token ? v.token : undefined;
  const tokenEnv = typeof v.tokenEnv === 'string' && v.tokenEnv ? v.tokenEnv : undefined;
  if (!!token === !!tokenEnv) errors.push(`${at}: bearer needs exactly one of "token" or "tokenEnv" (the name of an environment variable)`);
  else if (tokenEnv && !env[tokenEnv]) errors.push(`${at}.tokenEnv: the environment variable ${tokenEnv} is not set`);
  return { type: 'bearer', token, tokenEnv };
}

/**
 * SMART, client secret and mutual TLS: read by the same validator as the FHIR_* settings of the one EHR
 * (config/ehr-auth.ts), with the entry's JSON paths as the names its errors give. The client secret is never written in
 * the file: `clientSecretEnv` names the environment variable that holds it.
 */
function parseEhrAuth(v: unknown, at: string, errors: string[], env: NodeJS.ProcessEnv): DestinationAuthConfig | undefined {
  if (!isObject(v) || typeof v.type !== 'string' || !AUTH_KEYS[v.type]) return undefined;
  const oauth = v.type === 'smart' || v.type === 'client-secret';
  if (!oauth && v.tls === undefined) return undefined;
  const tls = v.tls === undefined ? {} : v.tls;
  if (!isObject(tls)) {
    errors.push(`${at}.tls: must be an object with cert, key and ca (file paths)`);
    return undefined;
  }
  for (const k of Object.keys(tls)) if (!TLS_KEYS.includes(k)) errors.push(`${at}.tls: unknown key '${k}'`);
  const names: AuthKeyNames = {
    method: `${at}.type`,
    bearerToken: `${at}.token`,
    clientId: `${at}.clientId`,
    keys: `${at}.keys`,
    alg: `${at}.alg`,
    scopes: `${at}.scopes`,
    tokenUrl: `${at}.tokenUrl`,
    clientSecret: `${at}.clientSecretEnv`,
    authMethod: `${at}.authMethod`,
    tlsCert: `${at}.tls.cert`,
    tlsKey: `${at}.tls.key`,
    tlsCa: `${at}.tls.ca`,
  };
  const values = new Map<string, ConfigValue>();
  const put = (name: string, x: unknown) => {
    if (typeof x === 'string') values.set(name, x);
    else if (Array.isArray(x) && x.every((e) => typeof e === 'string')) values.set(name, x as string[]);
    else if (x !== undefined)
      errors.push(`${name}: must be ${name.endsWith('.keys') || name.endsWith('.scopes') ? 'a string or a list of strings' : 'a string'}`);
  };
  put(names.method, v.type === 'bearer' ? 'none' : v.type); // a bearer token is sent as the destination's header
  put(names.clientId, v.clientId);
  put(names.keys, typeof v.keys === 'string' ? [v.keys] : v.keys);
  put(names.alg, v.alg);
  put(names.scopes, Array.isArray(v.scopes) ? v.scopes.join(' ') : v.scopes);
  put(names.tokenUrl, v.tokenUrl);
  put(names.authMethod, v.authMethod);
  if (v.clientSecretEnv !== undefined) {
    if (typeof v.clientSecretEnv !== 'string' || !env[v.clientSecretEnv])
      errors.push(`${names.clientSecret}: the environment variable ${String(v.clientSecretEnv)} is not set`);
    else values.set(names.clientSecret, env[v.clientSecretEnv] as string);
  }
  put(names.tlsCert, tls.cert);
  put(names.tlsKey, tls.key);
  put(names.tlsCa, tls.ca);
  if (v.alg !== undefined && v.alg !== 'RS384' && v.alg !== 'ES384') errors.push(`${names.alg}: must be RS384 or ES384`);
  if (v.authMethod !== undefined && v.authMethod !== 'basic' && v.authMethod !== 'post')
    errors.push(`${names.authMethod}: must be basic or post`);
  const r = readDestinationAuth(values, names);
  const secretNamed = v.clientSecretEnv !== undefined; // its own error above when the variable is not set
  errors.push(
    ...r.errors
      .filter((e) => !(secretNamed && e.startsWith(`${names.clientSecret} is required`)))
      .map((e) => e.replace(`${names.method}=`, `${names.method} `)),
  );
  return r.value;
}

function parseFilter(v: unknown, at: string, errors: string[]): DestinationFilter {
  if (v === undefined) return {};
  if (!isObject(v)) {
    errors.push(`${at}: must be an object`);
    return {};
  }
  const filter: DestinationFilter = {};
  for (const k of Object.keys(v)) if (!(FILTER_KEYS as readonly string[]).includes(k)) errors.push(`${at}: unknown key '${k}'`);
  for (const k of FILTER_KEYS) {
    const list = v[k];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.length === 0) {
      errors.push(`${at}.${k}: must be a non-empty list of strings`);
      continue;
    }
    list.forEach((s, j) => {
      if (typeof s !== 'string' || !s.trim()) errors.push(`${at}.${k}[${j}]: must be a non-empty string`);
      else if (k === 'resourceTypes' && !(FILTER_RESOURCE_TYPES as readonly string[]).includes(s))
        errors.push(`${at}.${k}[${j}]: '${s}' is not one of ${FILTER_RESOURCE_TYPES.join(', ')}`);
      else if (k === 'codes' && /^\||\|$/.test(s)) errors.push(`${at}.${k}[${j}]: '${s}' must be 'system|code' or 'code'`);
      else if ((k === 'patients' || k === 'devices') && /^\||\|$/.test(s))
        errors.push(`${at}.${k}[${j}]: '${s}' must be 'system|value' or 'value'`);
    });
    filter[k] = list.filter((s): s is string => typeof s === 'string');
  }
  return filter;
}

/** Reads and checks DESTINATIONS_FILE: the destinations, or every error, each prefixed with the file's name. */
export function readDestinationsFile(
  file: string,
  defaults: DestinationDefaults,
  env: NodeJS.ProcessEnv = process.env,
): { destinations: Destination[]; errors: string[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { destinations: [], errors: [`DESTINATIONS_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`] };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { destinations: [], errors: [`DESTINATIONS_FILE ${file}: not JSON (${(err as Error).message})`] };
  }
  const r = parseDestinations(doc, defaults, env);
  return { destinations: r.destinations, errors: r.errors.map((e) => `DESTINATIONS_FILE ${file}: ${e}`) };
}

/** The one destination of a configuration without a file: FHIR_BASE_URL and FHIR_AUTH, or the sandbox EHR. */
export function defaultDestination(c: {
  fhirBaseUrl?: string;
  /** FHIR_AUTH: bearer is carried as the destination's auth; the other methods are ehr-auth's (app/gateway.ts). */
  fhirAuth: string;
  fhirBearerToken?: string;
  fhirTimeoutMs: number;
}): Destination {
  return {
    name: DEFAULT_DESTINATION,
    type: 'fhir',
    baseUrl: c.fhirBaseUrl,
    sandbox: !c.fhirBaseUrl,
    auth: c.fhirBaseUrl && c.fhirAuth === 'bearer' ? { type: 'bearer', token: c.fhirBearerToken } : { type: 'none' },
    // Today's behaviour: one transaction per job, whatever the server says.
    writeMode: 'transaction',
    timeoutMs: c.fhirTimeoutMs,
    filter: {},
  };
}

/** The bearer token of a destination's auth, if any (read from the environment at start-up). */
export function bearerToken(auth: DestinationAuth, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (auth.type !== 'bearer') return undefined;
  return auth.token ?? (auth.tokenEnv ? env[auth.tokenEnv] : undefined);
}
