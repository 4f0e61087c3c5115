/**
 * The FHIR-mapping template (fhirmapping.json) of iomt-fhir / Azure MedTech, parsed and applied.
 *
 *   { "templateType": "CollectionFhir", "template": [ { "templateType": "CodeValueFhir", "template": {
 *       "typeName": "heartrate", "periodInterval": 60, "codes": [ { "system", "code", "display" } ],
 *       "category": [ { "text", "codes": [ ... ] } ],
 *       "value": { "valueName": "hr", "valueType": "SampledData", "defaultPeriod": 5000, "unit": "count/min" },
 *       "components": [ { "codes": [ ... ], "value": { ... } } ] } } ] }
 *
 * Semantics follow microsoft/iomt-fhir (CodeValueFhirTemplateProcessor, MeasurementObservationGroupFactory,
 * SampledDataProcessor, the value processors), with these differences, each where iomt-fhir users were hurt:
 * - periodInterval: 0 = one Observation per measurement (effectiveDateTime); 60 / 1440 = UTC hour / day windows
 *   (effectivePeriod = the window, end inclusive at the last millisecond); -1 or "CorrelationId" = grouped by the
 *   measurement's correlation id (effectivePeriod = first..last measurement). Any other positive number of minutes
 *   that divides a day (5, 15, 30, ...) is accepted too (windows aligned to UTC midnight).
 * - Quantity and String hold one value: two values of one group are an error naming the template (iomt-fhir threw
 *   from `Single()` and lost the batch).
 * - A value that is not a number where a number is needed is an error naming the template and the payload path.
 * - A Quantity without `code`/`system` gets the UCUM code of its `unit` when the gateway knows the spelling
 *   ("mmHg" → "mm[Hg]"); an observation without `category` whose codes hold a LOINC vital sign gets the vital-signs
 *   category, so the R4 vital-signs rules are checked.
 * - No `issued` (it would need the clock) and no service coding: the identifier carries the type name.
 */
import type { CodeableConcept, Coding, Observation, SampledData } from 'fhir/r4';
import {
  type DeviceIdentity,
  buildObservation,
  type ObservationValue,
  observationIdentifier,
  quantity,
  type ResolvedCode,
} from '../../fhir/builders.js';
import { LOINC_SYSTEM, LOINC_VITALS, toUcum, UCUM_SYSTEM } from '../../fhir/terminology.js';
import type { PatientIdentity } from '../../core/contract.js';
import { describe, type ExtractionProblem, type Measurement } from './device-templates.js';
import { child, IssueSink, isObject, type MappingIssue, prop } from './issues.js';

export const FhirValueType = {
  quantity: 'Quantity',
  sampledData: 'SampledData',
  codeableConcept: 'CodeableConcept',
  string: 'String',
} as const;
export type FhirValueType = (typeof FhirValueType)[keyof typeof FhirValueType];

export interface FhirValueTemplate {
  path: string;
  valueName: string;
  valueType: FhirValueType;
  unit?: string;
  code?: string;
  system?: string;
  /** SampledData: milliseconds between samples. */
  defaultPeriod?: number;
  text?: string;
  codes?: Coding[];
}

export interface ComponentTemplate {
  path: string;
  codes: Coding[];
  value: FhirValueTemplate;
}

/** -1: by correlation id; 0: one Observation per measurement; n > 0: windows of n minutes. */
export const CORRELATION_ID = -1;

/** Most samples one SampledData may hold (a day at 1 Hz is 86 400): bounds memory per message. */
export const MAX_SAMPLES = 100_000;

export interface CodeValueTemplate {
  index: number;
  path: string;
  typeName: string;
  periodInterval: number;
  codes: Coding[];
  category?: CodeableConcept[];
  value?: FhirValueTemplate;
  components: ComponentTemplate[];
}

const PERIOD_NAMES: Record<string, number> = {
  correlationid: CORRELATION_ID,
  single: 0,
  instance: 0,
  hourly: 60,
  hour: 60,
  daily: 1440,
  day: 1440,
};

