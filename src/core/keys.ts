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
 */
export const KEYS = {
  refusals: 'gw:refusals',
  refusal: (id: string) => `gw:refusals:e:${id}`,
  refusalSizes: 'gw:refusals:sizes',
  refusalBytes: 'gw:refusals:bytes',
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
