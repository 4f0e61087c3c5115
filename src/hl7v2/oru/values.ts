/**
 * What one OBX segment says, read field by field: OBX-3 the code, OBX-5 the value (typed by OBX-2), OBX-6 the unit,
 * OBX-7 the reference range, OBX-8 the interpretation flags, OBX-11 the result status, OBX-14 the time. `metricOf`
 * puts them together into one `Metric`, which the device and lab translations turn into Observations.
 *
 * Mappings: OBX-2 NM/SN → valueQuantity, ST/TX/FT → valueString, CWE/CE/CNE/CF → valueCodeableConcept,
 * NA → valueSampledData; OBX-6 → UCUM (MDC unit codes via the verified unit table; a UCUM-flagged unit is trusted);
 * OBX-7 → referenceRange; OBX-8 → interpretation (table 0078 → v3 ObservationInterpretation; IHE PCD measurement
 * status flags go to a note, INV drops the value with dataAbsentReason 'error'); OBX-11 → status (table 0085, 'R' per
 * configuration).
 */
import type { Annotation, CodeableConcept, Coding, Observation, OperationOutcomeIssue, Quantity } from 'fhir/r4';
import { type ObservationValue, quantity, type ResolvedCode, resolveCode, resolveMdc } from '../../fhir/builders.js';
import { convertExact, findMdcMetric, LOINC_SYSTEM, MDC_SYSTEM, toUcum } from '../../fhir/terminology.js';
import { get, getRaw, type Hl7Message, type Hl7Segment } from '../parse.js';
import { hl7TsToFhir } from '../time.js';
import { at, codeableConcept, codedElement, hl7Issue } from '../translate-common.js';
import type { OruContext } from './context.js';

const V3_INTERPRETATION = 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';
const DATA_ABSENT = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';

/** Table 0078 codes that map one-to-one to v3 ObservationInterpretation (S12 ConceptMap), with R4 displays. */
const INTERPRETATION: Record<string, string | undefined> = {
  N: 'Normal',
  L: 'Low',
  LL: 'Critical low',
  H: 'High',
  HH: 'Critical high',
  LU: 'Significantly low',
  HU: 'Significantly high',
  A: 'Abnormal',
  AA: 'Critical abnormal',
  '<': 'Off scale low',
  '>': 'Off scale high',
  U: 'Significant change up',
  D: 'Significant change down',
  B: 'Better',
  W: 'Worse',
  I: undefined,
  IE: undefined,
  IND: undefined,
  E: undefined,
  DET: undefined,
  ND: undefined,
  NEG: undefined,
  POS: undefined,
  NR: undefined,
  RR: undefined,
  WR: undefined,
  R: undefined,
  S: undefined,
  SDD: undefined,
  'SYN-R': undefined,
  'SYN-S': undefined,
  NS: undefined,
  NCL: undefined,
  EX: undefined,
  EXP: undefined,
  UNE: undefined,
  CAR: undefined,
  MS: undefined,
  VS: undefined,
};
/** IHE PCD-01 measurement-status / missing-data flags in OBX-8 (not table 0078; their FHIR mapping is a draft). */
const PCD_FLAGS = new Set(['INV', 'QUES', 'NAV', 'CAL', 'TEST', 'DEMO', 'VAL', 'EARLY', 'BUSY', 'ALACT', 'ALINH', 'NI', 'OFF', 'UNAV']);

export type ObservationStatus = Observation['status'];

/** OBX-11 (table 0085) → Observation.status (S12 ConceptMap); R per configuration; unmatched codes → unknown. */
export function mapStatus(code: string | undefined, statusR: ObservationStatus): ObservationStatus {
  switch ((code ?? '').trim().toUpperCase()) {
    case 'A':
      return 'amended';
    case 'C':
      return 'corrected';
    case 'D':
    case 'W':
      return 'entered-in-error';
    case 'F':
      return 'final';
    case 'P':
      return 'preliminary';
    case 'X':
      return 'cancelled';
    case 'R':
      return statusR;
    default:
      return 'unknown';
  }
}

/** The unit of OBX-6, as far as the gateway understands it. */
interface Unit {
  /** UCUM code, when known. */
  ucum?: string;
  /** MDC unit code the UCUM table does not know (travels as an MDC-system Quantity). */
  mdc?: { code: string; refId?: string };
  /** Display text as sent. */
  text?: string;
}

