/**
 * Device management: registration (single, bulk, automatic), lifecycle transitions and the decommission wipe,
 * assignment, held readings, remote configuration, and the list and view of devices. Routes (routes.ts) and the ingest
 * guard (guard.ts) call this; every change is audited, reflected in the FHIR Device through the delivery queue, and
 * announced on the webhook. Credentials live in keys.ts and vendors in vendors.ts; a DeviceService builds both and
 * exposes them as `keys` and `vendors`.
 */
import type { Principal, Reading } from '../core/contract.js';
import type { AdapterRegistry } from '../adapters/registry.js';
import { badRequest, conflict, forbidden, notFound, GatewayError, outcome, issue } from '../core/errors.js';
import { validateReadings } from '../fhir/validate.js';
import { idSyntaxProblem, PATIENT_ID } from '../core/ids.js';
import { canonicalEui64 } from '../fhir/identifiers.js';
import type { DeliveryJob } from '../queue/queue.js';
import type { JobQueue } from '../queue/routing.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { AuditTrail } from '../audit/store.js';
import type { CredentialStore } from '../access/credentials.js';
import type { ApiKeyAccess } from '../access/access.js';
import { patientReference } from '../fhir/builders.js';
import type { DeviceConfig } from './config.js';
import { deviceUpdateTranslation } from './fhir.js';
import {
  DEVICE_ID,
  DEVICE_STATES,
  nextState,
  type ConnectivityState,
  type DeviceAction,
  type DeviceIdentifiers,
  type DeviceRecord,
  type DeviceState,
  type DeviceTelemetry,
} from './model.js';
import type { DecommissionReport, DeviceRegistry } from './registry.js';
import type { Notifier } from './notify.js';
import { DeviceKeys, who, type Actor } from './keys.js';
import { Vendors, type VendorRecord } from './vendors.js';

export type { Actor } from './keys.js';
export type { VendorRecord } from './vendors.js';

export interface DeviceView extends DeviceRecord {
  connectivity: ConnectivityState;
  offlineAfterMs: number;
  telemetry: DeviceTelemetry;
  heldReadings?: number;
}

export interface BulkResult {
  row: number;
  id?: string;
  status: number;
  state?: DeviceState;
  error?: string;
}

export interface TransitionResult {
  record: DeviceRecord;
  jobId?: string;
  released?: number;
  report?: DecommissionReport;
}

const str = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : undefined);

export class DeviceService {
  /** Device, vendor and operator credentials. */
  readonly keys: DeviceKeys;
  /** The vendor registry. */
  readonly vendors: Vendors;

  constructor(
    readonly registry: DeviceRegistry,
    readonly credentials: CredentialStore,
    access: ApiKeyAccess,
    private readonly queue: JobQueue,
    private readonly adapters: AdapterRegistry,
    readonly audit: AuditTrail,
    private readonly notifier: Notifier,
    readonly config: DeviceConfig,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.vendors = new Vendors(registry.redis, audit);
    this.keys = new DeviceKeys(credentials, access, audit, config, this.vendors);
  }

  // ---- ownership -------------------------------------------------------------------------------------------------

  /** A vendor acts on its own devices only; a device on itself only. Admin and operator on all. */
  assertMay(p: Principal, r: DeviceRecord): void {
    switch (p.role) {
      case 'admin':
      case 'operator':
        return;
      case 'vendor':
        // The same answer as for no device at all: a vendor must not learn which ids other vendors' devices have.
        if (!r.vendor || r.vendor !== p.vendorId) throw notFound(`no device '${r.id}' is registered`);
        return;
      case 'device':
        if (p.id !== r.id) throw forbidden('a device credential may act on its own device only');
        return;
      default:
        p.role satisfies never;
    }
  }

  async mustGet(id: string, p: Principal): Promise<DeviceRecord> {
    const r = await this.registry.get(id);
    if (!r) throw notFound(`no device '${id}' is registered`);
    this.assertMay(p, r);
    return r;
  }

  /** The vendor registry's record of a vendor (the guard reads its allowed adapters). */
  getVendor(id: string): Promise<VendorRecord | undefined> {
    return this.vendors.getVendor(id);
  }

  // ---- registration ----------------------------------------------------------------------------------------------

