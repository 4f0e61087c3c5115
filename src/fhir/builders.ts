/**
 * Builders for the resources every adapter produces, so that each adapter states only what is specific to its input.
 * Identifiers are deterministic: the same reading always yields the same Observation identifier, which the delivery
 * worker uses for conditional creates (a retried job never duplicates data).
 */
import type { CodeableConcept, Coding, Device, Identifier, Observation, ObservationComponent, Quantity, Reference } from 'fhir/r4';
import type { PatientIdentity } from '../core/contract.js';
import {
  BP_COMPONENT_LOINC,
  BP_PANEL_LOINC,
  CATEGORY_DISPLAY,
  type Category,
  findMdcMetric,
  LOINC_SYSTEM,
  LOINC_VITALS,
  MDC_SYSTEM,
  type MdcMetric,
  OBSERVATION_CATEGORY_SYSTEM,
  UCUM_SYSTEM,
} from './terminology.js';

/** FHIR's way to say "this identifier is a URI": RFC 3986, the value a urn:uuid. */
export const URI_IDENTIFIER_SYSTEM = 'urn:ietf:rfc:3986';

export interface DeviceIdentity {
  system: string;
  value: string;
}

export { deterministicUuid, hashKey } from '../core/ids.js';
import { deterministicUuid } from '../core/ids.js';

/** A concept resolved to its codings: the LOINC coding a profile requires first, then the MDC coding. */
export interface ResolvedCode {
  codings: Coding[];
  category?: Category;
  text?: string;
  /** Position in a blood-pressure panel, when it is part of one. */
  bp?: { family: string; role: 'panel' | 'systolic' | 'diastolic' | 'mean' };
  /** UCUM unit the profile expects by default. */
  ucum?: string;
}

export function mdcCoding(m: MdcMetric): Coding {
  return { system: MDC_SYSTEM, code: String(m.code), display: m.refId };
}

export function resolveMdc(m: MdcMetric): ResolvedCode {
  const codings: Coding[] = [];
  if (m.loinc) codings.push({ system: LOINC_SYSTEM, code: m.loinc.code, display: m.loinc.display });
  codings.push(mdcCoding(m));
  return { codings, category: m.category, text: m.loinc?.display ?? m.refId, bp: m.bp, ucum: m.ucum };
}

/** Resolves an MDC reference id / numeric code, or a LOINC code; undefined when the gateway does not know it. */
export function resolveCode(input: { system?: string; code: string; display?: string }): ResolvedCode | undefined {
  const system = input.system ?? (/^MDC_/i.test(input.code) ? MDC_SYSTEM : undefined);
  if (system === MDC_SYSTEM || system === undefined) {
    const m = findMdcMetric(input.code);
    if (m) return resolveMdc(m);
    if (system === MDC_SYSTEM) return undefined;
  }
  if (system === LOINC_SYSTEM) {
    const v = LOINC_VITALS.get(input.code);
    if (!v) return undefined;
    const bp = v.bp ? { family: 'LOINC', role: v.bp } : undefined;
    return {
      codings: [{ system: LOINC_SYSTEM, code: input.code, display: v.display }],
      category: 'vital-signs',
      text: v.display,
      bp,
      ucum: v.ucum,
    };
  }
  return undefined;
}

export function categoryConcept(category: Category): CodeableConcept {
  return {
    coding: [{ system: OBSERVATION_CATEGORY_SYSTEM, code: category, display: CATEGORY_DISPLAY[category] }],
    text: CATEGORY_DISPLAY[category],
  };
}

export function quantity(value: number, ucum: string, unit?: string): Quantity {
  return { value, unit: unit ?? ucum, system: UCUM_SYSTEM, code: ucum };
}

export interface DeviceInput {
  identity: DeviceIdentity;
  /** Other identifiers (EUI-64, UDI) besides the primary one. */
  extraIdentifiers?: Identifier[];
  manufacturer?: string;
  model?: string;
  serialNumber?: string;
  type?: CodeableConcept;
  displayName?: string;
}

export function buildDevice(d: DeviceInput): Device {
  const device: Device = {
    resourceType: 'Device',
    identifier: [{ system: d.identity.system, value: d.identity.value }, ...(d.extraIdentifiers ?? [])],
    status: 'active',
  };
  if (d.displayName) device.deviceName = [{ name: d.displayName, type: 'user-friendly-name' }];
  if (d.manufacturer) device.manufacturer = d.manufacturer;
  if (d.model) device.modelNumber = d.model;
  if (d.serialNumber) device.serialNumber = d.serialNumber;
  if (d.type) device.type = d.type;
  return device;
}

