/**
 * The built-in `measurements` adapter: the gateway's own vendor-neutral JSON format.
 *
 *   { "deviceId": "SN-123", "manufacturer": "...", "model": "...", "patientId": "MRN-9",
 *     "timestamp": "2026-11-23T10:00:00Z",
 *     "measurements": [ { "code": "MDC_PULS_OXIM_SAT_O2", "value": 97, "unit": "%" } ] }
 *
 * One object or an array of them. `code` is an MDC reference id (or numeric code) or `{ "system", "code" }` with a
 * LOINC vital-sign code. Units may be UCUM, MDC unit codes or common device spellings; they are normalised to UCUM.
 * Systolic + diastolic (+ mean) of one family in one reading become one blood-pressure panel with components
 * (the panel rule is fhir/bp-panel.ts, shared with the HL7v2 translation).
 */
import type { OperationOutcomeIssue } from 'fhir/r4';
import { issue } from '../core/errors.js';
import { assembleBpPanel, BpCollector } from '../fhir/bp-panel.js';
import {
  buildDevice,
  buildObservation,
  type DeviceIdentity,
  type ObservationValue,
  quantity,
  type ResolvedCode,
  resolveCode,
} from '../fhir/builders.js';
import { convertExact, toUcum } from '../fhir/terminology.js';
import type { Observation } from 'fhir/r4';
import {
  type DeviceAdapter,
  type InboundMessage,
  type PatientIdentity,
  type Reading,
  type TranslationContext,
  TranslationError,
} from '../core/contract.js';
import { isRecord, parseTimestamp } from './util.js';

interface Measured {
  index: number;
  code: ResolvedCode;
  value: number;
  ucum: string;
  unit: string;
}

/** Where each Observation came from in the payload (its reading, and the measurement of each component). */
const sources = new WeakMap<object, { reading: string; measurements: number[] }>();

/** Where the device id and the patient id of a reading came from ("[1].deviceId", "patientId"): by Device and by patient. */
const identities = new WeakMap<object, string>();

/** The payload path of an element of an Observation this adapter made: "[2].measurements[0].unit". */
function locate(resource: object, element: string): string | undefined {
  const named = identities.get(resource);
  if (named) return named;
  const src = sources.get(resource);
  if (!src) return undefined;
  const byIndex = /^Observation\.component\[(\d+)\]/.exec(element);
  const byLoinc = /^Observation\.component\(([^)]+)\)/.exec(element);
  const components = (resource as { component?: { code?: { coding?: { code?: string }[] } }[] }).component ?? [];
  const k = byIndex ? Number(byIndex[1]) : byLoinc ? components.findIndex((c) => c.code?.coding?.some((x) => x.code === byLoinc[1])) : 0;
  const at = (p: string) => `${src.reading}${src.reading ? '.' : ''}${p}`;
  if (/\.effective/.test(element)) return at('timestamp');
  if (/\.subject/.test(element)) return at('patientId');
  const m = at(`measurements[${src.measurements[Math.max(0, k)] ?? src.measurements[0]}]`);
  if (/valueQuantity\.(code|unit|system)/.test(element)) return `${m}.unit`;
  if (/\.value/.test(element)) return `${m}.value`;
  if (/\.code\b/.test(element)) return `${m}.code`;
  return m;
}

export const measurementsAdapter: DeviceAdapter = {
  locate,
  id: 'measurements',
  description: "The gateway's vendor-neutral reading format (MDC or LOINC codes, UCUM or common units)",
  translate(message: InboundMessage, ctx: TranslationContext): Reading[] {
    const body = message.body;
    const readings = Array.isArray(body) ? body : [body];
    if (readings.length === 0) throw TranslationError.of('the body holds no readings');
    const issues: OperationOutcomeIssue[] = [];
    const out: Reading[] = [];
    readings.forEach((r, i) => {
      const where = Array.isArray(body) ? `[${i}]` : '';
      const t = translateReading(r, where, ctx, issues, message.attributes?.deviceId);
      if (t) out.push(t);
    });
    if (issues.length) throw new TranslationError(issues);
    return out;
  },
};

/**
 * One reading. `channelDeviceId` is the device the channel names (the MQTT topic's device): a reading without a deviceId
 * is that device's; one naming another device is refused later by the device guard (the topic is the sender).
 */