function parsePeriod(v: unknown): number | undefined {
  if (typeof v === 'string') {
    const named = PERIOD_NAMES[v.trim().toLowerCase()];
    if (named !== undefined) return named;
    if (/^-?\d+$/.test(v.trim())) return parsePeriod(Number(v));
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) return undefined;
  if (v === CORRELATION_ID || v === 0) return v;
  return v > 0 && 1440 % v === 0 ? v : undefined;
}

function parseValueType(v: unknown): FhirValueType | undefined {
  if (typeof v !== 'string') return undefined;
  return Object.values(FhirValueType).find((t) => t.toLowerCase() === v.trim().toLowerCase());
}

function parseCodings(v: unknown, at: string, sink: IssueSink, required: boolean): Coding[] | undefined {
  if (v === undefined) {
    if (required) sink.error(at, 'required');
    return undefined;
  }
  if (!Array.isArray(v) || (required && v.length === 0)) {
    sink.error(at, 'must be a non-empty array of { "system", "code", "display" }');
    return undefined;
  }
  const out: Coding[] = [];
  v.forEach((c, i) => {
    const cp = child(at, i);
    if (!isObject(c)) return void sink.error(cp, 'must be an object { "system", "code", "display" }');
    const code = prop(c, 'code');
    const system = prop(c, 'system');
    const display = prop(c, 'display');
    if (typeof code?.value !== 'string' || !code.value.trim())
      return void sink.error(child(cp, code?.key ?? 'code'), code ? 'must be a non-empty string' : 'required');
    if (system && typeof system.value !== 'string') return void sink.error(child(cp, system.key), 'must be a string (a URI)');
    if (display && typeof display.value !== 'string') return void sink.error(child(cp, display.key), 'must be a string');
    const coding: Coding = {};
    if (system?.value) coding.system = system.value as string;
    coding.code = code.value;
    if (display?.value) coding.display = display.value as string;
    out.push(coding);
  });
  return out;
}

function parseValue(v: unknown, at: string, sink: IssueSink): FhirValueTemplate | undefined {
  if (!isObject(v)) {
    sink.error(at, 'must be an object { "valueType", "valueName", ... }');
    return undefined;
  }
  const before = sink.errorCount;
  const vt = prop(v, 'valueType');
  const valueType = parseValueType(vt?.value);
  if (!valueType)
    sink.error(
      child(at, vt?.key ?? 'valueType'),
      vt ? `unknown value type ${JSON.stringify(vt.value)}; expected ${Object.values(FhirValueType).join(', ')}` : 'required',
    );
  const vn = prop(v, 'valueName');
  if (typeof vn?.value !== 'string' || !vn.value.trim())
    sink.error(child(at, vn?.key ?? 'valueName'), vn ? 'must be a non-empty string' : 'required');
  const str = (name: string): string | undefined => {
    const p = prop(v, name);
    if (p === undefined || p.value === null) return undefined;
    if (typeof p.value !== 'string') {
      sink.error(child(at, p.key), 'must be a string');
      return undefined;
    }
    return p.value;
  };
  const out: FhirValueTemplate = {
    path: at,
    valueName: typeof vn?.value === 'string' ? vn.value : '',
    valueType: valueType ?? FhirValueType.string,
  };
  switch (valueType) {
    case FhirValueType.sampledData: {
      const dp = prop(v, 'defaultPeriod');
      const n = typeof dp?.value === 'string' && dp.value.trim() ? Number(dp.value) : dp?.value;
      if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0)
        sink.error(
          child(at, dp?.key ?? 'defaultPeriod'),
          dp ? 'must be a positive number of milliseconds' : 'required for SampledData (milliseconds between samples)',
        );
      else out.defaultPeriod = n;
      out.unit = str('unit');
      break;
    }
    case FhirValueType.quantity:
      out.unit = str('unit');
      out.code = str('code');
      out.system = str('system');
      break;
    case FhirValueType.codeableConcept: {
      out.text = str('text');
      const codes = prop(v, 'codes');
      out.codes = parseCodings(codes?.value, child(at, codes?.key ?? 'codes'), sink, true);
      break;
    }
    case FhirValueType.string:
    case undefined:
      break;
    default:
      valueType satisfies never;
  }
  return sink.errorCount > before ? undefined : out;
}

