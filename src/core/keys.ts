/**
 * Every Redis key the gateway writes, by prefix, in one table: what lives where, so that a Redis operator (sizing,
 * cluster hash tags, a backup policy) and a newcomer find it in one place. Each feature keeps its own key builders
 * next to its code; a new prefix belongs in this table.
 *
 *   gw:refusals, gw:refusals:e:<id>   refused input of every channel (pipeline/refusals.ts), with the size of
 *   gw:refusals:sizes, gw:refusals:bytes  each entry and their total (the store's byte budget)
 *   gw:refused:*, gw:hl7:rejected*,   the three refusal stores of earlier versions, moved into gw:refusals at start-up
 *   gw:mqtt:rejected                  (pipeline/legacy-refusals.ts)
 *   gw:hl7:ack:<hash>                 ACKs of accepted HL7 messages, for resends (channels/mllp/ack-cache.ts)
 *   gw:dlq:*                          dead letters (delivery/dead-letters.ts); gw:dlq:<destination>:* for a destination
 *                                     other than ehr (see destinationPrefix), and likewise for locks and device versions
 *   gw:lock:*                         per-device and per-patient delivery locks (delivery/locks.ts)
 *   gw:dev:*                          device registry, telemetry, held readings, config, reports, FHIR versions (devices/)
 *   gw:cred:*, gw:hmac:seen:*, gw:rl:*  credentials, HMAC replay guard, rate limits (access/)
 *   gw:authfail:*                     failed authentications per source address and window (access/auth-failures.ts)
 *   gw:vendor:*                       vendors (devices/)
 *   gw:adapter:*, gw:adapters:*       registered adapters and their change counter and channel (registration/)
 *   gw:audit, gw:audit:security       the audit trail: lifecycle and security streams, capped apart (audit/store.ts)
 *   gw:console:session:<sha256>       console sessions (console/session.ts)
 *   gw:<QUEUE_NAME>:*                 the delivery queue of the destination ehr (bull; queue/queue.ts), and
 *   gw:<QUEUE_NAME>.<destination>:*   the queue of each other destination (app/gateway.ts)
 *
 * On a Redis Cluster (REDIS_CLUSTER_NODES, docs/scaling.md) a MULTI, a Lua script, an MGET or a DEL of several keys
 * must name keys of one hash slot. The keys that such commands use together form a group whose name becomes a hash
 * tag there, and only there (keyGroup): `gw:dev:rec:<id>` is `{gw:dev}:rec:<id>` on a cluster. A single Redis keeps
 * the names above, so an upgrade finds its data where it left it; no earlier version could run on a cluster, so a
 * cluster has no keys under the old names. The groups:
 *
 *   gw:refusals         the refusal store (pipeline/refusals.ts: one script over its index, sizes, total and entries)
 *   gw:dev              the device registry (devices/registry.ts), not gw:dev:fhirver:* (single-key, per destination)
 *   gw:adapter          registered adapters and their id set (registration/store.ts)
 *   gw:cred             credentials and their per-owner sets (access/credentials.ts)
 *   gw:authfail         failed-authentication windows and their due set (access/auth-failures.ts)
 *   gw:dlq[:<dest>]     each destination's dead letters and their index (delivery/dead-letters.ts)
 *   gw:lock[:<dest>]    each destination's delivery locks, taken several at once (delivery/locks.ts)
 *   gw:<queue name>     each bull queue: its prefix is `{gw:<queue name>}` (queue/queue.ts), so that destinations'
 *                       queues hash to different slots, and so to different masters
 *
 * Everything else is read and written one key per command and keeps its name on a cluster too.
 */

/** What tells a cluster connection from a single one (ioredis's `isCluster`, on both of its clients). */
export interface KeySpace {
  readonly isCluster?: boolean;
}

/**
 * The name of a key group (see above): the group itself on a single Redis, the group as a hash tag (`{gw:dev}`) on a
 * cluster, so that every key of the group hashes to one slot.
 */
export function keyGroup(group: string, space: KeySpace | boolean): string {
  const cluster = typeof space === 'boolean' ? space : space.isCluster === true;
  return cluster ? `{${group}}` : group;
}

/** The refusal store's keys under its group (`gw:refusals`, or `{gw:refusals}` on a cluster). */
export function refusalKeys(group = 'gw:refusals') {
  return {
    refusals: group,
    refusal: (id: string) => `${group}:e:${id}`,
    refusalSizes: `${group}:sizes`,
    refusalBytes: `${group}:bytes`,
  };
}

export const KEYS = {
  ...refusalKeys(),
  legacy: {
    httpRefusedIndex: 'gw:refused:index',
    httpRefused: (id: string) => `gw:refused:${id}`,
    hl7RejectedIndex: 'gw:hl7:rejected',
    hl7Rejected: (id: string) => `gw:hl7:rejected:e:${id}`,
    mqttRejected: 'gw:mqtt:rejected',
    migrationLock: 'gw:refusals:migrating',
  },
} as const;

/**
 * The prefix of a destination's keys under `base` (dead letters, locks, device versions). The destination `ehr` keeps
 * the keys of the versions that had one destination, so an upgrade finds its dead letters and locks.
 */
export function destinationPrefix(base: string, destination: string): string {
  return destination === 'ehr' ? base : `${base}${destination}:`;
}

/**
 * destinationPrefix for a key group (`gw:dlq`, `gw:lock`): `gw:dlq:` / `gw:dlq:<destination>:` on a single Redis, the
 * same group as a hash tag on a cluster (`{gw:dlq}:`, `{gw:dlq:<destination>}:`): one slot per destination.
 */
export function destinationGroupPrefix(group: string, destination: string, space: KeySpace | boolean): string {
  return `${keyGroup(destination === 'ehr' ? group : `${group}:${destination}`, space)}:`;
}