function translateReading(
  r: unknown,
  where: string,
  ctx: TranslationContext,
  issues: OperationOutcomeIssue[],
  channelDeviceId?: string,
): Reading | undefined {
  const at = (p: string) => [`${where}${where && p ? '.' : ''}${p}`.replace(/^\./, '') || '$'];
  const before = issues.length;
  if (!isRecord(r)) {
    issues.push(issue('structure', 'a reading must be a JSON object', at('')));
    return undefined;
  }
  const deviceId = typeof r.deviceId === 'string' ? r.deviceId.trim() : r.deviceId === undefined ? (channelDeviceId ?? '') : '';
  if (!deviceId)
    issues.push(issue('required', 'deviceId is required (a non-empty string, or the device named by the MQTT topic)', at('deviceId')));
  const effective = parseTimestamp(r.timestamp);
  if (r.timestamp === undefined)
    issues.push(issue('required', 'timestamp is required (ISO 8601 with a time zone, e.g. 2026-11-23T10:00:00Z)', at('timestamp')));
  else if (!effective)
    issues.push(issue('value', `timestamp '${String(r.timestamp)}' is not an ISO 8601 date-time with a time zone`, at('timestamp')));
  let patient: PatientIdentity | undefined;
  if (typeof r.patientId === 'string' && r.patientId.trim()) patient = { system: ctx.patientIdentifierSystem, value: r.patientId.trim() };
  else if (isRecord(r.patientId) && typeof r.patientId.value === 'string') {
    patient = {
      system: typeof r.patientId.system === 'string' ? r.patientId.system : ctx.patientIdentifierSystem,
      value: r.patientId.value,
    };
  } else if (r.patientId !== undefined) issues.push(issue('value', 'patientId must be a string or { system, value }', at('patientId')));
  for (const k of ['manufacturer', 'model'] as const) {
    if (r[k] !== undefined && typeof r[k] !== 'string') issues.push(issue('value', `${k} must be a string`, at(k)));
  }
  if (!Array.isArray(r.measurements) || r.measurements.length === 0) {
    issues.push(issue('required', 'measurements must be a non-empty array', at('measurements')));
    return undefined;
  }
  const measured: Measured[] = [];
  r.measurements.forEach((m, j) => {
    const mat = (p: string) => at(`measurements[${j}]${p ? '.' + p : ''}`);
    if (!isRecord(m)) return void issues.push(issue('structure', 'a measurement must be an object { code, value, unit }', mat('')));
    const codeIn =
      typeof m.code === 'string'
        ? { code: m.code }
        : isRecord(m.code) && typeof m.code.code === 'string'
          ? { system: typeof m.code.system === 'string' ? m.code.system : undefined, code: m.code.code }
          : undefined;
    if (!codeIn)
      return void issues.push(
        issue('required', 'code is required: an MDC reference id or { "system": "http://loinc.org", "code": ... }', mat('code')),
      );
    const code = resolveCode(codeIn);
    if (!code) {
      const sys = codeIn.system ? `${codeIn.system}|` : '';
      return void issues.push(
        issue(
          'code-invalid',
          `unknown code '${sys}${codeIn.code}': not an MDC metric or LOINC vital sign the gateway maps (the accepted codes: GET /formats/measurements/codes, docs/codes.md)`,
          mat('code'),
        ),
      );
    }
    if (typeof m.value !== 'number' || !Number.isFinite(m.value))
      return void issues.push(issue('value', 'value must be a finite number', mat('value')));
    if (typeof m.unit !== 'string' || !m.unit.trim()) return void issues.push(issue('required', 'unit is required', mat('unit')));
    const ucum = toUcum(m.unit);
    if (!ucum) return void issues.push(issue('code-invalid', `unknown unit '${m.unit}'`, mat('unit')));
    let value = m.value;
    let unit = ucum;
    if (code.ucum && ucum !== code.ucum) {
      const converted = convertExact(m.value, ucum, code.ucum);
      if (converted !== undefined) {
        value = converted;
        unit = code.ucum;
      }
    }
    measured.push({ index: j, code, value, ucum: unit, unit: unit === ucum ? m.unit : unit });
  });
  if (issues.length > before || !effective || !deviceId) return undefined;

  const device: DeviceIdentity = { system: ctx.deviceIdentifierSystem, value: deviceId };
  const observations: Observation[] = [];
  const panels = new BpCollector<Measured>();
  for (const m of measured) {
    const bp = m.code.bp;
    if (bp && bp.role !== 'panel') {
      // LOINC-coded components form a LOINC-only panel: the gateway adds no MDC code the device did not send
      // (a LOINC systolic may come from an invasive line; MDC 150020 would claim non-invasive).
      if (panels.held(bp.family, bp.role)) {
        issues.push(issue('business-rule', `two ${bp.role} values in one reading`, at(`measurements[${m.index}]`)));
      }
      panels.put(bp.family, bp.family, bp.role, m); // a later value replaces the earlier one (the reading is refused)
      continue;
    }
    if (bp?.role === 'panel') {
      const why = 'send the blood-pressure components (systolic, diastolic, mean), not the panel code';
      issues.push(issue('code-invalid', why, at(`measurements[${m.index}].code`)));
      continue;
    }
    const obs = buildObservation({ device, patient, effective, code: m.code, value: measuredValue(m) });
    sources.set(obs, { reading: where, measurements: [m.index] });
    observations.push(obs);
  }
  for (const [, group] of panels.groups()) {
    const panel = assembleBpPanel(group, (m) => ({ code: m.code, value: measuredValue(m) }));
    if (!panel.complete) {
      const where = at(`measurements[${panel.present.index}]`);
      issues.push(issue('business-rule', 'blood pressure needs both systolic and diastolic values in the same reading', where));
      continue;
    }
    const obs = buildObservation({ device, patient, effective, code: panel.code, components: panel.components });
    sources.set(obs, { reading: where, measurements: panel.members.map(({ value }) => value.index) });
    observations.push(obs);
  }
  if (issues.length > before) return undefined;
  const devices = [
    buildDevice({
      identity: device,
      manufacturer: typeof r.manufacturer === 'string' ? r.manufacturer : undefined,
      model: typeof r.model === 'string' ? r.model : undefined,
      serialNumber: deviceId,
    }),
  ];
  identities.set(devices[0], r.deviceId === undefined ? 'the MQTT topic (device id)' : at('deviceId')[0]);
  if (patient) identities.set(patient, at('patientId')[0]);
  return { devices, observations, patient };
}

function measuredValue(m: Measured): ObservationValue {
  return { kind: 'quantity', quantity: quantity(m.value, m.ucum, m.unit) };
}