/** Parses fhirmapping.json; every problem is reported with its JSON path. */
export function parseFhirMapping(json: unknown, file?: string): { templates: CodeValueTemplate[]; issues: MappingIssue[] } {
  const sink = new IssueSink(file);
  const templates: CodeValueTemplate[] = [];
  if (!isObject(json)) {
    sink.error('$', 'the FHIR mapping must be a JSON object { "templateType": "CollectionFhir", "template": [ ... ] }');
    return { templates, issues: sink.issues };
  }
  const tt = prop(json, 'templateType');
  if (typeof tt?.value !== 'string' || !/^collectionfhir(template)?$/i.test(tt.value)) {
    sink.error('$.templateType', `must be "CollectionFhir"${tt ? ` (found ${JSON.stringify(tt.value)})` : ': required'}`);
  }
  const list = prop(json, 'template');
  if (!Array.isArray(list?.value)) {
    sink.error('$.template', list ? 'must be an array of templates' : 'required');
    return { templates, issues: sink.issues };
  }
  if (list.value.length === 0) sink.error('$.template', 'the collection holds no templates');
  const byType = new Map<string, string>();
  list.value.forEach((entry, index) => {
    const path = `$.template[${index}]`;
    if (!isObject(entry)) return void sink.error(path, 'must be an object { "templateType": "CodeValueFhir", "template": { ... } }');
    const et = prop(entry, 'templateType');
    if (typeof et?.value !== 'string' || !/^codevaluefhir(template)?$/i.test(et.value)) {
      sink.error(
        `${path}.templateType`,
        et ? `unknown FHIR template type ${JSON.stringify(et.value)}; expected "CodeValueFhir"` : 'required',
      );
      return;
    }
    const body = prop(entry, 'template');
    const tpath = `${path}.template`;
    if (!isObject(body?.value)) return void sink.error(tpath, body ? 'must be an object' : 'required');
    const t = body.value;
    const before = sink.errorCount;
    const typeName = prop(t, 'typeName');
    if (typeof typeName?.value !== 'string' || !typeName.value.trim())
      sink.error(child(tpath, typeName?.key ?? 'typeName'), typeName ? 'must be a non-empty string' : 'required');
    else if (byType.has(typeName.value))
      sink.error(child(tpath, typeName.key), `typeName '${typeName.value}' is already mapped by ${byType.get(typeName.value)}`);
    else byType.set(typeName.value, path);
    const pi = prop(t, 'periodInterval');
    const periodInterval = pi === undefined ? 0 : parsePeriod(pi.value);
    if (periodInterval === undefined) {
      sink.error(
        child(tpath, pi?.key ?? 'periodInterval'),
        `${JSON.stringify(pi?.value)} is not a period: use 0 (one Observation per measurement), 60 (hour), 1440 (day), -1 or "CorrelationId", or minutes that divide a day`,
      );
    }
    const codesP = prop(t, 'codes');
    const codes = parseCodings(codesP?.value, child(tpath, codesP?.key ?? 'codes'), sink, true);
    let category: CodeableConcept[] | undefined;
    const cat = prop(t, 'category');
    if (cat !== undefined && cat.value !== null) {
      const cpath = child(tpath, cat.key);
      if (!Array.isArray(cat.value)) sink.error(cpath, 'must be an array of { "text", "codes": [ ... ] }');
      else {
        category = [];
        cat.value.forEach((c, i) => {
          if (!isObject(c)) return void sink.error(child(cpath, i), 'must be an object { "text", "codes": [ ... ] }');
          const cc = prop(c, 'codes');
          const codings = parseCodings(cc?.value, child(child(cpath, i), cc?.key ?? 'codes'), sink, true);
          const text = prop(c, 'text');
          const concept: CodeableConcept = {};
          if (codings) concept.coding = codings;
          if (typeof text?.value === 'string' && text.value) concept.text = text.value;
          category?.push(concept);
        });
      }
    }
    const valP = prop(t, 'value');
    const value = valP === undefined || valP.value === null ? undefined : parseValue(valP.value, child(tpath, valP.key), sink);
    const components: ComponentTemplate[] = [];
    const compP = prop(t, 'components');
    if (compP !== undefined && compP.value !== null) {
      const cpath = child(tpath, compP.key);
      if (!Array.isArray(compP.value)) sink.error(cpath, 'must be an array of { "codes", "value" }');
      else {
        compP.value.forEach((c, i) => {
          const p = child(cpath, i);
          if (!isObject(c)) return void sink.error(p, 'must be an object { "codes", "value" }');
          const cc = prop(c, 'codes');
          const ccodes = parseCodings(cc?.value, child(p, cc?.key ?? 'codes'), sink, true);
          const cv = prop(c, 'value');
          const cval =
            cv === undefined ? (sink.error(child(p, 'value'), 'required'), undefined) : parseValue(cv.value, child(p, cv.key), sink);
          if (ccodes && cval) components.push({ path: p, codes: ccodes, value: cval });
        });
      }
    }
    if (valP === undefined && (compP === undefined || (Array.isArray(compP.value) && compP.value.length === 0))) {
      sink.error(tpath, 'a template needs a value or components (otherwise the Observation carries no data)');
    }
    for (const v of [value, ...components.map((c) => c.value)]) {
      if (v?.valueType === FhirValueType.sampledData && v.defaultPeriod && periodInterval && periodInterval > 0) {
        const n = Math.floor((periodInterval * 60_000 - 1) / v.defaultPeriod) + 1;
        if (n > MAX_SAMPLES)
          sink.error(
            child(v.path, 'defaultPeriod'),
            `${n} samples per Observation (periodInterval ${periodInterval} min every ${v.defaultPeriod} ms); at most ${MAX_SAMPLES}: use a longer defaultPeriod or a shorter periodInterval`,
          );
      }
    }
    const names = [value, ...components.map((c) => c.value)].filter((v): v is FhirValueTemplate => !!v).map((v) => v.valueName);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) sink.error(tpath, `valueName '${dup}' is used twice in this template`);
    if (sink.errorCount > before || !codes || periodInterval === undefined || typeof typeName?.value !== 'string') return;
    templates.push({ index, path, typeName: typeName.value, periodInterval, codes, category, value, components });
  });
  return { templates, issues: sink.issues };
}

