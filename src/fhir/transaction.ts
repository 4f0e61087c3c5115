/**
 * One FHIR transaction Bundle per job. Devices and Observations are conditional creates on their identifiers
 * (`If-None-Exist`), so a retried job never duplicates them; ADT patients are conditional updates; references inside
 * the bundle use urn:uuid full URLs that the server resolves to the ids it assigns or finds. A Device whose id
 * delivery already knows (from the answer to an earlier transaction) is referred to by that id and not written.
 */
import { randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, Identifier, Observation, Patient, Reference, Resource } from 'fhir/r4';
import { deterministicUuid } from '../core/ids.js';
import type { Reading } from '../core/contract.js';

/** How the subject patient is written: created when absent (conditional create), or an already-known id. */
export type PatientTarget = { kind: 'create'; system: string; value: string } | { kind: 'existing'; id: string } | { kind: 'none' };

/** Existing Observations of a 'merge' translation, found by identifier: id + version, and the merged resource. */
export type MergedObservations = Map<string, { id: string; versionId?: string; resource: Observation }>;

const identifierQuery = (i: Identifier) => `identifier=${encodeURIComponent(`${i.system ?? ''}|${i.value ?? ''}`)}`;
const identityKey = (i: { system?: string; value?: string } | undefined) => `${i?.system ?? ''}|${i?.value ?? ''}`;

export function buildTransaction(
  jobId: string,
  t: Reading,
  patient: PatientTarget,
  merged?: MergedObservations,
  known?: KnownDevice,
): Bundle {
  return buildBatchTransaction([{ jobId, translation: t, patient, merged }], known);
}

/** One job's part of a transaction. */
export interface TransactionUnit {
  jobId: string;
  translation: Reading;
  patient: PatientTarget;
  merged?: MergedObservations;
}

/**
 * Where a Device already is on the destination (`Device/<id>`), by its identifier (`system|value`), when delivery
 * learnt it from an earlier transaction (delivery/device-ids.ts); undefined when it must be written.
 */
export type KnownDevice = (identifier: string) => string | undefined;

/**
 * One transaction for several jobs (the worker coalesces jobs that arrive together). A FHIR server resolves each
 * conditional create against what existed before the transaction, so two entries for the same Device, Patient or
 * Observation identifier would create two resources: every identity appears once, and the jobs' references point at
 * that one entry. A Device that `known` names (a create that an earlier transaction wrote or found) is not written
 * again: its Observations refer to it by id, and the EHR is spared its conditional create's search.
 */