/** OBX-6 (code^text^system): UCUM when the sender says so or the unit table knows it, else an MDC code, else text. */
function unitOf(obx: Hl7Segment): Unit | undefined {
  const c1 = get(obx, 6, 1);
  const c2 = get(obx, 6, 2);
  const sys = get(obx, 6, 3)?.toUpperCase();
  if (!c1 && !c2) return undefined;
  if (sys === 'UCUM' && c1) return { ucum: toUcum(c1) ?? c1, text: c2 ?? c1 };
  const ucum = (c1 && toUcum(c1)) || (c2 && toUcum(c2)) || undefined;
  if (ucum) return { ucum, text: ucum };
  if (sys === 'MDC' && c1 && /^\d+$/.test(c1)) return { mdc: { code: c1, refId: c2 }, text: c2 ?? c1 };
  return { text: c2 ?? c1 };
}

/** A number with its unit; converted to `target` (the UCUM unit the code's profile expects) when exactly possible. */
function toQuantity(value: number, unit: Unit | undefined, target?: string): Quantity {
  if (unit?.ucum) {
    if (target && unit.ucum !== target) {
      const converted = convertExact(value, unit.ucum, target);
      if (converted !== undefined) return quantity(converted, target);
    }
    return quantity(value, unit.ucum, unit.text ?? unit.ucum);
  }
  if (unit?.mdc) return { value, unit: unit.mdc.refId ?? unit.mdc.code, system: MDC_SYSTEM, code: unit.mdc.code };
  if (unit?.text) return { value, unit: unit.text };
  return { value };
}

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/**
 * All of OBX-5 as text: repetitions joined by newlines, components by the component separator as sent (trailing empty
 * components dropped), sub-components by '&' (trailing empty ones dropped).
 */
export function valueText(obx: Hl7Segment, compSep: string): string | undefined {
  const reps = obx.fields[5];
  if (!reps?.length) return undefined;
  let t = '';
  for (let r = 0; r < reps.length; r++) {
    let rep = '';
    const comps = reps[r];
    for (let c = 0; c < comps.length; c++) {
      const subs = comps[c];
      // Most components are one sub-component: no join.
      const comp = subs.length === 1 ? (subs[0] ?? '') : subs.map((x) => x ?? '').join('&');
      rep += (c ? compSep : '') + trimEndChar(comp, '&');
    }
    t += (r ? '\n' : '') + trimEndChar(rep, compSep);
  }
  t = t.trim();
  return t || undefined;
}

/** `s` without the run of `ch` at its end. */
function trimEndChar(s: string, ch: string): string {
  let end = s.length;
  while (end > 0 && s[end - 1] === ch) end--;
  return end === s.length ? s : s.slice(0, end);
}

interface ObxValue {
  value?: ObservationValue;
  /** The number, for numeric values (blood-pressure components). */
  numeric?: number;
}

/** OBX-5 typed by OBX-2; a value that does not fit its type is an issue and gives no value. */
function obxValue(
  msg: Hl7Message,
  obx: Hl7Segment,
  unit: Unit | undefined,
  target: string | undefined,
  issues: OperationOutcomeIssue[],
): ObxValue {
  const type = (get(obx, 2) ?? '').toUpperCase();
  const text = valueText(obx, msg.header.delimiters.component);
  if (text === undefined) return {};
  switch (type) {
    case 'NM': {
      const t = get(obx, 5) ?? '';
      if (!NUMBER.test(t)) {
        issues.push(hl7Issue('value', `OBX-5 '${t}' is not a number (OBX-2 is NM)`, at(msg, obx, 5)));
        return {};
      }
      const n = Number(t);
      return { value: { kind: 'quantity', quantity: toQuantity(n, unit, target) }, numeric: n };
    }
    case 'SN': {
      const cmp = get(obx, 5, 1);
      const n1 = get(obx, 5, 2);
      const sep = get(obx, 5, 3);
      if (n1 && NUMBER.test(n1) && !sep && (!cmp || ['<', '>', '<=', '>=', '='].includes(cmp))) {
        const q = toQuantity(Number(n1), unit, target);
        if (cmp && cmp !== '=') q.comparator = cmp as Quantity['comparator'];
        return { value: { kind: 'quantity', quantity: q }, numeric: cmp && cmp !== '=' ? undefined : Number(n1) };
      }
      return { value: { kind: 'string', value: [cmp, n1, sep, get(obx, 5, 4)].filter(Boolean).join('') } };
    }
    case 'CWE':
    case 'CE':
    case 'CNE':
    case 'CF': {
      const cc = codeableConcept(obx, 5);
      return cc ? { value: { kind: 'codeableConcept', value: cc } } : {};
    }
    case 'NA': {
      const comps = (obx.fields[5]?.[0] ?? []).map((c) => (c[0] ?? '').trim());
      const bad = comps.find((c) => c !== '' && !NUMBER.test(c));
      if (bad !== undefined) {
        issues.push(hl7Issue('value', `OBX-5 holds '${bad}', not a number (OBX-2 is NA)`, at(msg, obx, 5)));
        return {};
      }
      const origin = toQuantity(0, unit);
      // PCD-01 does not carry the sample period in the NA value itself; FHIR requires one, so 0 says "not given".
      return {
        value: {
          kind: 'sampledData',
          value: { origin, period: 0, dimensions: 1, data: comps.map((c) => (c === '' ? 'E' : c)).join(' ') },
        },
      };
    }
    default:
      // ST, TX, FT and anything else textual.
      return { value: { kind: 'string', value: text } };
  }
}