// ---------------------------------------------------------------------------------------------------------------
// Building Observations from measurements

export interface ObservationGroup {
  template: CodeValueTemplate;
  deviceId: string;
  patientId?: string;
  encounterId?: string;
  correlationId?: string;
  /** Window for periodInterval > 0, first..last measurement for correlation groups; absent for periodInterval 0. */
  window?: { startMs: number; endMs: number };
  measurements: Measurement[];
}

/** Groups measurements as iomt's MeasurementObservationGroupFactory does, keyed also by patient and encounter. */
export function groupMeasurements(
  measurements: Measurement[],
  byType: ReadonlyMap<string, CodeValueTemplate>,
  problems: ExtractionProblem[],
): ObservationGroup[] {
  const groups = new Map<string, ObservationGroup>();
  measurements.forEach((m, i) => {
    const t = byType.get(m.type);
    if (!t) {
      problems.push({
        code: 'invalid',
        message: `template ${m.template.path} produced typeName '${m.type}', which no CodeValueFhir template maps`,
        expression: m.at,
      });
      return;
    }
    const base = [t.typeName, m.deviceId, m.patientId ?? '', m.encounterId ?? ''];
    let key: string;
    let window: ObservationGroup['window'];
    if (t.periodInterval === 0) key = [...base, 'single', String(i)].join('\u001f');
    else if (t.periodInterval === CORRELATION_ID) {
      if (!m.correlationId) {
        problems.push({
          code: 'required',
          message: `FHIR template ${t.path} (typeName '${t.typeName}') groups by correlation id, but template ${m.template.path} extracted none (set correlationIdExpression)`,
          expression: m.at,
        });
        return;
      }
      key = [...base, 'corr', m.correlationId].join('\u001f');
    } else {
      const size = t.periodInterval * 60_000;
      const startMs = Math.floor(m.timeMs / size) * size;
      window = { startMs, endMs: startMs + size - 1 };
      key = [...base, 'window', String(startMs)].join('\u001f');
    }
    let g = groups.get(key);
    if (!g) {
      g = {
        template: t,
        deviceId: m.deviceId,
        patientId: m.patientId,
        encounterId: m.encounterId,
        correlationId: t.periodInterval === CORRELATION_ID ? m.correlationId : undefined,
        window,
        measurements: [],
      };
      groups.set(key, g);
    }
    g.measurements.push(m);
  });
  for (const g of groups.values()) {
    if (g.template.periodInterval === CORRELATION_ID) {
      const times = g.measurements.map((m) => m.timeMs);
      g.window = { startMs: Math.min(...times), endMs: Math.max(...times) };
    }
  }
  return [...groups.values()];
}

