/**
 * Configuration of the HL7v2 part: the MLLP listener (port, TLS, limits) and the translation policy (character set,
 * time zone, OBX-11 'R' status, patient identifier systems, EUI-64 identifier system). Keys follow config/schema.ts.
 */
import { readFileSync } from 'node:fs';
import type { ConfigKey, ConfigValue } from '../config/schema.js';
import { loadKeys } from '../config/schema.js';
import { charsetLabel, DEFAULT_PARSE_LIMITS, PARSE_LIMIT_KEYS, type ParseLimits, SUPPORTED_CHARSETS } from './parse.js';
import { isValidZone } from './time.js';

/**
 * Identifier system of an IEEE EUI-64 device id: the IEEE 11073 system-id OID the HL7 Personal Health Device IG uses
 * for Device.identifier (value written as 8 hex bytes separated by dashes, e.g. FE-ED-AB-EE-DE-AD-77-C3).
 * (urn:ietf:rfc:3986 would be wrong: an EUI-64 is not a URI.)
 */
export { EUI64_SYSTEM } from '../fhir/identifiers.js';
import { EUI64_SYSTEM } from '../fhir/identifiers.js';

export const STATUS_R_VALUES = ['final', 'preliminary', 'registered', 'unknown'] as const;
export type StatusR = (typeof STATUS_R_VALUES)[number];

const PARSE_LIMIT_TEXT: Record<keyof ParseLimits, string> = {
  segments: 'Segments in one HL7 message',
  fields: 'Fields in one HL7 segment',
  repetitions: 'Repetitions of one HL7 field',
  components: 'Components in one repetition of an HL7 field (a waveform, OBX-5 of type NA, has one per sample)',
  subComponents: 'Sub-components in one HL7 component',
  elements: 'Fields, repetitions, components and sub-components of one HL7 message in all',
};

/** The parser limits (hl7v2/parse.ts): a message over one is answered AR with an ERR that names the key. */
function parseLimitKeys(): ConfigKey[] {
  return (Object.keys(PARSE_LIMIT_KEYS) as (keyof ParseLimits)[]).map((k) => ({
    env: PARSE_LIMIT_KEYS[k],
    type: 'int',
    default: String(DEFAULT_PARSE_LIMITS[k]),
    min: 1,
    description: `${PARSE_LIMIT_TEXT[k]}; more is refused (AR) before parsing, so that no message can cost the parser unbounded time or memory`,
  }));
}