  /** Checks a registration body; returns the record to create or the issues found. */
  parseRegistration(body: unknown, actor: Actor): { record?: DeviceRecord; issues: string[] } {
    const issues: string[] = [];
    if (!body || typeof body !== 'object' || Array.isArray(body)) return { issues: ['the body must be a JSON object'] };
    const b = body as Record<string, unknown>;
    const id = str(b.id);
    if (!id) issues.push('id is required: the device id its payloads carry');
    else if (!DEVICE_ID.test(id)) issues.push(`id '${id}' must match ${DEVICE_ID}`);
    const idsIn = (b.identifiers ?? {}) as Record<string, unknown>;
    if (typeof idsIn !== 'object' || Array.isArray(idsIn)) issues.push('identifiers must be an object { serialNumber, eui64, udi }');
    const identifiers: DeviceIdentifiers = {};
    for (const k of ['serialNumber', 'eui64', 'udi'] as const) {
      const v = idsIn[k] ?? b[k];
      if (v === undefined || v === null || v === '') continue;
      if (typeof v !== 'string') issues.push(`identifiers.${k} must be a string`);
      else identifiers[k] = v.trim();
    }
    if (identifiers.eui64 && !canonicalEui64(identifiers.eui64)) {
      issues.push('identifiers.eui64 must be 16 hex digits (with or without - or : between pairs)');
    } else if (identifiers.eui64) identifiers.eui64 = canonicalEui64(identifiers.eui64);
    const fields = ['manufacturer', 'model', 'type', 'adapter', 'vendor', 'owner', 'department', 'firmwareVersion'] as const;
    const rec: Partial<DeviceRecord> = {};
    for (const k of fields) {
      const v = b[k];
      if (v === undefined || v === null || v === '') continue;
      if (typeof v !== 'string') issues.push(`${k} must be a string`);
      else rec[k] = v.trim();
    }
    if (rec.adapter && !this.adapters.get(rec.adapter)) issues.push(`adapter '${rec.adapter}' is not registered`);
    const p = actor.principal;
    if (p.role === 'vendor') {
      if (rec.vendor && rec.vendor !== p.vendorId) {
        issues.push(`a vendor credential registers devices of its own vendor ('${p.vendorId}') only`);
      }
      rec.vendor = p.vendorId;
    }
    if (issues.length || !id) return { issues };
    const now = new Date().toISOString();
    const record: DeviceRecord = {
      id,
      identifiers,
      ...rec,
      state: 'registered',
      createdAt: now,
      updatedAt: now,
      stateChangedAt: now,
      createdBy: who(p),
      version: 1,
    };
    return { record, issues };
  }

  async register(body: unknown, actor: Actor): Promise<DeviceRecord> {
    const { record, issues } = this.parseRegistration(body, actor);
    if (!record) throw new GatewayError(422, outcome(issues.map((m) => issue('invalid', m))));
    const created = await this.registry.create(record);
    if (!created) throw conflict(`device '${record.id}' is already registered`);
    if (typeof created === 'object') {
      throw conflict(
        `identifiers.eui64 ${record.identifiers.eui64} is registered to device '${created.identifierOf}': one EUI-64 names one device`,
      );
    }
    await this.afterChange(record, actor, 'device-registered', undefined);
    return record;
  }

  /** Registers many; one result per row, never all-or-nothing (a procurement batch with one bad row). */
  async registerBulk(rows: unknown[], actor: Actor): Promise<BulkResult[]> {
    const out: BulkResult[] = [];
    for (let i = 0; i < rows.length; i++) {
      const id = str((rows[i] as Record<string, unknown> | undefined)?.id);
      try {
        const r = await this.register(rows[i], actor);
        out.push({ row: i + 1, id: r.id, status: 201, state: r.state });
      } catch (err) {
        const e = err instanceof GatewayError ? err : new GatewayError(500, outcome([issue('exception', 'internal error')]));
        out.push({ row: i + 1, id, status: e.status, error: e.message });
      }
    }
    return out;
  }

  /** Auto-registration by the unknown-device policy (hold: registered; accept: active). False if it already existed. */
  async autoRegister(
    id: string,
    policy: 'hold' | 'accept',
    adapterId: string,
    principal: Principal | undefined,
    channel: string,
  ): Promise<DeviceRecord | undefined> {
    const now = new Date().toISOString();
    const record: DeviceRecord = {
      id,
      identifiers: {},
      adapter: this.adapters.get(adapterId) ? adapterId : undefined,
      vendor: principal?.role === 'vendor' ? principal.vendorId : principal?.vendorId,
      state: policy === 'accept' ? 'active' : 'registered',
      autoRegistered: policy,
      createdAt: now,
      updatedAt: now,
      stateChangedAt: now,
      createdBy: principal ? who(principal) : `channel:${channel}`,
      version: 1,
    };
    if ((await this.registry.create(record)) !== true) return undefined;
    await this.audit.record({
      kind: 'device-registered',
      principal,
      entities: [{ kind: 'Device', id }],
      description: `auto-registered as ${record.state} by UNKNOWN_DEVICE_POLICY=${policy} (${channel})`,
    });
    this.notifier.send({ event: 'device.registered', deviceId: id, at: now, to: record.state, by: record.createdBy });
    this.metrics.inc('devices_auto_registered_total', { policy });
    return record;
  }