/** OBX-8 (repeating): table 0078 codes become interpretations; anything else (PCD status flags) is kept as a flag. */
function interpretation(obx: Hl7Segment): { concepts: CodeableConcept[]; flags: string[] } {
  const concepts: CodeableConcept[] = [];
  const flags: string[] = [];
  (obx.fields[8] ?? []).forEach((_, r) => {
    // Trim first: published ConceptMaps carry a no-break space after '<' and '>'.
    const code = (getRaw(obx, 8, 1, 1, r) ?? '').replace(/[\s\u00a0]+/g, '').toUpperCase();
    if (!code) return;
    if (code in INTERPRETATION) {
      const coding: Coding = { system: V3_INTERPRETATION, code };
      const display = INTERPRETATION[code];
      if (display) coding.display = display;
      concepts.push({ coding: [coding], text: display ?? code });
    } else if (PCD_FLAGS.has(code)) flags.push(code);
    else flags.push(code);
  });
  return { concepts, flags };
}

/** OBX-7: "low-high", "low to high", "<x", ">x"; anything else as text. */
function referenceRange(obx: Hl7Segment, unit: Unit | undefined): Observation['referenceRange'] {
  const text = get(obx, 7);
  if (!text) return undefined;
  const range = RANGE.exec(text);
  if (range) return [{ low: rangeQuantity(range[1], unit), high: rangeQuantity(range[2], unit), text }];
  const lt = RANGE_LT.exec(text);
  if (lt) return [{ high: rangeQuantity(lt[1], unit), text }];
  const gt = RANGE_GT.exec(text);
  if (gt) return [{ low: rangeQuantity(gt[1], unit), text }];
  return [{ text }];
}

const RANGE_NUMBER = '([+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+))';
const RANGE = new RegExp(`^${RANGE_NUMBER}\\s*(?:-|to)\\s*${RANGE_NUMBER}$`, 'i');
const RANGE_LT = new RegExp(`^<=?\\s*${RANGE_NUMBER}$`);
const RANGE_GT = new RegExp(`^>=?\\s*${RANGE_NUMBER}$`);

function rangeQuantity(v: string, unit: Unit | undefined): Quantity {
  const x = toQuantity(Number(v), unit);
  delete x.comparator;
  return x;
}

/** Resolves OBX-3: an MDC code through the verified table (numeric code wins over the reference id); LOINC vital signs. */
function resolveObxCode(msg: Hl7Message, obx: Hl7Segment, issues: OperationOutcomeIssue[]): ResolvedCode | undefined {
  const { codings, text, systems } = codedElement(obx, 3);
  if (!codings.length) {
    issues.push(hl7Issue('required', 'OBX-3 (observation identifier) is empty', at(msg, obx, 3)));
    return undefined;
  }
  const mdcIdx = systems.findIndex((s) => s?.toUpperCase() === 'MDC');
  if (mdcIdx >= 0 || /^MDC_/i.test(codings[0].display ?? codings[0].code ?? '')) {
    const c = codings[Math.max(mdcIdx, 0)];
    const numeric = c.code && /^\d+$/.test(c.code) ? c.code : undefined;
    const refId = [c.display, c.code].find((x) => x && /^MDC_/i.test(x));
    const byCode = numeric ? findMdcMetric(numeric) : undefined;
    const byRef = refId ? findMdcMetric(refId) : undefined;
    if (byCode && byRef && byCode.code !== byRef.code) {
      const why = `OBX-3 is contradictory: MDC code ${numeric} is ${byCode.refId}, but the text says ${refId} (${byRef.code})`;
      issues.push(hl7Issue('code-invalid', why, at(msg, obx, 3)));
      return undefined;
    }
    const m = numeric ? byCode : byRef;
    if (m) return resolveMdc(m);
    // Unknown to the verified table: the MDC coding as sent, no LOINC, no category (no vital-signs claim).
    const coding: Coding = { system: MDC_SYSTEM, code: numeric ?? refId ?? c.code };
    if (numeric && refId && /^MDC_/i.test(refId) && !byRef) coding.display = refId;
    return { codings: [coding], text: refId ?? text ?? coding.code };
  }
  const loinc = codings.find((c) => c.system === LOINC_SYSTEM && c.code);
  if (loinc?.code) {
    const r = resolveCode({ system: LOINC_SYSTEM, code: loinc.code });
    if (r) return { ...r, codings: [...r.codings, ...codings.filter((c) => c !== loinc)], text: text ?? r.text };
  }
  return { codings, text };
}