interface TimedValue {
  timeMs: number;
  value: unknown;
  at: string;
}

const NUMERIC = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

export interface BuildContext {
  deviceIdentifierSystem: string;
  patientIdentifierSystem: string;
}

function label(t: CodeValueTemplate): string {
  return `FHIR template ${t.path} (typeName '${t.typeName}')`;
}

function toNumber(t: CodeValueTemplate, v: FhirValueTemplate, tv: TimedValue, problems: ExtractionProblem[]): number | undefined {
  const raw = tv.value;
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && NUMERIC.test(raw.trim()) ? Number(raw.trim()) : undefined;
  if (n === undefined || !Number.isFinite(n)) {
    problems.push({
      code: 'value',
      message: `${label(t)}: value '${v.valueName}' must be a number for ${v.valueType}, found ${describe(raw)}`,
      expression: tv.at,
    });
    return undefined;
  }
  return n;
}

function buildValue(
  t: CodeValueTemplate,
  g: ObservationGroup,
  v: FhirValueTemplate,
  values: TimedValue[],
  problems: ExtractionProblem[],
): ObservationValue | undefined {
  const before = problems.length;
  switch (v.valueType) {
    case FhirValueType.quantity:
    case FhirValueType.string: {
      if (values.length > 1) {
        problems.push({
          code: 'business-rule',
          message: `${label(t)}: ${values.length} values of '${v.valueName}' fall into one Observation (periodInterval ${t.periodInterval}), but a ${v.valueType} holds one value; use SampledData or periodInterval 0`,
          expression: values[1].at,
        });
        return undefined;
      }
      const tv = values[0];
      if (v.valueType === FhirValueType.string) {
        if (typeof tv.value === 'string' || typeof tv.value === 'number' || typeof tv.value === 'boolean')
          return { kind: 'string', value: String(tv.value) };
        problems.push({
          code: 'value',
          message: `${label(t)}: value '${v.valueName}' must be a string, number or boolean for String, found ${describe(tv.value)}`,
          expression: tv.at,
        });
        return undefined;
      }
      const n = toNumber(t, v, tv, problems);
      if (n === undefined) return undefined;
      if (v.code && v.system) return { kind: 'quantity', quantity: { value: n, unit: v.unit ?? v.code, system: v.system, code: v.code } };
      const ucum = v.code && !v.system ? v.code : v.unit ? toUcum(v.unit) : undefined;
      return { kind: 'quantity', quantity: ucum ? quantity(n, ucum, v.unit ?? ucum) : v.unit ? { value: n, unit: v.unit } : { value: n } };
    }
    case FhirValueType.codeableConcept: {
      // iomt-fhir: "the actual value isn't used"; the template's concept is the value.
      const concept: CodeableConcept = {};
      if (v.codes?.length) concept.coding = v.codes;
      if (v.text) concept.text = v.text;
      return { kind: 'codeableConcept', value: concept };
    }
    case FhirValueType.sampledData: {
      const period = v.defaultPeriod ?? 1000;
      const start = g.window?.startMs ?? values[0].timeMs;
      const end = g.window?.endMs ?? values[0].timeMs;
      const slots = Math.floor((end - start) / period) + 1;
      if (slots > MAX_SAMPLES) {
        problems.push({
          code: 'business-rule',
          message: `${label(t)}: the series of '${v.valueName}' spans ${slots} samples of ${period} ms (more than ${MAX_SAMPLES}); send it in shorter parts`,
          expression: values[values.length - 1].at,
        });
        return undefined;
      }
      const data: string[] = new Array<string>(slots).fill('E');
      for (const tv of values) {
        const n = toNumber(t, v, tv, problems);
        if (n === undefined) continue;
        const slot = Math.floor((tv.timeMs - start) / period);
        if (slot >= 0 && slot < slots) data[slot] = String(n); // the latest value of a slot wins (values are in time order)
      }
      if (problems.length > before) return undefined;
      const origin: SampledData['origin'] = { value: 0 };
      const ucum = v.unit ? toUcum(v.unit) : undefined;
      if (v.unit) origin.unit = v.unit;
      if (ucum) {
        origin.system = UCUM_SYSTEM;
        origin.code = ucum;
      }
      return { kind: 'sampledData', value: { origin, period, dimensions: 1, data: data.join(' ') } };
    }
    default:
      v.valueType satisfies never;
      return undefined;
  }
}