  // ---- lifecycle ---------------------------------------------------------------------------------------------------

  async transition(id: string, action: DeviceAction, actor: Actor): Promise<TransitionResult> {
    const current = await this.mustGet(id, actor.principal);
    const res = await this.registry.update(id, (r) => {
      const to = nextState(r.state, action);
      if (!to) {
        const allowed = this.allowedActions(r.state).join(', ') || 'none, decommissioned is final';
        throw conflict(`device '${id}' is ${r.state}: '${action}' is not allowed (allowed: ${allowed})`);
      }
      r.state = to;
      r.stateChangedAt = new Date().toISOString();
      if (to === 'decommissioned') delete r.assignment;
      return r;
    });
    if (!res) throw notFound(`no device '${current.id}' is registered`);
    const { before, after } = res;
    let report: DecommissionReport | undefined;
    if (after.state === 'decommissioned') report = await this.wipe(before, after, actor);
    const jobId = await this.afterChange(after, actor, `device-${action}`, before.state);
    if (report) {
      report.fhirDevice.jobId = jobId;
      await this.registry.putReport(report);
    }
    let released: number | undefined;
    if (after.state === 'active') released = await this.releaseHeld(after, actor);
    return { record: after, jobId, released, report };
  }

  allowedActions(state: DeviceState): DeviceAction[] {
    return (['activate', 'suspend', 'decommission'] as const).filter((a) => nextState(state, a));
  }

  /** Decommissioning: revokes every key of the device and deletes what the registry keeps of it; returns the report. */
  private async wipe(before: DeviceRecord, after: DeviceRecord, actor: Actor): Promise<DecommissionReport> {
    const keyIds = await this.keys.revokeDeviceKeys(after.id, actor);
    const wiped = await this.registry.wipe(after.id);
    const p = actor.principal;
    return {
      deviceId: after.id,
      decommissionedAt: after.stateChangedAt,
      by: { role: p.role, id: p.id, keyId: p.keyId },
      previousState: before.state,
      wiped: {
        credentials: keyIds,
        patientAssignment: Boolean(before.assignment?.patientId),
        locationAssignment: Boolean(before.assignment?.locationId),
        heldReadings: wiped.heldReadings,
        configuration: wiped.configuration,
        telemetry: wiped.telemetry,
        cachedVerifications: 'dropped on this instance; announced to the others (gone everywhere within CREDENTIAL_CACHE_TTL_MS)',
      },
      fhirDevice: { status: 'inactive' },
    };
  }

  /** Audit, FHIR Device update through the queue, webhook. Returns the delivery job id (undefined if not queued). */
  private async afterChange(
    r: DeviceRecord,
    actor: Actor,
    kind: Parameters<AuditTrail['record']>[0]['kind'],
    from: DeviceState | undefined,
  ): Promise<string | undefined> {
    await this.audit.record({
      kind,
      principal: actor.principal,
      address: actor.address,
      entities: [{ kind: 'Device', id: r.id }],
      description: from ? `${from} -> ${r.state}` : `state ${r.state}`,
    });
    if (from !== r.state) {
      this.notifier.send({
        event: from ? 'device.state-changed' : 'device.registered',
        deviceId: r.id,
        at: r.stateChangedAt,
        from,
        to: r.state,
        type: r.type,
        by: who(actor.principal),
      });
      this.metrics.inc('device_transitions_total', { to: r.state });
    }
    return this.writeDevice(r);
  }

