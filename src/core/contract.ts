/**
 * The adapter contract. An adapter turns one inbound message into the FHIR resources it implies. It is pure: no I/O,
 * no clock (the receive time comes in the message), no randomness, so the same message always gives the same
 * resources with the same identifiers. It throws a TranslationError (a GatewayError, status 422, not retryable; core/errors.ts) for input
 * it cannot map.
 */
import type { AuditEvent, Device, Observation, Patient } from 'fhir/r4';
export { TranslationError } from './errors.js';

/** A channel's message as it reached the gateway. */
export interface InboundMessage {
  /** Parsed body: JSON for HTTP and MQTT, a parsed HL7v2 message for MLLP. */
  body: unknown;
  /** Where it came from: "http", "mqtt", "mllp". */
  channel: string;
  /** When the gateway received it (ISO 8601). */
  receivedAt: string;
  /** Channel-specific context, e.g. the MQTT topic or the MLLP peer. Adapters may read it (device id from a topic). */
  attributes?: Record<string, string>;
  /** Who sent it, as authenticated by the channel (absent when the channel has no credential to check). */
  principal?: Principal;
}

export const Roles = { admin: 'admin', operator: 'operator', vendor: 'vendor', device: 'device' } as const;
export type RoleName = (typeof Roles)[keyof typeof Roles];

/** 'an admin credential', 'an operator credential', 'a vendor credential', 'a device credential'. */
export const roleCredential = (role: RoleName): string => `${/^[aeiou]/.test(role) ? 'an' : 'a'} ${role} credential`;

/** An authenticated caller. */
export interface Principal {
  role: RoleName;
  /** Credential owner id: the device id for a device key, the vendor id for a vendor key, the key id otherwise. */
  id: string;
  /** The key id of the credential used (for audit); 'bootstrap' for ADMIN_API_KEY. */
  keyId: string;
  vendorId?: string;
}

export interface PatientIdentity {
  system: string;
  value: string;
}

/**
 * A reading: one unit of translated data, at most one device and one patient with the observations they made (or a
 * device lifecycle update, ADT demographics, forwarded AuditEvents). Delivery jobs store readings under the field
 * name `translations` (kept so that jobs queued by earlier versions are read unchanged).
 */
export interface Reading {
  /** Device resources, each with a stable identifier. Observations point at them with `device.identifier`. */
  devices: Device[];
  /** Observations, each with a deterministic identifier. `subject.identifier` names the patient. */
  observations: Observation[];
  /** The subject of the observations, resolved against the EHR at delivery. */
  patient?: PatientIdentity;
  /** Patient demographics to create or update by identifier (ADT feeds): conditional update on the first identifier. */
  patients?: Patient[];
  /**
   * How delivery writes the observations. 'create' (default): conditional create on the identifier, so a replay never
   * duplicates. 'merge': observations that aggregate samples over a period (SampledData grouped by periodInterval)
   * are read back by identifier, their SampledData data points and period merged, and written with a conditional update.
   */
  writeMode?: 'create' | 'merge';
  /**
   * How delivery writes the devices: 'create' (default; conditional create, an existing Device is left as it is) or
   * 'update' (conditional update on the identifier: lifecycle changes such as status, patient and location).
   */
  deviceWriteMode?: 'create' | 'update';
  /** Audit records forwarded to the EHR or audit repository (plain creates). */
  auditEvents?: AuditEvent[];
}

/** @deprecated the earlier name of Reading, kept for plugins written against it. */
export type Translation = Reading;

export interface TranslationContext {
  /** Identifier system for device ids that carry no system of their own. */
  deviceIdentifierSystem: string;
  /** Identifier system for patient ids that carry no system of their own. */
  patientIdentifierSystem: string;
}

export interface DeviceAdapter {
  /** Stable id, used in URLs (/ingest/:id), mappings/ and logs. */
  readonly id: string;
  readonly description: string;
  /**
   * One inbound message to zero or more translations (a batch payload may hold readings from several devices).
   * Throws TranslationError for input it cannot map.
   */
  translate(message: InboundMessage, context: TranslationContext): Reading[];
  /**
   * Optional: where in the inbound message an element of a resource this adapter produced came from (an HL7 location
   * such as "OBX[3]-6", a JSON path such as "$.measurements[0].unit"), so that a validation error points at what the
   * sender wrote rather than at the gateway's own resource. `element` is a FHIR path ("Observation.valueQuantity.code").
   */
  locate?(resource: object, element: string): string | undefined;
}