export const HL7_KEYS: readonly ConfigKey[] = [
  { env: 'MLLP_ENABLED', type: 'bool', default: 'true', description: 'Run the MLLP (HL7v2 over TCP) listener' },
  {
    env: 'MLLP_PORT',
    type: 'int',
    default: '2575',
    min: 0,
    max: 65535,
    description: 'MLLP listener port (0 = a random free port, for tests)',
  },
  { env: 'MLLP_HOST', type: 'string', default: '127.0.0.1', description: 'MLLP bind address (0.0.0.0 to accept devices on the network)' },
  {
    env: 'MLLP_MAX_FRAME_BYTES',
    type: 'int',
    default: '1048576',
    min: 256,
    description: 'Largest MLLP frame accepted; a larger one is answered with AR and skipped',
  },
  {
    env: 'MLLP_IDLE_TIMEOUT_MS',
    type: 'int',
    default: '300000',
    min: 0,
    description:
      'Close an MLLP connection on which no frame was sent for this long, counted from the connection or the last answer; bytes outside a frame do not count (0 = never)',
  },
  {
    env: 'MLLP_FRAME_TIMEOUT_MS',
    type: 'int',
    default: '30000',
    min: 0,
    description:
      'A frame must be complete within this time of its first byte, however its bytes trickle in; otherwise the connection is closed. Also the TLS handshake timeout (0 = no deadline)',
  },
  { env: 'MLLP_MAX_CONNECTIONS', type: 'int', default: '1000', min: 1, description: 'Concurrent MLLP connections accepted' },
  {
    env: 'MLLP_MAX_CONNECTIONS_PER_PEER',
    type: 'int',
    default: '20',
    min: 1,
    description: 'Concurrent MLLP connections accepted from one source address; more are closed at once',
  },
  {
    env: 'MLLP_RESERVED_CONNECTIONS',
    type: 'int',
    default: '100',
    min: 0,
    description:
      'Of MLLP_MAX_CONNECTIONS, connections kept for known senders (source addresses listed in MLLP_ALLOWED_SENDERS); other peers share the rest',
  },
  {
    env: 'MLLP_ALLOW_ANY_SENDER',
    type: 'bool',
    default: 'false',
    description:
      'With a real EHR (FHIR_BASE_URL set), accept MLLP from any sender without MLLP_ALLOWED_SENDERS or mutual TLS (a trusted network only; warned at every start). Otherwise MLLP answers every message AR until one of them is set',
  },
  {
    env: 'MLLP_TLS_CERT_FILE',
    type: 'string',
    description: 'PEM certificate (chain) of the MLLP listener; with MLLP_TLS_KEY_FILE it turns on MLLP over TLS',
  },
  { env: 'MLLP_TLS_KEY_FILE', type: 'string', secret: true, description: 'PEM private key of the MLLP listener' },
  { env: 'MLLP_TLS_CA_FILE', type: 'string', description: 'PEM CA certificate(s) that client certificates must chain to' },
  {
    env: 'MLLP_TLS_REQUIRE_CLIENT_CERT',
    type: 'bool',
    default: 'false',
    description: 'Require and verify a client certificate (mutual TLS) against MLLP_TLS_CA_FILE',
  },
  ...parseLimitKeys(),
  {
    env: 'HL7_DEFAULT_CHARSET',
    type: 'enum',
    default: 'UNICODE UTF-8',
    values: SUPPORTED_CHARSETS,
    description: 'Character set of messages without MSH-18 (a UTF-8 default falls back to 8859/1 for bytes that are not UTF-8)',
  },
  {
    env: 'HL7_DEFAULT_TIMEZONE',
    type: 'string',
    default: 'UTC',
    description: 'Zone of HL7 times without an offset when MSH-7 has none either: an IANA name (Europe/Berlin), UTC, or +HH:MM',
  },
  {
    env: 'HL7_STATUS_R',
    type: 'enum',
    default: 'final',
    values: STATUS_R_VALUES,
    description:
      "Observation.status for OBX-11 'R' (results entered, not verified: the normal PCD-01 value). Default final, per the HL7 PHD IG",
  },
  {
    env: 'HL7_ASSIGNING_AUTHORITY_SYSTEMS',
    type: 'list',
    default: '',
    description:
      'PID-3 assigning authority → patient identifier system, e.g. HOSP=urn:oid:1.2.3,LAB=https://lab.example/mrn. Unlisted authorities with an ISO OID use urn:oid:<oid>; others PATIENT_IDENTIFIER_SYSTEM',
  },
  {
    env: 'HL7_EUI64_IDENTIFIER_SYSTEM',
    type: 'string',
    default: EUI64_SYSTEM,
    description: 'Identifier system of EUI-64 device ids (OBX-18); default the IEEE 11073 system-id OID used by the HL7 PHD IG',
  },
  {
    env: 'HL7_DUPLICATE_TTL_S',
    type: 'int',
    default: '300',
    min: 0,
    description:
      'How long the ACK of an accepted message is kept to answer a resend (same sender, control id and content) without queueing twice (0 = off)',
  },
  {
    env: 'HL7_REJECTED_MAX',
    type: 'int',
    default: '10000',
    min: 1,
    description: 'Deprecated, no longer used: REFUSALS_MAX caps the one refusal store of every channel',
  },
  { env: 'HL7_RECEIVING_APPLICATION', type: 'string', default: 'IOMT-GATEWAY', description: "ACK MSH-3 when the message's MSH-5 is empty" },
  {
    env: 'HL7_ACCEPT_VERSIONS',
    type: 'list',
    default: '2.1,2.2,2.3,2.4,2.5,2.6,2.7,2.8,2.9',
    description: 'HL7 versions accepted (major.minor; 2.3 also accepts 2.3.1); others get AR',
  },
];

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  requireClientCert: boolean;
}