  /**
   * Queues the FHIR Device of the record (conditional update). Under a fresh job id each time: an unchanged content
   * id could be deduplicated by bull against an earlier job (activate, suspend, activate again).
   */
  private async writeDevice(r: DeviceRecord): Promise<string | undefined> {
    const reading = deviceUpdateTranslation(r, this.config);
    // Validated like every resource the gateway queues: an invalid Device is logged and not sent to the EHR.
    const issues = validateReadings([reading]);
    if (issues.length) {
      this.metrics.inc('device_fhir_invalid_total', {});
      this.log.error(
        { deviceId: r.id, issues: issues.map((i) => `${i.expression?.[0] ?? ''}: ${i.diagnostics ?? i.code}`) },
        'FHIR Device update is not valid; not queued',
      );
      return undefined;
    }
    const job: DeliveryJob = {
      adapterId: r.adapter ?? 'device-registry',
      channel: 'registry',
      receivedAt: new Date().toISOString(),
      translations: [reading],
    };
    try {
      return await this.queue.requeue(job);
    } catch (err) {
      this.log.warn({ deviceId: r.id, error: (err as Error).message }, 'FHIR Device update could not be queued');
      return undefined;
    }
  }

  // ---- held data -------------------------------------------------------------------------------------------------

  /** Applies the assigned patient to a translation that names none (in place). */
  applyAssignment(t: Reading, r: DeviceRecord): void {
    const patientId = r.assignment?.patientId;
    if (!patientId || t.patient) return;
    const patient = { system: this.config.patientIdentifierSystem, value: patientId };
    t.patient = patient;
    for (const o of t.observations) if (!o.subject) o.subject = patientReference(patient);
  }

  /** Queues the readings held for a device (on activation; also by the guard if an activation raced a hold). */
  async releaseHeld(r: DeviceRecord, actor: Actor): Promise<number> {
    const { raw, jobs } = await this.registry.peekHeld(r.id);
    if (!jobs.length) return 0;
    for (const j of jobs) for (const t of j.translations) this.applyAssignment(t, r);
    try {
      await this.queue.enqueue(jobs);
    } catch (err) {
      const fields = { deviceId: r.id, readings: jobs.length, error: (err as Error).message };
      this.log.warn(fields, 'held readings could not be queued; kept for the next activation');
      return 0;
    }
    await this.registry.dropHeld(r.id, raw);
    await this.audit.record({
      kind: 'held-data-released',
      principal: actor.principal,
      address: actor.address,
      entities: [{ kind: 'Device', id: r.id }],
      description: `${jobs.length} held readings queued for delivery`,
    });
    this.metrics.inc('device_held_released_total', {}, jobs.length);
    return jobs.length;
  }

  // ---- assignment ------------------------------------------------------------------------------------------------

  async assign(
    id: string,
    body: { patientId?: unknown; locationId?: unknown } | null,
    actor: Actor,
  ): Promise<{ record: DeviceRecord; jobId?: string }> {
    await this.mustGet(id, actor.principal);
    const patientId = body ? body.patientId : null;
    const locationId = body ? body.locationId : null;
    for (const [k, v] of [
      ['patientId', patientId],
      ['locationId', locationId],
    ] as const) {
      if (v !== undefined && v !== null && (typeof v !== 'string' || !v.trim())) {
        throw badRequest(`${k} must be a non-empty string or null`);
      }
    }
    // The assigned patient is filled into readings: it must be an id readings may carry (core/ids.ts).
    const badPatient = typeof patientId === 'string' ? idSyntaxProblem(patientId.trim(), PATIENT_ID) : undefined;
    if (badPatient) throw badRequest(`patientId ${badPatient}: ids are 1 to 128 characters, letters, digits and . _ : / -`);
    const res = await this.registry.update(id, (r) => {
      if (r.state === 'decommissioned') throw conflict(`device '${id}' is decommissioned: it cannot be assigned`);
      // undefined in the body: keep the current value; null: clear it.
      const next = {
        patientId: patientId === undefined ? r.assignment?.patientId : ((patientId as string | null) ?? undefined),
        locationId: locationId === undefined ? r.assignment?.locationId : ((locationId as string | null) ?? undefined),
      };
      if ((next.patientId || next.locationId) && r.state !== 'active') {
        throw conflict(`device '${id}' is ${r.state}: only an active device can be assigned to a patient or location`);
      }
      if (next.patientId || next.locationId) {
        r.assignment = {
          ...(next.patientId ? { patientId: next.patientId.trim() } : {}),
          ...(next.locationId ? { locationId: next.locationId.trim() } : {}),
          assignedAt: new Date().toISOString(),
        };
      } else delete r.assignment;
      return r;
    });
    if (!res) throw notFound(`no device '${id}' is registered`);
    const a = res.after.assignment;
    await this.audit.record({
      kind: 'device-assignment',
      principal: actor.principal,
      address: actor.address,
      entities: [{ kind: 'Device', id }],
      description: a ? `assigned (patient: ${a.patientId ? 'yes' : 'no'}, location: ${a.locationId ?? 'none'})` : 'unassigned',
    });
    return { record: res.after, jobId: await this.writeDevice(res.after) };
  }

