/**
 * Earlier versions kept refused input in three stores (HTTP gw:refused:*, HL7v2 gw:hl7:rejected*, MQTT
 * gw:mqtt:rejected). At start-up their entries are moved into the one store, so nothing an operator kept for replay is
 * lost by an upgrade. Idempotent: each entry is deleted from the old store once it is in the new one. Entries of the one
 * store written before it kept sizes are sized (`RefusalStore.reconcile`), so the byte budget counts them.
 */
import type { RedisClient } from '../queue/connection.js';
import type { OperationOutcome } from 'fhir/r4';
import type { Principal } from '../core/contract.js';
import { issue, outcome } from '../core/errors.js';
import { KEYS } from '../core/keys.js';
import type { Hl7ErrDetail, NewRefusal, RefusalStore } from './refusals.js';

interface OldHttp {
  adapterId: string;
  channel: string;
  receivedAt: string;
  status: number;
  outcome: OperationOutcome;
  body: unknown;
  attributes?: Record<string, string>;
  principal?: Principal;
}

interface OldHl7 {
  receivedAt: string;
  channel: string;
  peer?: string;
  sender?: string;
  controlId?: string;
  messageType?: string;
  ackCode: string;
  reason: string;
  errors: Hl7ErrDetail[];
  principal?: Principal;
  raw: string;
  charset: string;
}

interface OldMqtt {
  topic: string;
  adapter?: string;
  deviceId?: string;
  receivedAt: string;
  status: number;
  outcome: OperationOutcome;
  payload?: string;
  payloadBase64?: string;
}

const reasonOf = (oo: OperationOutcome) => oo.issue.map((i) => i.diagnostics ?? i.code).join('; ');

/** Moves the entries of one sorted-set store: each read, added to the one store, then removed from the old one. */
async function drainIndexed(
  redis: RedisClient,
  store: RefusalStore,
  index: string,
  key: (id: string) => string,
  convert: (raw: string) => NewRefusal,
): Promise<number> {
  let moved = 0;
  for (const id of await redis.zrange(index, 0, -1)) {
    const s = await redis.get(key(id));
    if (s) {
      await store.add(convert(s));
      moved++;
    }
    await redis.multi().del(key(id)).zrem(index, id).exec();
  }
  return moved;
}

function fromHttp(s: string): NewRefusal {
  const o = JSON.parse(s) as OldHttp;
  const r: NewRefusal = {
    channel: o.channel,
    format: 'json',
    adapterId: o.adapterId,
    receivedAt: o.receivedAt,
    status: o.status,
    reason: reasonOf(o.outcome),
    outcome: o.outcome,
    body: o.body,
  };
  if (o.attributes) r.attributes = o.attributes;
  if (o.principal) r.principal = o.principal;
  return r;
}

function fromHl7(s: string): NewRefusal {
  const o = JSON.parse(s) as OldHl7;
  const r: NewRefusal = {
    channel: o.channel,
    format: 'hl7v2',
    adapterId: 'hl7v2',
    receivedAt: o.receivedAt,
    status: 422,
    reason: o.reason,
    outcome: outcome(o.errors.map((e) => issue('invalid', e.text))),
    hl7: { controlId: o.controlId, messageType: o.messageType, sender: o.sender, peer: o.peer, ackCode: o.ackCode, errors: o.errors },
    raw: o.raw,
    charset: o.charset,
  };
  if (o.principal) r.principal = o.principal;
  return r;
}

function fromMqtt(s: string): NewRefusal {
  const o = JSON.parse(s) as OldMqtt;
  return {
    channel: 'mqtt',
    format: 'text',
    receivedAt: o.receivedAt,
    status: o.status,
    reason: reasonOf(o.outcome),
    outcome: o.outcome,
    mqtt: { topic: o.topic, ...(o.deviceId ? { deviceId: o.deviceId } : {}) },
    ...(o.deviceId ? { deviceIds: [o.deviceId] } : {}),
    ...(o.adapter ? { adapterId: o.adapter } : {}),
    ...(o.payload !== undefined ? { raw: o.payload } : { rawBase64: o.payloadBase64 }),
  };
}

/**
 * Moves every entry of the earlier stores into `store`; returns how many were moved. One process at a time (a lock in
 * Redis), so that gateways starting together do not move an entry twice.
 */
export async function migrateLegacyRefusals(redis: RedisClient, store: RefusalStore): Promise<number> {
  // Entries of the one store written before it counted bytes: sized now, so that REFUSALS_MAX_BYTES holds.
  await store.reconcile();
  // The earlier stores are older than cluster support: no earlier version wrote them to a cluster (and their keys are in
  // different slots, so the EXISTS below would be refused there).
  if (redis.isCluster) return 0;
  const L = KEYS.legacy;
  const pending = await redis.exists(L.httpRefusedIndex, L.hl7RejectedIndex, L.mqttRejected);
  if (!pending) return 0;
  if ((await redis.set(L.migrationLock, String(process.pid), 'EX', 60, 'NX')) !== 'OK') return 0;
  try {
    let moved = await drainIndexed(redis, store, L.httpRefusedIndex, L.httpRefused, fromHttp);
    moved += await drainIndexed(redis, store, L.hl7RejectedIndex, L.hl7Rejected, fromHl7);
    for (let s = await redis.rpop(L.mqttRejected); s; s = await redis.rpop(L.mqttRejected)) {
      await store.add(fromMqtt(s));
      moved++;
    }
    return moved;
  } finally {
    await redis.del(L.migrationLock);
  }
}
