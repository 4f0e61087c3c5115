/**
 * Earlier versions kept refused input in three stores (HTTP gw:refused:*, HL7v2 gw:hl7:rejected*, MQTT
 * gw:mqtt:rejected). At start-up their entries are moved into the one store, so nothing an operator kept for replay is
 * lost by an upgrade. Idempotent: each entry is deleted from the old store once it is in the new one.
 */
import type { Redis } from 'ioredis';
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

/** Moves every entry of the earlier stores into `store`; returns how many were moved. */
export async function migrateLegacyRefusals(redis: Redis, store: RefusalStore): Promise<number> {
  let moved = 0;
  const L = KEYS.legacy;
  for (const id of await redis.zrange(L.httpRefusedIndex, 0, -1)) {
    const s = await redis.get(L.httpRefused(id));
    if (s) {
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
      await store.add(r);
      moved++;
    }
    await redis.multi().del(L.httpRefused(id)).zrem(L.httpRefusedIndex, id).exec();
  }
  for (const id of await redis.zrange(L.hl7RejectedIndex, 0, -1)) {
    const s = await redis.get(L.hl7Rejected(id));
    if (s) {
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
      await store.add(r);
      moved++;
    }
    await redis.multi().del(L.hl7Rejected(id)).zrem(L.hl7RejectedIndex, id).exec();
  }
  for (;;) {
    const s = await redis.rpop(L.mqttRejected);
    if (!s) break;
    const o = JSON.parse(s) as OldMqtt;
    const r: NewRefusal = {
      channel: 'mqtt',
      format: 'text',
      receivedAt: o.receivedAt,
      status: o.status,
      reason: reasonOf(o.outcome),
      outcome: o.outcome,
      mqtt: { topic: o.topic, ...(o.deviceId ? { deviceId: o.deviceId } : {}) },
      ...(o.adapter ? { adapterId: o.adapter } : {}),
      ...(o.payload !== undefined ? { raw: o.payload } : { rawBase64: o.payloadBase64 }),
    };
    await store.add(r);
    moved++;
  }
  return moved;
}