  // ---- configuration ---------------------------------------------------------------------------------------------

  async setConfig(id: string, body: unknown, actor: Actor) {
    const r = await this.mustGet(id, actor.principal);
    if (r.state === 'decommissioned') throw conflict(`device '${id}' is decommissioned`);
    const settings = (body as { settings?: unknown } | undefined)?.settings ?? body;
    if (!settings || typeof settings !== 'object' || Array.isArray(settings)) {
      throw badRequest('the body must be a JSON object of settings (e.g. { "samplingIntervalS": 60, "thresholds": { ... } })');
    }
    const doc = await this.registry.setConfig(id, settings as Record<string, unknown>, who(actor.principal));
    await this.audit.record({
      kind: 'device-config',
      principal: actor.principal,
      address: actor.address,
      entities: [{ kind: 'Device', id }],
      description: `configuration version ${doc.version}`,
    });
    return doc;
  }

  // ---- monitoring --------------------------------------------------------------------------------------------------

  offlineAfter(r: DeviceRecord): number {
    return (r.type ? this.config.offlineAfterMsByType.get(r.type) : undefined) ?? this.config.offlineAfterMs;
  }

  /** Online/offline for active devices: silent for longer than the threshold since it was last seen (or activated). */
  connectivity(r: DeviceRecord, t: DeviceTelemetry | undefined, now = Date.now()): ConnectivityState {
    if (r.state !== 'active') return 'unknown';
    const since = Math.max(t?.lastSeen ? Date.parse(t.lastSeen) : 0, Date.parse(r.stateChangedAt));
    return now - since > this.offlineAfter(r) ? 'offline' : 'online';
  }

  view(r: DeviceRecord, t: DeviceTelemetry | undefined, p: Principal): DeviceView {
    const v: DeviceView = {
      ...r,
      connectivity: this.connectivity(r, t),
      offlineAfterMs: this.offlineAfter(r),
      telemetry: t ?? { messages: 0, errors: 0 },
    };
    // Vendors manage devices, not patients: the patient assignment is not theirs to see.
    if (p.role === 'vendor' && v.assignment?.patientId) v.assignment = { ...v.assignment, patientId: '[hidden]' };
    return v;
  }

  async list(q: Record<string, unknown>, p: Principal): Promise<DeviceView[]> {
    const one = (k: string) => (typeof q[k] === 'string' && q[k] ? (q[k] as string) : undefined);
    const state = one('state');
    if (state && !(DEVICE_STATES as string[]).includes(state)) throw badRequest(`state must be one of ${DEVICE_STATES.join(', ')}`);
    const status = one('status');
    if (status && !['online', 'offline', 'unknown'].includes(status)) throw badRequest('status must be online, offline or unknown');
    const seenBefore = one('lastSeenBefore');
    const seenAfter = one('lastSeenAfter');
    for (const [k, v] of [
      ['lastSeenBefore', seenBefore],
      ['lastSeenAfter', seenAfter],
    ]) {
      if (v && Number.isNaN(Date.parse(v))) throw badRequest(`${k} must be an ISO 8601 date-time`);
    }
    let records = await this.registry.all();
    if (p.role === 'vendor') records = records.filter((r) => r.vendor === p.vendorId);
    if (state) records = records.filter((r) => r.state === state);
    if (one('type')) records = records.filter((r) => r.type === one('type'));
    if (one('vendor')) records = records.filter((r) => r.vendor === one('vendor'));
    if (one('adapter')) records = records.filter((r) => r.adapter === one('adapter'));
    const tel = await this.registry.telemetry(records.map((r) => r.id));
    let views = records.map((r) => this.view(r, tel.get(r.id), p));
    if (status) views = views.filter((v) => v.connectivity === status);
    if (seenBefore) views = views.filter((v) => !v.telemetry.lastSeen || v.telemetry.lastSeen < new Date(seenBefore).toISOString());
    if (seenAfter) views = views.filter((v) => v.telemetry.lastSeen && v.telemetry.lastSeen > new Date(seenAfter).toISOString());
    return views;
  }
}