/** What the translators need (pure data, no I/O). */
export interface Hl7TranslateOptions {
  statusR: StatusR;
  defaultTimezone: string;
  /** Assigning authority (HD namespace id or universal id) → identifier system. */
  assigningAuthoritySystems: ReadonlyMap<string, string>;
  eui64System: string;
}

export interface Hl7Config extends Hl7TranslateOptions {
  mllpEnabled: boolean;
  mllpPort: number;
  mllpHost: string;
  maxFrameBytes: number;
  idleTimeoutMs: number;
  /** MLLP_FRAME_TIMEOUT_MS: a frame completes within this time of its first byte (0 = no deadline). */
  frameTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerPeer: number;
  /** Connections only known senders may use. */
  reservedConnections: number;
  tls?: TlsFiles;
  /** MLLP_ALLOW_ANY_SENDER. */
  allowAnySender: boolean;
  /** Structural limits of one message (HL7_MAX_*), checked before parsing. */
  parseLimits: ParseLimits;
  defaultCharset: string;
  duplicateTtlS: number;
  rejectedMax: number;
  receivingApplication: string;
  acceptVersions: string[];
  /** Adapter id the messages are ingested under. */
  adapterId: string;
}

export function defaultHl7Config(overrides: Partial<Hl7Config> = {}): Hl7Config {
  const { config } = readHl7Config(loadKeys(HL7_KEYS, {}).values);
  return { ...config, ...overrides };
}