export function buildBatchTransaction(units: TransactionUnit[], known?: KnownDevice): Bundle {
  const entries: BundleEntry[] = [];
  const seed = units[0]?.jobId ?? '';
  const fullUrl = (kind: string, key: string) => `urn:uuid:${deterministicUuid(seed, kind, key)}`;
  const deviceUrls = new Map<string, string>();
  const auditIds = new Set<string>();
  const updatedPatients = new Map<string, string>();
  const createdPatients = new Map<string, string>();
  const observationKeys = new Set<string>();
  for (const { translation: t } of units) {
    for (const d of t.devices) {
      const id = d.identifier?.[0];
      if (!id || deviceUrls.has(identityKey(id))) continue;
      const where = t.deviceWriteMode === 'update' ? undefined : known?.(identityKey(id));
      if (where) {
        deviceUrls.set(identityKey(id), where);
        continue;
      }
      const url = fullUrl('Device', identityKey(id));
      deviceUrls.set(identityKey(id), url);
      const request: BundleEntry['request'] =
        t.deviceWriteMode === 'update'
          ? { method: 'PUT', url: `Device?${identifierQuery(id)}` }
          : { method: 'POST', url: 'Device', ifNoneExist: identifierQuery(id) };
      entries.push({ fullUrl: url, resource: d, request });
    }
    for (const a of t.auditEvents ?? []) {
      const key = a.id ?? JSON.stringify(a);
      if (auditIds.has(key)) continue;
      auditIds.add(key);
      // Update-as-create on the event's own id: a retried transaction does not record the event twice.
      const request: BundleEntry['request'] = a.id ? { method: 'PUT', url: `AuditEvent/${a.id}` } : { method: 'POST', url: 'AuditEvent' };
      entries.push({ fullUrl: fullUrl('AuditEvent', key), resource: a, request });
    }
    for (const p of t.patients ?? []) {
      const id = p.identifier?.[0];
      if (!id || updatedPatients.has(identityKey(id))) continue;
      const url = fullUrl('PatientUpdate', identityKey(id));
      updatedPatients.set(identityKey(id), url);
      entries.push({ fullUrl: url, resource: p, request: { method: 'PUT', url: `Patient?${identifierQuery(id)}` } });
    }
  }
  for (const { translation: t, patient, merged } of units) {
    let subject: Reference | undefined;
    if (patient.kind === 'create') {
      const key = `${patient.system}|${patient.value}`;
      // A patient written with its demographics in this bundle is referenced there; no minimal copy is added.
      let url = updatedPatients.get(key) ?? createdPatients.get(key);
      if (!url) {
        url = fullUrl('Patient', key);
        createdPatients.set(key, url);
        const p: Patient = { resourceType: 'Patient', identifier: [{ system: patient.system, value: patient.value }] };
        entries.push({
          fullUrl: url,
          resource: p,
          request: { method: 'POST', url: 'Patient', ifNoneExist: identifierQuery(p.identifier![0]) },
        });
      }
      subject = { reference: url };
    } else if (patient.kind === 'existing') {
      subject = { reference: `Patient/${patient.id}` };
    }
    for (const o of t.observations) {
      const id = o.identifier?.[0];
      if (id) {
        if (observationKeys.has(identityKey(id))) continue;
        observationKeys.add(identityKey(id));
      }
      const obs: Observation = { ...o };
      if (subject && o.subject?.identifier) obs.subject = { ...subject, display: undefined };
      const devUrl = deviceUrls.get(identityKey(o.device?.identifier));
      if (devUrl) obs.device = { reference: devUrl };
      const existing = id ? merged?.get(identityKey(id)) : undefined;
      if (existing) {
        const resource = { ...obs, ...mergedFields(existing.resource), id: existing.id };
        entries.push({
          fullUrl: fullUrl('Observation', identityKey(id)),
          resource: resource as Resource,
          request: {
            method: 'PUT',
            url: `Observation/${existing.id}`,
            ...(existing.versionId ? { ifMatch: `W/"${existing.versionId}"` } : {}),
          },
        });
      } else {
        entries.push({
          fullUrl: id ? fullUrl('Observation', identityKey(id)) : `urn:uuid:${randomUUID()}`,
          resource: obs,
          request: id ? { method: 'POST', url: 'Observation', ifNoneExist: identifierQuery(id) } : { method: 'POST', url: 'Observation' },
        });
      }
    }
  }
  return { resourceType: 'Bundle', type: 'transaction', entry: entries };
}

function mergedFields(o: Observation): Partial<Observation> {
  const out: Partial<Observation> = {};
  if (o.valueSampledData) out.valueSampledData = o.valueSampledData;
  if (o.effectivePeriod) out.effectivePeriod = o.effectivePeriod;
  if (o.component) out.component = o.component;
  return out;
}

/**
 * Merges the SampledData of `incoming` into `existing` (same identifier, same period window): data points are
 * positions in the window; a position the incoming observation fills ("E" is empty) overwrites, others are kept.
 * Merging the same samples twice gives the same result, so a retried job is harmless.
 */
export function mergeSampledObservation(existing: Observation, incoming: Observation): Observation {
  const merged: Observation = { ...incoming };
  const a = existing.valueSampledData;
  const b = incoming.valueSampledData;
  if (a && b && a.period === b.period) {
    const pa = (a.data ?? '').split(' ');
    const pb = (b.data ?? '').split(' ');
    const n = Math.max(pa.length, pb.length);
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(pb[i] !== undefined && pb[i] !== 'E' && pb[i] !== '' ? pb[i] : (pa[i] ?? 'E'));
    merged.valueSampledData = { ...b, data: out.join(' ') };
  }
  const sa = existing.effectivePeriod;
  const sb = incoming.effectivePeriod;
  if (sa && sb) {
    merged.effectivePeriod = {
      start: [sa.start, sb.start].filter(Boolean).sort()[0],
      end: [sa.end, sb.end].filter(Boolean).sort().at(-1),
    };
  }
  if (existing.component?.length && incoming.component?.length) {
    merged.component = incoming.component.map((c) => {
      const prev = existing.component?.find((x) => JSON.stringify(x.code) === JSON.stringify(c.code));
      if (prev?.valueSampledData && c.valueSampledData) {
        const m = mergeSampledObservation(
          { ...existing, valueSampledData: prev.valueSampledData } as Observation,
          { ...incoming, valueSampledData: c.valueSampledData } as Observation,
        );
        return { ...c, valueSampledData: m.valueSampledData };
      }
      return c;
    });
  }
  return merged;
}
