/**
 * The ingest guard: device policy at the door, for every channel (HTTP, MLLP, MQTT). For each reading it
 *   - identifies the device by its Device identifier value (translation.devices[0].identifier[0].value),
 *   - refuses a device credential speaking for another device, and a vendor credential for another vendor's device
 *     or an adapter the vendor may not use (403),
 *   - applies UNKNOWN_DEVICE_POLICY (per MLLP facility, per channel, default) to devices the registry does not know,
 *   - refuses data of devices that are not active (403, with the state as the reason),
 *   - under DEVICE_PATIENT_BINDING=assigned-only, refuses a device credential's reading naming another patient than its
 *     device's assignment (or another identifier system), and a vendor's contradicting an assignment (403),
 *   - fills in the assigned patient when the reading names none,
 *   - records monitoring (last seen, messages, errors, battery, signal).
 * A message is admitted whole or refused whole; readings held for review are answered like queued ones (they are in
 * Redis) and are left out of what the pipeline queues.
 *
 * Two phases (see pipeline/pipeline.ts): `decide` reads the registry and decides every reading; nothing is written
 * until the pipeline has validated them, then `commit` auto-registers, holds, and records monitoring. A refusal by the
 * guard itself is recorded as what it is (an audit event and an error count on a known device: a security record of the
 * refusal), but never registers a device or moves its "last seen".
 */
import type { InboundMessage, Principal, Reading } from '../core/contract.js';
import { forbidden, GatewayError, outcome, issue } from '../core/errors.js';
import type { GuardDecision, IngestGuard } from '../pipeline/pipeline.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { UnknownDevicePolicy } from './config.js';
import { acceptsData, type DeviceRecord } from './model.js';
import type { DeviceService } from './service.js';
import { readingsOf } from './telemetry.js';

/** One reading's decision: its device, its record (or the policy that registers it), whether it is held. */
interface Decided {
  t: Reading;
  id?: string;
  record?: DeviceRecord;
  /** Unknown device: registered at commit under this policy. */
  register?: 'hold' | 'accept';
  hold?: boolean;
}

/** The gateway itself, as the actor of automatic actions (audit). */
const SYSTEM: Principal = { role: 'admin', id: 'gateway', keyId: 'system' };

