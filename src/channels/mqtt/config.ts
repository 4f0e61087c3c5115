/**
 * Configuration of the MQTT channel (a fragment of the one schema; see config/schema.ts). See docs/mqtt.md.
 */
import { hostname } from 'node:os';
import type { ConfigKey, ConfigValue } from '../../config/schema.js';

export const MQTT_KEYS: readonly ConfigKey[] = [
  {
    env: 'MQTT_URL',
    type: 'url',
    description: 'MQTT broker (mqtt://host:1883, mqtts://host:8883 for TLS). Unset: the MQTT channel is off',
  },
  {
    env: 'MQTT_TOPICS',
    type: 'list',
    description:
      'Topic filters and the adapter each feeds, comma-separated filter=adapter (MQTT wildcards + and #; the first + segment is the device id), e.g. devices/+/oximeter=pulse-oximeter,devices/+/measurements=measurements',
  },
  {
    env: 'MQTT_CLIENT_ID',
    type: 'string',
    description:
      'Client id of the persistent session. Unset: iomt-gateway-<host name>. Each ingest instance needs its own (with MQTT_SHARE_GROUP they share the load)',
  },
  {
    env: 'MQTT_SHARE_GROUP',
    type: 'string',
    description:
      'Subscribe as the MQTT 5 shared subscription $share/<group>/<filter>, so several ingest instances split the messages. Unset: plain subscriptions',
  },
  { env: 'MQTT_USERNAME', type: 'string', description: 'User name at the broker' },
  { env: 'MQTT_PASSWORD', type: 'string', secret: true, description: 'Password at the broker' },
  {
    env: 'MQTT_CA_FILE',
    type: 'string',
    description: 'PEM file of the CA that signed the broker certificate (mqtts://); unset: the system CAs',
  },
  {
    env: 'MQTT_CERT_FILE',
    type: 'string',
    description: 'PEM client certificate for brokers that authenticate clients by certificate (with MQTT_KEY_FILE)',
  },
  { env: 'MQTT_KEY_FILE', type: 'string', secret: true, description: 'PEM private key of MQTT_CERT_FILE' },
  {
    env: 'MQTT_ERROR_TOPIC',
    type: 'string',
    default: 'gateway/errors/{topic}',
    description:
      'Where a refused message is reported (QoS 1, its OperationOutcome): {topic} is the original topic, {deviceId} the device id from it',
  },
  {
    env: 'MQTT_SESSION_EXPIRY_S',
    type: 'int',
    default: '604800',
    min: 1,
    description: 'How long the broker keeps the session (and queues QoS 1 messages) while the gateway is disconnected',
  },
  { env: 'MQTT_KEEPALIVE_S', type: 'int', default: '30', min: 5, max: 65535, description: 'MQTT keep-alive' },
  {
    env: 'MQTT_RECONNECT_MIN_MS',
    type: 'int',
    default: '500',
    min: 10,
    description: 'First reconnect delay (doubles per failed attempt, with jitter)',
  },
  {
    env: 'MQTT_RECONNECT_MAX_MS',
    type: 'int',
    default: '30000',
    min: 10,
    description: 'Largest reconnect delay; also the largest pause after the queue refused a message (503)',
  },
  {
    env: 'MQTT_REJECTED_MAX',
    type: 'int',
    default: '1000',
    min: 0,
    description: 'Deprecated, no longer used: REFUSALS_MAX caps the one refusal store of every channel',
  },
];

export interface MqttConfig {
  url?: string;
  topics: { filter: string; adapter: string }[];
  clientId: string;
  shareGroup?: string;
  username?: string;
  password?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  errorTopic: string;
  sessionExpiryS: number;
  keepaliveS: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  rejectedMax: number;
}

/** Checks an MQTT topic filter: + and # only as whole levels, # last. */
export function topicFilterError(filter: string): string | undefined {
  if (!filter) return 'empty topic filter';
  const levels = filter.split('/');
  for (const [i, l] of levels.entries()) {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `'#' must be a whole level, the last one: '${filter}'`;
    if (l.includes('+') && l !== '+') return `'+' must be a whole level: '${filter}'`;
  }
  return undefined;
}

/** Reads the MQTT settings from the parsed values (config.raw). Throws with every problem. */
export function mqttConfig(raw: ReadonlyMap<string, ConfigValue>): MqttConfig {
  const errors: string[] = [];
  const topics: MqttConfig['topics'] = [];
  for (const entry of (raw.get('MQTT_TOPICS') as string[] | undefined) ?? []) {
    const eq = entry.lastIndexOf('=');
    const filter = eq > 0 ? entry.slice(0, eq).trim() : '';
    const adapter = eq > 0 ? entry.slice(eq + 1).trim() : '';
    if (!filter || !adapter) {
      errors.push(`MQTT_TOPICS: '${entry}' is not filter=adapter`);
      continue;
    }
    const bad = topicFilterError(filter);
    if (bad) errors.push(`MQTT_TOPICS: ${bad}`);
    else topics.push({ filter, adapter });
  }
  const url = raw.get('MQTT_URL') as string | undefined;
  if (url && !topics.length) errors.push('MQTT_TOPICS is required when MQTT_URL is set (which topics feed which adapter)');
  if (url && !/^(mqtts?|wss?|tcp|ssl|tls):/.test(url)) errors.push(`MQTT_URL: '${url}' is not an mqtt://, mqtts://, ws:// or wss:// URL`);
  if ((raw.get('MQTT_CERT_FILE') === undefined) !== (raw.get('MQTT_KEY_FILE') === undefined))
    errors.push('MQTT_CERT_FILE and MQTT_KEY_FILE go together');
  const n = (k: string, d: number) => (raw.get(k) as number | undefined) ?? d;
  if (n('MQTT_RECONNECT_MIN_MS', 500) > n('MQTT_RECONNECT_MAX_MS', 30000))
    errors.push('MQTT_RECONNECT_MIN_MS is above MQTT_RECONNECT_MAX_MS');
  if (errors.length) throw new Error(`invalid MQTT configuration:\n  - ${errors.join('\n  - ')}`);
  return {
    url,
    topics,
    clientId:
      (raw.get('MQTT_CLIENT_ID') as string | undefined) ?? `iomt-gateway-${hostname()}`.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64),
    shareGroup: raw.get('MQTT_SHARE_GROUP') as string | undefined,
    username: raw.get('MQTT_USERNAME') as string | undefined,
    password: raw.get('MQTT_PASSWORD') as string | undefined,
    caFile: raw.get('MQTT_CA_FILE') as string | undefined,
    certFile: raw.get('MQTT_CERT_FILE') as string | undefined,
    keyFile: raw.get('MQTT_KEY_FILE') as string | undefined,
    errorTopic: (raw.get('MQTT_ERROR_TOPIC') as string | undefined) ?? 'gateway/errors/{topic}',
    sessionExpiryS: n('MQTT_SESSION_EXPIRY_S', 604800),
    keepaliveS: n('MQTT_KEEPALIVE_S', 30),
    reconnectMinMs: n('MQTT_RECONNECT_MIN_MS', 500),
    reconnectMaxMs: n('MQTT_RECONNECT_MAX_MS', 30000),
    rejectedMax: n('MQTT_REJECTED_MAX', 1000),
  };
}