/**
 * The time in field `f` of a segment (OBX-14, OBR-7) as a FHIR dateTime; a time without an offset takes MSH-7's, else
 * the configured zone. Undefined when the field is empty; an issue when it is not an HL7 date/time.
 */
export function effectiveOf(oru: OruContext, seg: Hl7Segment | undefined, f: number): string | undefined {
  const raw = get(seg, f, 1);
  if (!raw) return undefined;
  let v = oru.times.get(raw);
  if (v === undefined && !oru.times.has(raw)) {
    v = hl7TsToFhir(raw, { fallbackOffset: oru.fallbackOffset, defaultZone: oru.opts.defaultTimezone });
    oru.times.set(raw, v);
  }
  if (!v) oru.issues.push(hl7Issue('value', `'${raw}' is not an HL7 date/time`, at(oru.msg, seg, f)));
  return v;
}

/** One OBX read in full: what an Observation (or a blood-pressure component) is built from. */
export interface Metric {
  obx: Hl7Segment;
  code: ResolvedCode;
  value?: ObservationValue;
  /** The number, for a plain numeric value (no comparator). */
  numeric?: number;
  status: ObservationStatus;
  effective: string;
  interpretation: CodeableConcept[];
  /** Measurement status flags of OBX-8 that are not interpretations, as a note. */
  notes: Annotation[];
  referenceRange?: Observation['referenceRange'];
  /** Why there is no value: the device flagged it invalid (INV), or OBX-11 is N (not asked). */
  absent?: CodeableConcept;
  /** Where the OBX sits in the message (OBR number and OBX-4 or OBX-1): part of the Observation's source id. */
  key: string;
}

/**
 * Reads one OBX into a Metric. Undefined, with the problems in `oru.issues`, when its code or value cannot be read or
 * there is no time (`effective`: OBX-14, else the caller's fallback).
 */
export function metricOf(oru: OruContext, obx: Hl7Segment, effective: string | undefined, key: string): Metric | undefined {
  const before = oru.issues.length;
  const code = resolveObxCode(oru.msg, obx, oru.issues);
  const unit = unitOf(obx);
  const { value, numeric } = obxValue(oru.msg, obx, unit, code?.ucum, oru.issues);
  if (!code || oru.issues.length > before) return undefined;
  if (!effective) {
    oru.issues.push(hl7Issue('required', 'no observation time: OBX-14 and OBR-7 are empty', at(oru.msg, obx, 14)));
    return undefined;
  }
  const statusCode = get(obx, 11);
  const status = mapStatus(statusCode, oru.opts.statusR);
  const interp = interpretation(obx);
  const notes: Annotation[] = [];
  if (interp.flags.length) notes.push({ text: `Measurement status flags (OBX-8): ${interp.flags.join(', ')}` });
  let absent: CodeableConcept | undefined;
  let v = value;
  if (interp.flags.includes('INV')) {
    // The device marked the value invalid: never deliver it as a result.
    absent = { coding: [{ system: DATA_ABSENT, code: 'error', display: 'Error' }], text: 'Invalid measurement (OBX-8 INV)' };
    v = undefined;
  } else if (!v && statusCode?.toUpperCase() === 'N') {
    absent = { coding: [{ system: DATA_ABSENT, code: 'not-asked', display: 'Not Asked' }] };
  }
  return {
    obx,
    code,
    value: v,
    numeric: v ? numeric : undefined,
    status,
    effective,
    interpretation: interp.concepts,
    notes,
    referenceRange: referenceRange(obx, unit),
    absent,
    key,
  };
}

/**
 * Adds what `buildObservation` does not take to an Observation built from a metric: dataAbsentReason when the value is
 * missing or invalid, and the OBX-8 status flags as notes. (The review's `withNotes`; the absence reason is named too.)
 */
export function withAbsenceAndNotes(obs: Observation, m: Pick<Metric, 'notes' | 'absent'>): Observation {
  if (m.absent) obs.dataAbsentReason = m.absent;
  if (m.notes.length) obs.note = m.notes;
  return obs;
}