export class DeviceGuard implements IngestGuard {
  constructor(
    private readonly svc: DeviceService,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  policyFor(message: InboundMessage): UnknownDevicePolicy {
    const c = this.svc.config;
    const facility = message.attributes?.sendingFacility;
    if (message.channel === 'mllp' && facility) {
      const p = c.facilityPolicy.get(facility);
      if (p) return p;
    }
    return c.channelPolicy[message.channel] ?? c.unknownDevicePolicy;
  }

  private async refuse(deviceId: string | undefined, message: InboundMessage, reason: string, known: boolean): Promise<never> {
    this.metrics.inc('device_data_refused_total', { channel: message.channel });
    if (deviceId && known) await this.svc.registry.error(deviceId).catch(() => undefined);
    await this.svc.audit.record({
      kind: 'data-refused',
      principal: message.principal,
      address: message.attributes?.remoteAddress,
      outcome: '4',
      description: reason,
      entities: deviceId ? [{ kind: 'Device', id: deviceId }] : [{ kind: 'Request', id: `ingest ${message.channel}` }],
    });
    this.log.info(
      {
        deviceId,
        channel: message.channel,
        principal: message.principal ? `${message.principal.role}:${message.principal.id}` : undefined,
        reason,
      },
      'device data refused',
    );
    throw forbidden(reason);
  }

  async decide(adapterId: string, message: InboundMessage, readings: Reading[]): Promise<GuardDecision> {
    const p = message.principal;
    if (p?.role === 'vendor') {
      const vendor = await this.svc.getVendor(p.vendorId ?? p.id);
      if (vendor?.adapters.length && !vendor.adapters.includes(adapterId))
        await this.refuse(undefined, message, `vendor '${vendor.id}' may not send to adapter '${adapterId}'`, false);
    }
    // Decide every reading (refusing the whole message on the first refusal); write nothing.
    const decided: Decided[] = [];
    const ids = [...new Set(readings.map((t) => t.devices[0]?.identifier?.[0]?.value).filter((id): id is string => !!id))];
    const records = await this.findRecords(ids);
    const policy = this.policyFor(message);
    for (const t of readings) {
      const named = t.devices[0]?.identifier?.[0]?.value;
      // A device found by another of its identifiers (HL7 names it by its EUI-64) is the registered device.
      const id = named ? (records.get(named)?.id ?? named) : undefined;
      if (!id || !named) {
        if (p?.role === 'device')
          await this.refuse(
            undefined,
            message,
            'a device credential may only send readings of its own device (the reading names no device)',
            false,
          );
        decided.push({ t });
        continue;
      }
      const denial = p ? this.principalDenial(p, id) : undefined;
      if (denial) await this.refuse(id, message, denial, false);
      const record = records.get(named);
      if (record && p?.role === 'vendor' && record.vendor !== p.vendorId)
        await this.refuse(id, message, `device '${id}' is not a device of vendor '${p.vendorId}'`, true);
      if (!record) {
        switch (policy) {
          case 'reject':
            await this.refuse(id, message, `unknown device '${id}': it is not registered (UNKNOWN_DEVICE_POLICY=reject)`, false);
            break;
          case 'hold':
            decided.push({ t, id, register: policy, hold: true });
            break;
          case 'accept':
            decided.push({ t, id, register: policy });
            break;
          default:
            policy satisfies never;
        }
        continue;
      }
      if (acceptsData(record.state)) decided.push({ t, id, record });
      else if (record.state === 'registered' && record.autoRegistered === 'hold') decided.push({ t, id, record, hold: true });
      else await this.refuse(id, message, `device '${id}' is ${record.state}: only an active device may send data`, true);
    }
    if (p && this.svc.config.patientBinding === 'assigned-only') {
      for (const d of decided) {
        const denial = this.patientDenial(p, d);
        if (denial) await this.refuse(d.id, message, denial, !!d.record);
      }
    }
    for (const d of decided) if (d.record) this.svc.applyAssignment(d.t, d.record);
    const decision: GuardDecision = { readings: decided.map((d) => d.t), commit: () => this.commit(adapterId, message, decided, decision) };
    return decision;
  }

  /** Phase two, after validation: registers unknown devices, holds readings, records monitoring. */
  private async commit(adapterId: string, message: InboundMessage, decided: Decided[], decision: GuardDecision): Promise<Reading[]> {
    const p = message.principal;
    const registered = new Map<string, DeviceRecord>();
    for (const d of decided) {
      if (!d.register || !d.id) continue;
      // The message's next reading of this device finds it registered.
      let record = registered.get(d.id);
      if (!record) {
        record = (await this.svc.autoRegister(d.id, d.register, adapterId, p, message.channel)) ?? (await this.svc.registry.get(d.id));
        if (!record) await this.refuse(d.id, message, `device '${d.id}' could not be registered`, false);
        registered.set(d.id, record as DeviceRecord);
      }
      const r = record as DeviceRecord;
      // Registered meanwhile by someone else: its state decides, as it would have in `decide`.
      if (acceptsData(r.state)) d.hold = false;
      else if (r.state === 'registered' && r.autoRegistered === 'hold') d.hold = true;
      else await this.refuse(d.id, message, `device '${d.id}' is ${r.state}: only an active device may send data`, true);
      d.record = r;
    }
    const admitted: Reading[] = [];
    for (const d of decided) {
      if (d.hold && d.id) {
        const ok = await this.svc.registry.hold(
          d.id,
          { adapterId, channel: message.channel, receivedAt: message.receivedAt, translations: [d.t] },
          this.svc.config.heldMax,
        );
        if (!ok) {
          throw new GatewayError(
            429,
            outcome([
              issue(
                'throttled',
                `device '${d.id}' has ${this.svc.config.heldMax} readings held for review already: activate it (or decommission it) before it sends more`,
              ),
            ]),
            { headers: { 'Retry-After': '3600' } },
          );
        }
        this.metrics.inc('device_held_readings_total', { channel: message.channel });
        await this.afterHold(d.id, message);
      } else admitted.push(d.t);
    }
    // Monitoring, one round trip for the message: best effort, it must not refuse data. Written while the message is
    // queued (the pipeline waits for both before it answers), not before: one round trip less of waiting per message.
    const seen = new Map<string, { id: string; readings: number; telemetry: { battery?: number; signal?: number } }>();
    for (const d of decided) {
      if (!d.id) continue;
      const s = seen.get(d.id);
      if (s) {
        s.readings++;
        if (s.telemetry.battery === undefined || s.telemetry.signal === undefined) {
          const more = readingsOf(message.body, d.id, d.t);
          s.telemetry.battery ??= more.battery;
          s.telemetry.signal ??= more.signal;
        }
      } else seen.set(d.id, { id: d.id, readings: 1, telemetry: readingsOf(message.body, d.id, d.t) });
    }
    decision.pending = this.svc.registry.seenMany([...seen.values()], message.receivedAt, message.channel).catch(() => undefined);
    return admitted;
  }

  /** The registered records the readings name, by device id or by another registered identifier (an EUI-64). */
  private async findRecords(values: string[]): Promise<Map<string, DeviceRecord>> {
    const registry = this.svc.registry;
    const records = await registry.getMany(values);
    const aliases = await registry.resolveAliases(values.filter((v) => !records.has(v)));
    if (aliases.size) {
      const byId = await registry.getMany([...new Set(aliases.values())]);
      for (const [value, id] of aliases) {
        const r = byId.get(id);
        if (r) records.set(value, r);
      }
    }
    return records;
  }

  /**
   * A transition may have happened between the state check and the hold: released readings of a device that became
   * active meanwhile, and drop those of one decommissioned meanwhile (its wipe ran before they arrived).
   */
  private async afterHold(id: string, message: InboundMessage): Promise<void> {
    const now = await this.svc.registry.get(id);
    if (now?.state === 'active') {
      await this.svc.releaseHeld(now, { principal: SYSTEM, address: message.attributes?.remoteAddress });
    } else if (now?.state === 'decommissioned') {
      await this.svc.registry.dropHeld(id, (await this.svc.registry.peekHeld(id)).raw);
      await this.refuse(id, message, `device '${id}' is decommissioned: only an active device may send data`, false);
    }
  }

  /**
   * DEVICE_PATIENT_BINDING=assigned-only: why this reading may not be filed for the patient(s) it names, if it may not.
   * A device credential (HTTP device key, MQTT topic) names only its device's assigned patient, in the configured
   * system, and no demographics; it may name none (the assignment is filled in). A vendor credential may not contradict
   * the registry: an assigned device's readings name its assigned patient or none. Admin and operator credentials (people,
   * replays) and MLLP senders (no credential: the PID segment carries the patient, the sender allow-list the trust) are
   * not bound. The reason never quotes a patient identifier (it is logged and audited).
   */
  private patientDenial(p: Principal, d: Decided): string | undefined {
    if (p.role !== 'device' && p.role !== 'vendor') return undefined;
    const system = this.svc.config.patientIdentifierSystem;
    const assigned = d.record?.assignment?.patientId;
    const device = `device '${d.id ?? p.id}'`;
    const how = `(DEVICE_PATIENT_BINDING=assigned-only)`;
    const named: { system?: string; value?: string; reference?: string }[] = [];
    if (d.t.patient) named.push(d.t.patient);
    for (const o of d.t.observations) {
      const s = o.subject;
      if (s?.identifier) named.push({ system: s.identifier.system, value: s.identifier.value });
      else if (s?.reference) named.push({ reference: s.reference });
    }
    if (p.role === 'vendor') {
      if (!assigned) return undefined;
      const other = named.some((n) => n.reference || n.system !== system || n.value !== assigned);
      return other ? `the reading names another patient than the one ${device} is assigned to ${how}` : undefined;
    }
    if (d.t.patients?.length) return `a device credential may not send patient demographics ${how}`;
    for (const n of named) {
      if (n.reference)
        return `the reading names its patient by reference: a device credential names its assigned patient by identifier ${how}`;
      if (n.system !== system)
        return `the reading names a patient in identifier system '${n.system ?? '(none)'}': a device credential files readings in ${system} only ${how}`;
      if (!assigned)
        return `${device} is not assigned to a patient: a device credential files readings only for its device's assigned patient (assign it: PUT /api/devices/{id}/assignment) ${how}`;
      if (n.value !== assigned) return `the reading names another patient than the one ${device} is assigned to ${how}`;
    }
    return undefined;
  }

  /** Why this principal may not send for this device id (before the registry is consulted), if it may not. */
  private principalDenial(p: Principal, deviceId: string): string | undefined {
    switch (p.role) {
      case 'device':
        return p.id === deviceId ? undefined : `the credential of device '${p.id}' may not send data of device '${deviceId}'`;
      case 'vendor':
      case 'admin':
      case 'operator':
        return undefined;
      default:
        p.role satisfies never;
        return undefined;
    }
  }
}