export function deviceReference(d: DeviceIdentity): Reference {
  return { type: 'Device', identifier: { system: d.system, value: d.value } };
}

export function patientReference(p: PatientIdentity): Reference {
  return { type: 'Patient', identifier: { system: p.system, value: p.value } };
}

export type ObservationValue =
  | { kind: 'quantity'; quantity: Quantity }
  | { kind: 'string'; value: string }
  | { kind: 'codeableConcept'; value: CodeableConcept }
  | { kind: 'sampledData'; value: NonNullable<Observation['valueSampledData']> }
  | { kind: 'absent'; reason: CodeableConcept };

export interface ObservationInput {
  device: DeviceIdentity;
  patient?: PatientIdentity;
  /** ISO 8601 date-time, or a period. */
  effective: string | { start: string; end?: string };
  code: ResolvedCode;
  value?: ObservationValue;
  components?: { code: ResolvedCode; value: ObservationValue }[];
  status?: Observation['status'];
  /** Identifier of the source message, when the channel has one (HL7 MSH-10); part of the Observation identity. */
  sourceId?: string;
  interpretation?: CodeableConcept[];
  referenceRange?: Observation['referenceRange'];
  extraCategories?: CodeableConcept[];
}

function primaryCodeKey(code: ResolvedCode): string {
  const c = code.codings[0];
  return c ? `${c.system}|${c.code}` : (code.text ?? '');
}

function setValue(target: Observation | ObservationComponent, v: ObservationValue | undefined): void {
  if (!v) return;
  switch (v.kind) {
    case 'quantity':
      target.valueQuantity = v.quantity;
      return;
    case 'string':
      target.valueString = v.value;
      return;
    case 'codeableConcept':
      target.valueCodeableConcept = v.value;
      return;
    case 'sampledData':
      target.valueSampledData = v.value;
      return;
    case 'absent':
      target.dataAbsentReason = v.reason;
      return;
    default:
      v satisfies never;
  }
}

/** The identity of a reading: device + code + effective time + source message id. */
export function observationIdentifier(input: Pick<ObservationInput, 'device' | 'code' | 'effective' | 'sourceId'>): Identifier {
  const eff = typeof input.effective === 'string' ? input.effective : `${input.effective.start}/${input.effective.end ?? ''}`;
  const uuid = deterministicUuid(
    'Observation',
    input.device.system,
    input.device.value,
    primaryCodeKey(input.code),
    eff,
    input.sourceId ?? '',
  );
  return { system: URI_IDENTIFIER_SYSTEM, value: `urn:uuid:${uuid}` };
}

export function buildObservation(input: ObservationInput): Observation {
  const obs: Observation = {
    resourceType: 'Observation',
    identifier: [observationIdentifier(input)],
    status: input.status ?? 'final',
    code: { coding: input.code.codings, text: input.code.text },
  };
  const categories = [...(input.code.category ? [categoryConcept(input.code.category)] : []), ...(input.extraCategories ?? [])];
  if (categories.length) obs.category = categories;
  if (input.patient) obs.subject = patientReference(input.patient);
  if (typeof input.effective === 'string') obs.effectiveDateTime = input.effective;
  else obs.effectivePeriod = input.effective;
  setValue(obs, input.value);
  if (input.interpretation?.length) obs.interpretation = input.interpretation;
  if (input.referenceRange?.length) obs.referenceRange = input.referenceRange;
  obs.device = deviceReference(input.device);
  if (input.components?.length) {
    obs.component = input.components.map((c) => {
      const comp: ObservationComponent = { code: { coding: c.code.codings, text: c.code.text } };
      setValue(comp, c.value);
      return comp;
    });
  }
  return obs;
}

/** The code of a blood-pressure panel of the given MDC family (NONINV → 150020 + 85354-9). */
export function bpPanelCode(family: string): ResolvedCode {
  const panel = [...['MDC_PRESS_BLD_NONINV', 'MDC_PRESS_BLD', 'MDC_PRESS_BLD_ART', 'MDC_PRESS_BLD_ART_ABP']]
    .map((r) => findMdcMetric(r))
    .find((m) => m?.bp?.family === family);
  if (panel) return resolveMdc(panel);
  return {
    codings: [{ system: LOINC_SYSTEM, code: BP_PANEL_LOINC.code, display: BP_PANEL_LOINC.display }],
    category: 'vital-signs',
    text: BP_PANEL_LOINC.display,
  };
}

export { BP_COMPONENT_LOINC };