function valuesOf(g: ObservationGroup, name: string): TimedValue[] {
  return g.measurements
    .flatMap((m) => m.values.filter((x) => x.name === name).map((x) => ({ timeMs: m.timeMs, value: x.value, at: x.at })))
    .sort((a, b) => a.timeMs - b.timeMs);
}

export function hasVitalSignLoinc(codes: readonly Coding[]): boolean {
  return codes.some((c) => c.system === LOINC_SYSTEM && !!c.code && LOINC_VITALS.has(c.code));
}

function resolved(codes: Coding[], fallbackText: string, category?: 'vital-signs'): ResolvedCode {
  return { codings: codes, text: codes.find((c) => c.display)?.display ?? fallbackText, category };
}

const iso = (ms: number) => new Date(ms).toISOString();

/** One Observation for a group, or the problems that prevent it. */
export function buildGroupObservation(g: ObservationGroup, ctx: BuildContext, problems: ExtractionProblem[]): Observation | undefined {
  const t = g.template;
  const before = problems.length;
  const autoVital = !t.category && hasVitalSignLoinc(t.codes) ? ('vital-signs' as const) : undefined;
  const code = resolved(t.codes, t.typeName, autoVital);
  let value: ObservationValue | undefined;
  if (t.value) {
    const vs = valuesOf(g, t.value.valueName);
    if (vs.length) value = buildValue(t, g, t.value, vs, problems);
  }
  const components: { code: ResolvedCode; value: ObservationValue }[] = [];
  for (const c of t.components) {
    const vs = valuesOf(g, c.value.valueName);
    if (!vs.length) continue;
    const cv = buildValue(t, g, c.value, vs, problems);
    if (cv) components.push({ code: resolved(c.codes, c.value.valueName), value: cv });
  }
  if (problems.length > before) return undefined;
  if (!value && components.length === 0) {
    const wanted = [t.value, ...t.components.map((c) => c.value)].filter((v): v is FhirValueTemplate => !!v).map((v) => `'${v.valueName}'`);
    const have = [...new Set(g.measurements.flatMap((m) => m.values.map((v) => `'${v.name}'`)))];
    problems.push({
      code: 'required',
      message: `${label(t)}: the measurement has values ${have.join(', ')}, but the template maps ${wanted.join(', ')}; nothing to record`,
      expression: g.measurements[0].at,
    });
    return undefined;
  }
  const device: DeviceIdentity = { system: ctx.deviceIdentifierSystem, value: g.deviceId };
  const patient: PatientIdentity | undefined = g.patientId ? { system: ctx.patientIdentifierSystem, value: g.patientId } : undefined;
  const effective =
    g.window && t.periodInterval !== 0 ? { start: iso(g.window.startMs), end: iso(g.window.endMs) } : g.measurements[0].time;
  // Identity: device + code + window (or time, or correlation id) + type, patient and encounter of the group.
  const sourceId = ['type', t.typeName, 'patient', g.patientId ?? '', 'encounter', g.encounterId ?? ''].join(':');
  const obs = buildObservation({ device, patient, effective, code, value, components, sourceId, extraCategories: t.category });
  if (t.periodInterval === CORRELATION_ID)
    obs.identifier = [observationIdentifier({ device, code, effective: `correlation:${g.correlationId ?? ''}`, sourceId })];
  if (g.encounterId) obs.encounter = { type: 'Encounter', identifier: { value: g.encounterId } };
  return obs;
}
