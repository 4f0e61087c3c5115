/**
 * AuditEvent builder, modelled on the IHE Basic Audit Log Patterns (BALP): `type` and `subtype` say what happened,
 * `action` (C/R/U/D/E), `recorded`, `outcome` (0 success, 4 minor failure = refused, 8 serious failure), one agent
 * for the caller (who = principal role:id, the key id, the network address) and one for the gateway, `source.observer`
 * = the gateway, and `entity.what` = the object acted on by identifier (a Device identifier, a credential key id).
 * AuditEvents never carry PHI: no patient identifiers, names or observation values.
 */
import { randomUUID } from 'node:crypto';
import type { AuditEvent, AuditEventEntity, Coding } from 'fhir/r4';
import type { Principal } from '../core/contract.js';

export const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
export const AUDIT_EVENT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
export const RESTFUL_INTERACTION = 'http://hl7.org/fhir/restful-interaction';
/** The gateway's own subtypes (lifecycle actions, credential events) where BALP has no code. */
export const GATEWAY_AUDIT_SYSTEM = 'urn:iomt-gateway:audit';
export const PRINCIPAL_SYSTEM = 'urn:iomt-gateway:principal';
export const CREDENTIAL_SYSTEM = 'urn:iomt-gateway:credential';
export const VENDOR_SYSTEM = 'urn:iomt-gateway:vendor';

/** The closed set of things the gateway audits. */
export const AuditKinds = {
  deviceRegistered: 'device-registered',
  deviceUpdated: 'device-updated',
  deviceActivated: 'device-activate',
  deviceSuspended: 'device-suspend',
  deviceDecommissioned: 'device-decommission',
  deviceAssigned: 'device-assignment',
  deviceConfigured: 'device-config',
  heldDataReleased: 'held-data-released',
  vendorRegistered: 'vendor-registered',
  credentialIssued: 'credential-issued',
  credentialRotated: 'credential-rotated',
  credentialRevoked: 'credential-revoked',
  accessRefused: 'access-refused',
  dataRefused: 'data-refused',
  adapterRegistered: 'adapter-registered',
  adapterEnabled: 'adapter-enable',
  adapterDisabled: 'adapter-disable',
  adapterDeleted: 'adapter-deleted',
  consoleSignIn: 'console-sign-in',
  consoleSignOut: 'console-sign-out',
  consoleAction: 'console-action',
} as const;
export type AuditKind = (typeof AuditKinds)[keyof typeof AuditKinds];

type Action = NonNullable<AuditEvent['action']>;

function classify(kind: AuditKind): { type: Coding; subtype: Coding[]; action: Action } {
  const rest = { system: AUDIT_EVENT_TYPE, code: 'rest', display: 'Restful Operation' };
  const security = { system: DCM, code: '110113', display: 'Security Alert' };
  const interaction = (code: string) => ({ system: RESTFUL_INTERACTION, code, display: code });
  const own = (code: string) => ({ system: GATEWAY_AUDIT_SYSTEM, code: kind, display: code });
  switch (kind) {
    case 'device-registered':
    case 'vendor-registered':
    case 'adapter-registered':
      return { type: rest, subtype: [interaction('create'), own(kind)], action: 'C' };
    case 'device-updated':
    case 'device-activate':
    case 'device-suspend':
    case 'device-assignment':
    case 'device-config':
    case 'held-data-released':
    case 'adapter-enable':
    case 'adapter-disable':
      return { type: rest, subtype: [interaction('update'), own(kind)], action: 'U' };
    case 'adapter-deleted':
      return { type: rest, subtype: [interaction('delete'), own(kind)], action: 'D' };
    case 'device-decommission':
      return { type: rest, subtype: [interaction('update'), own(kind)], action: 'D' };
    case 'credential-issued':
      return {
        type: security,
        subtype: [{ system: DCM, code: '110137', display: 'User Security Attributes Changed' }, own(kind)],
        action: 'C',
      };
    case 'credential-rotated':
      return {
        type: security,
        subtype: [{ system: DCM, code: '110137', display: 'User Security Attributes Changed' }, own(kind)],
        action: 'U',
      };
    case 'credential-revoked':
      return {
        type: security,
        subtype: [{ system: DCM, code: '110137', display: 'User Security Attributes Changed' }, own(kind)],
        action: 'D',
      };
    case 'access-refused':
      return {
        type: { system: DCM, code: '110114', display: 'User Authentication' },
        subtype: [{ system: DCM, code: '110122', display: 'Login' }, own(kind)],
        action: 'E',
      };
    case 'console-sign-in':
      return {
        type: { system: DCM, code: '110114', display: 'User Authentication' },
        subtype: [{ system: DCM, code: '110122', display: 'Login' }, own(kind)],
        action: 'E',
      };
    case 'console-sign-out':
      return {
        type: { system: DCM, code: '110114', display: 'User Authentication' },
        subtype: [{ system: DCM, code: '110123', display: 'Logout' }, own(kind)],
        action: 'E',
      };
    case 'console-action':
      return { type: rest, subtype: [own(kind)], action: 'E' };
    case 'data-refused':
      return { type: security, subtype: [{ system: DCM, code: '110129', display: 'Access Control' }, own(kind)], action: 'C' };
    default:
      kind satisfies never;
      throw new Error('unknown audit kind');
  }
}