/** Reads the HL7 keys from loaded config values; reports every problem (TLS files are read here). */
export function readHl7Config(values: ReadonlyMap<string, ConfigValue>): { config: Hl7Config; errors: string[] } {
  const errors: string[] = [];
  const s = (k: string) => values.get(k) as string | undefined;
  const n = (k: string, d: number) => (typeof values.get(k) === 'number' ? (values.get(k) as number) : d);
  const b = (k: string, d: boolean) => (typeof values.get(k) === 'boolean' ? (values.get(k) as boolean) : d);
  const list = (k: string) => (Array.isArray(values.get(k)) ? (values.get(k) as string[]) : []);

  const authorities = new Map<string, string>();
  for (const entry of list('HL7_ASSIGNING_AUTHORITY_SYSTEMS')) {
    const i = entry.indexOf('=');
    if (i <= 0 || i === entry.length - 1) {
      errors.push(`HL7_ASSIGNING_AUTHORITY_SYSTEMS: '${entry}' is not AUTHORITY=system`);
      continue;
    }
    authorities.set(entry.slice(0, i).trim(), entry.slice(i + 1).trim());
  }
  const zone = s('HL7_DEFAULT_TIMEZONE') ?? 'UTC';
  if (!isValidZone(zone)) errors.push(`HL7_DEFAULT_TIMEZONE: '${zone}' is not an IANA time zone, UTC or +HH:MM`);
  const charset = s('HL7_DEFAULT_CHARSET') ?? 'UNICODE UTF-8';
  if (!charsetLabel(charset)) errors.push(`HL7_DEFAULT_CHARSET: '${charset}' is not supported`);

  let tls: TlsFiles | undefined;
  const certFile = s('MLLP_TLS_CERT_FILE');
  const keyFile = s('MLLP_TLS_KEY_FILE');
  const caFile = s('MLLP_TLS_CA_FILE');
  const requireClientCert = b('MLLP_TLS_REQUIRE_CLIENT_CERT', false);
  if (certFile || keyFile) {
    if (!certFile || !keyFile) errors.push('MLLP_TLS_CERT_FILE and MLLP_TLS_KEY_FILE must be set together');
    else {
      const read = (k: string, f: string) => {
        try {
          return readFileSync(f);
        } catch (e) {
          errors.push(`${k}: cannot read '${f}' (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
          return undefined;
        }
      };
      const cert = read('MLLP_TLS_CERT_FILE', certFile);
      const key = read('MLLP_TLS_KEY_FILE', keyFile);
      const ca = caFile ? read('MLLP_TLS_CA_FILE', caFile) : undefined;
      if (cert && key) tls = { cert, key, ca, requireClientCert };
    }
  }
  if (requireClientCert && !caFile)
    errors.push('MLLP_TLS_REQUIRE_CLIENT_CERT needs MLLP_TLS_CA_FILE (the CA client certificates are verified against)');
  if (requireClientCert && !certFile) errors.push('MLLP_TLS_REQUIRE_CLIENT_CERT needs TLS (MLLP_TLS_CERT_FILE, MLLP_TLS_KEY_FILE)');

  if (n('MLLP_RESERVED_CONNECTIONS', 100) >= n('MLLP_MAX_CONNECTIONS', 1000))
    errors.push('MLLP_RESERVED_CONNECTIONS must be less than MLLP_MAX_CONNECTIONS (strangers need some connections too)');
  const versions = list('HL7_ACCEPT_VERSIONS');
  const config: Hl7Config = {
    mllpEnabled: b('MLLP_ENABLED', true),
    mllpPort: n('MLLP_PORT', 2575),
    mllpHost: s('MLLP_HOST') ?? '127.0.0.1',
    maxFrameBytes: n('MLLP_MAX_FRAME_BYTES', 1048576),
    idleTimeoutMs: n('MLLP_IDLE_TIMEOUT_MS', 300000),
    frameTimeoutMs: n('MLLP_FRAME_TIMEOUT_MS', 30000),
    maxConnections: n('MLLP_MAX_CONNECTIONS', 1000),
    maxConnectionsPerPeer: n('MLLP_MAX_CONNECTIONS_PER_PEER', 20),
    reservedConnections: n('MLLP_RESERVED_CONNECTIONS', 100),
    tls,
    allowAnySender: b('MLLP_ALLOW_ANY_SENDER', false),
    parseLimits: Object.fromEntries(
      (Object.keys(PARSE_LIMIT_KEYS) as (keyof ParseLimits)[]).map((k) => [k, n(PARSE_LIMIT_KEYS[k], DEFAULT_PARSE_LIMITS[k])]),
    ) as unknown as ParseLimits,
    defaultCharset: charset,
    defaultTimezone: zone,
    statusR: (s('HL7_STATUS_R') ?? 'final') as StatusR,
    assigningAuthoritySystems: authorities,
    eui64System: s('HL7_EUI64_IDENTIFIER_SYSTEM') ?? EUI64_SYSTEM,
    duplicateTtlS: n('HL7_DUPLICATE_TTL_S', 300),
    rejectedMax: n('HL7_REJECTED_MAX', 10000),
    receivingApplication: s('HL7_RECEIVING_APPLICATION') ?? 'IOMT-GATEWAY',
    acceptVersions: versions.length ? versions : ['2.1', '2.2', '2.3', '2.4', '2.5', '2.6', '2.7', '2.8', '2.9'],
    adapterId: 'hl7v2',
  };
  return { config, errors };
}

/** True when `version` (e.g. 2.3.1) is accepted by the list (entries are major.minor or exact). */
export function versionAccepted(version: string, accepted: readonly string[]): boolean {
  if (!/^\d+\.\d+(\.\d+)*$/.test(version)) return false;
  const mm = version.split('.').slice(0, 2).join('.');
  return accepted.includes(version) || accepted.includes(mm);
}