export interface AuditEntityInput {
  kind: 'Device' | 'Credential' | 'Vendor' | 'Request' | 'Adapter';
  /** Device id, key id, vendor id, or "METHOD /path" of a request. */
  id: string;
  system?: string;
  description?: string;
  /** Name/value pairs about the entity (an aggregated event's count, say): `entity.detail`. */
  detail?: { type: string; value: string }[];
}

export interface AuditInput {
  kind: AuditKind;
  /** undefined: no credential was presented. */
  principal?: Principal;
  address?: string;
  entities: AuditEntityInput[];
  outcome?: '0' | '4' | '8' | '12';
  /** Human-readable reason (never PHI). */
  description?: string;
  recorded?: string;
  /** When the audited activity happened, if it spans time (an aggregate of refusals: the first and the last). */
  period?: { start: string; end: string };
}

export function buildAuditEvent(input: AuditInput, deviceSystem: string): AuditEvent {
  const c = classify(input.kind);
  const p = input.principal;
  const who = p ? `${p.role}:${p.id}` : 'anonymous';
  const entity: AuditEventEntity[] = input.entities.map((e) => {
    const system =
      e.system ??
      (e.kind === 'Device'
        ? deviceSystem
        : e.kind === 'Credential'
          ? CREDENTIAL_SYSTEM
          : e.kind === 'Vendor'
            ? VENDOR_SYSTEM
            : e.kind === 'Adapter'
              ? 'urn:iomt-gateway:adapter'
              : 'urn:iomt-gateway:request');
    return {
      what: { identifier: { system, value: e.id }, ...(e.kind === 'Device' ? { type: 'Device' } : {}) },
      type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' },
      ...(e.description ? { description: e.description } : {}),
      ...(e.detail?.length ? { detail: e.detail.map((d) => ({ type: d.type, valueString: d.value })) } : {}),
    };
  });
  return {
    resourceType: 'AuditEvent',
    id: randomUUID(),
    type: c.type,
    subtype: c.subtype,
    action: c.action,
    ...(input.period ? { period: input.period } : {}),
    recorded: input.recorded ?? new Date().toISOString(),
    outcome: input.outcome ?? '0',
    ...(input.description ? { outcomeDesc: input.description } : {}),
    agent: [
      {
        type: { coding: [{ system: DCM, code: '110153', display: 'Source Role ID' }] },
        who: { identifier: { system: PRINCIPAL_SYSTEM, value: who }, display: p ? `${p.role} ${p.id} (key ${p.keyId})` : 'no credential' },
        requestor: true,
        ...(p ? { role: [{ coding: [{ system: PRINCIPAL_SYSTEM, code: p.role }] }] } : {}),
        ...(input.address ? { network: { address: input.address, type: '2' as const } } : {}),
      },
      {
        type: { coding: [{ system: DCM, code: '110152', display: 'Destination Role ID' }] },
        who: { display: 'iomt-fhir-gateway' },
        requestor: false,
      },
    ],
    source: {
      observer: { display: 'iomt-fhir-gateway' },
      type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }],
    },
    entity,
  };
}

/** The gateway subtype code of an event (its `kind`). */
export function auditKindOf(e: AuditEvent): string | undefined {
  return e.subtype?.find((s) => s.system === GATEWAY_AUDIT_SYSTEM)?.code;
}
