/**
 * ORU^R01 → FHIR. Two kinds:
 *
 * Device data (IHE PCD-01: an MDC-coded OBX-3, or an IHE PCD profile in MSH-21). OBX-4 holds the containment path
 * MDS.VMD.CHAN.METRIC. Each MDS becomes a Device (identifier from OBX-18, an EUI-64 under the configured EUI-64 system;
 * type = the MDS's own MDC code as sent); each metric with a value becomes an Observation coded with the MDC code and,
 * where the gateway's verified table pairs it with one, the vital-signs LOINC code. An MDC code the table does not know
 * travels with its MDC coding only, without a category (so it claims no vital-signs profile). NIBP systolic/diastolic/
 * mean of one channel and time become one blood-pressure panel with components.
 *
 * Other results (lab): each OBX with a value becomes an Observation coded as sent (LN → http://loinc.org), category
 * laboratory (vital-signs when the LOINC code is one of the R4 vital signs), without a device.
 *
 * Common mappings: OBX-2 NM/SN → valueQuantity, ST/TX/FT → valueString, CWE/CE/CNE/CF → valueCodeableConcept,
 * NA → valueSampledData; OBX-6 → UCUM (MDC unit codes via the verified unit table; a UCUM-flagged unit is trusted);
 * OBX-7 → referenceRange; OBX-8 → interpretation (table 0078 → v3 ObservationInterpretation; IHE PCD measurement
 * status flags go to a note, INV drops the value with dataAbsentReason 'error'); OBX-11 → status (table 0085, 'R' per
 * configuration); OBX-14 → effective (else the parent MDS/VMD/CHAN's OBX-14, else OBR-7); PID-3 → subject.
 */
import type { Annotation, CodeableConcept, Coding, Device, Observation, OperationOutcomeIssue, Quantity } from 'fhir/r4';
import type { PatientIdentity, Reading, TranslationContext } from '../core/contract.js';
import { TranslationError } from '../core/contract.js';
import {
  BP_COMPONENT_LOINC,
  bpPanelCode,
  buildDevice,
  buildObservation,
  type DeviceIdentity,
  type ObservationValue,
  quantity,
  type ResolvedCode,
  resolveCode,
  resolveMdc,
} from '../fhir/builders.js';
import { convertExact, findMdcMetric, LOINC_SYSTEM, MDC_SYSTEM, toUcum } from '../fhir/terminology.js';
import type { Hl7TranslateOptions } from './config.js';
import { get, getRaw, type Hl7Message, type Hl7Segment } from './parse.js';
import { hl7TsToFhir, tsOffset } from './time.js';
import { at, codeableConcept, codedElement, hl7Issue, patientIdentity, sourceIdOf } from './translate-common.js';

const V3_INTERPRETATION = 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation';
const DATA_ABSENT = 'http://terminology.hl7.org/CodeSystem/data-absent-reason';

/** Table 0078 codes that map one-to-one to v3 ObservationInterpretation (S12 ConceptMap), with R4 displays. */
const INTERPRETATION: Record<string, string | undefined> = {
  N: 'Normal', L: 'Low', LL: 'Critical low', H: 'High', HH: 'Critical high', LU: 'Significantly low', HU: 'Significantly high',
  A: 'Abnormal', AA: 'Critical abnormal', '<': 'Off scale low', '>': 'Off scale high', U: 'Significant change up',
  D: 'Significant change down', B: 'Better', W: 'Worse',
  I: undefined, IE: undefined, IND: undefined, E: undefined, DET: undefined, ND: undefined, NEG: undefined, POS: undefined,
  NR: undefined, RR: undefined, WR: undefined, R: undefined, S: undefined, SDD: undefined, 'SYN-R': undefined, 'SYN-S': undefined,
  NS: undefined, NCL: undefined, EX: undefined, EXP: undefined, UNE: undefined, CAR: undefined, MS: undefined, VS: undefined,
};
/** IHE PCD-01 measurement-status / missing-data flags in OBX-8 (not table 0078; their FHIR mapping is a draft). */
const PCD_FLAGS = new Set(['INV', 'QUES', 'NAV', 'CAL', 'TEST', 'DEMO', 'VAL', 'EARLY', 'BUSY', 'ALACT', 'ALINH', 'NI', 'OFF', 'UNAV']);

type Status = Observation['status'];

/** OBX-11 (table 0085) → Observation.status (S12 ConceptMap); R per configuration; unmatched codes → unknown. */
export function mapStatus(code: string | undefined, statusR: Status): Status {
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

interface Unit {
  /** UCUM code, when known. */
  ucum?: string;
  /** MDC unit code the UCUM table does not know (travels as an MDC-system Quantity). */
  mdc?: { code: string; refId?: string };
  /** Display text as sent. */
  text?: string;
}

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

/** All of OBX-5 as text: repetitions joined by newlines, components by the component separator as sent. */
function valueText(obx: Hl7Segment, compSep: string): string | undefined {
  const reps = obx.fields[5] ?? [];
  const t = reps
    .map((rep) => rep.map((comp) => comp.map((s) => s ?? '').join('&').replace(/&+$/, '')).join(compSep).replace(new RegExp(`\\${compSep}+$`), ''))
    .join('\n')
    .trim();
  return t || undefined;
}

interface ObxValue {
  value?: ObservationValue;
  /** The number, for numeric values (blood-pressure components). */
  numeric?: number;
}

function obxValue(msg: Hl7Message, obx: Hl7Segment, unit: Unit | undefined, target: string | undefined, issues: OperationOutcomeIssue[]): ObxValue {
  const type = (get(obx, 2) ?? '').toUpperCase();
  const where = at(msg, obx, 5);
  const text = valueText(obx, msg.header.delimiters.component);
  if (text === undefined) return {};
  switch (type) {
    case 'NM': {
      const t = get(obx, 5) ?? '';
      if (!NUMBER.test(t)) {
        issues.push(hl7Issue('value', `OBX-5 '${t}' is not a number (OBX-2 is NM)`, where));
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
        issues.push(hl7Issue('value', `OBX-5 holds '${bad}', not a number (OBX-2 is NA)`, where));
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
  const num = '([+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+))';
  const range = new RegExp(`^${num}\\s*(?:-|to)\\s*${num}$`, 'i').exec(text);
  const q = (v: string) => {
    const x = toQuantity(Number(v), unit);
    delete x.comparator;
    return x;
  };
  if (range) return [{ low: q(range[1]), high: q(range[2]), text }];
  const lt = new RegExp(`^<=?\\s*${num}$`).exec(text);
  if (lt) return [{ high: q(lt[1]), text }];
  const gt = new RegExp(`^>=?\\s*${num}$`).exec(text);
  if (gt) return [{ low: q(gt[1]), text }];
  return [{ text }];
}

/** Resolves OBX-3: an MDC code through the verified table (numeric code wins over the reference id); LOINC vital signs. */
function resolveObxCode(msg: Hl7Message, obx: Hl7Segment, issues: OperationOutcomeIssue[]): ResolvedCode | undefined {
  const { codings, text, systems } = codedElement(obx, 3);
  const where = at(msg, obx, 3);
  if (!codings.length) {
    issues.push(hl7Issue('required', 'OBX-3 (observation identifier) is empty', where));
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
      issues.push(hl7Issue('code-invalid', `OBX-3 is contradictory: MDC code ${numeric} is ${byCode.refId}, but the text says ${refId} (${byRef.code})`, where));
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

/** OBX-4 "1.16.1.1" → [1,16,1,1]; level 0 = MDS … 3 = metric. */
function containment(obx: Hl7Segment): { path: number[]; level: number } | undefined {
  const s = get(obx, 4);
  if (!s || !/^\d+(\.\d+){0,3}$/.test(s)) return undefined;
  const path = s.split('.').map(Number);
  while (path.length < 4) path.push(0);
  let level = 0;
  for (let i = 0; i < 4; i++) if (path[i] !== 0) level = i;
  return { path, level };
}

const HEX16 = /^[0-9A-Fa-f]{16}$/;
function eui64(v: string): string {
  return v.toUpperCase().match(/.{2}/g)!.join('-');
}

/** OBX-18 (repetition 0) → device identity, EUI-64 first. */
function equipmentIdentity(obx: Hl7Segment | undefined, ctx: TranslationContext, opts: Hl7TranslateOptions): DeviceIdentity | undefined {
  if (!obx) return undefined;
  const entity = get(obx, 18, 1);
  const ns = get(obx, 18, 2);
  const uid = get(obx, 18, 3);
  const uidType = get(obx, 18, 4)?.toUpperCase();
  if (entity && HEX16.test(entity) && (ns?.toUpperCase() === 'EUI-64' || uidType === 'EUI-64')) return { system: opts.eui64System, value: eui64(entity) };
  if (!entity && uid && HEX16.test(uid) && uidType === 'EUI-64') return { system: opts.eui64System, value: eui64(uid) };
  if (!entity) return undefined;
  if (uid && uidType === 'ISO' && /^\d+(\.\d+)+$/.test(uid)) return { system: `urn:oid:${uid}`, value: entity };
  return { system: ctx.deviceIdentifierSystem, value: entity };
}

function isDeviceMessage(msg: Hl7Message): boolean {
  if (msg.header.profiles.some((p) => /PCD|IHE_PCD/i.test(p))) return true;
  return msg.segments.some((s) => s.name === 'OBX' && [get(s, 3, 3), get(s, 3, 6)].some((x) => x?.toUpperCase() === 'MDC'));
}

interface Group {
  pid?: Hl7Segment;
  pv1?: Hl7Segment;
  orders: { obr?: Hl7Segment; obxs: Hl7Segment[] }[];
}

/** Splits the message at each PID (PATIENT_RESULT groups) and each OBR (ORDER_OBSERVATION groups). */
function groups(msg: Hl7Message): Group[] {
  const out: Group[] = [];
  let g: Group | undefined;
  for (const s of msg.segments) {
    if (s.name === 'PID') {
      g = { pid: s, orders: [] };
      out.push(g);
      continue;
    }
    if (!g) {
      if (s.name === 'MSH' || s.name === 'SFT') continue;
      g = { orders: [] };
      out.push(g);
    }
    if (s.name === 'PV1') g.pv1 = s;
    else if (s.name === 'OBR') g.orders.push({ obr: s, obxs: [] });
    else if (s.name === 'OBX') {
      if (!g.orders.length) g.orders.push({ obxs: [] });
      g.orders[g.orders.length - 1].obxs.push(s);
    }
    // NTE, ORC, SPM, PD1, PV2, Z-segments…: not mapped, safely ignored.
  }
  return out;
}

interface Ctx {
  msg: Hl7Message;
  ctx: TranslationContext;
  opts: Hl7TranslateOptions;
  issues: OperationOutcomeIssue[];
  fallbackOffset?: string;
  sourceBase: string;
}

function effectiveOf(c: Ctx, seg: Hl7Segment | undefined, f: number): string | undefined {
  const raw = get(seg, f, 1);
  if (!raw) return undefined;
  const v = hl7TsToFhir(raw, { fallbackOffset: c.fallbackOffset, defaultZone: c.opts.defaultTimezone });
  if (!v) c.issues.push(hl7Issue('value', `'${raw}' is not an HL7 date/time`, at(c.msg, seg, f)));
  return v;
}

interface Metric {
  obx: Hl7Segment;
  code: ResolvedCode;
  value?: ObservationValue;
  numeric?: number;
  status: Status;
  effective: string;
  interpretation: CodeableConcept[];
  notes: Annotation[];
  referenceRange?: Observation['referenceRange'];
  absent?: CodeableConcept;
  key: string;
}

function metricOf(c: Ctx, obx: Hl7Segment, effective: string | undefined, key: string): Metric | undefined {
  const before = c.issues.length;
  const code = resolveObxCode(c.msg, obx, c.issues);
  const unit = unitOf(obx);
  const { value, numeric } = obxValue(c.msg, obx, unit, code?.ucum, c.issues);
  if (!code || c.issues.length > before) return undefined;
  if (!effective) {
    c.issues.push(hl7Issue('required', 'no observation time: OBX-14 and OBR-7 are empty', at(c.msg, obx, 14)));
    return undefined;
  }
  const statusCode = get(obx, 11);
  const status = mapStatus(statusCode, c.opts.statusR);
  const interp = interpretation(obx);
  const notes: Annotation[] = [];
  if (interp.flags.length) notes.push({ text: `Measurement status flags (OBX-8): ${interp.flags.join(', ')}` });
  let absent: CodeableConcept | undefined;
  let v = value;
  if (interp.flags.includes('INV')) {
    // The device marked the value invalid: never deliver it as a result.
    absent = { coding: [{ system: DATA_ABSENT, code: 'error', display: 'Error' }], text: 'Invalid measurement (OBX-8 INV)' };
    v = undefined;
  } else if (!v && statusCode?.toUpperCase() === 'N') absent = { coding: [{ system: DATA_ABSENT, code: 'not-asked', display: 'Not Asked' }] };
  return { obx, code, value: v, numeric: v ? numeric : undefined, status, effective, interpretation: interp.concepts, notes, referenceRange: referenceRange(obx, unit), absent, key };
}

function finish(obs: Observation, m: Pick<Metric, 'interpretation' | 'notes' | 'absent'>): Observation {
  if (m.absent) obs.dataAbsentReason = m.absent;
  if (m.notes.length) obs.note = m.notes;
  return obs;
}

/** Precedence when the components of one panel disagree: the least trustworthy status wins. */
const STATUS_ORDER: Status[] = ['entered-in-error', 'cancelled', 'unknown', 'registered', 'preliminary', 'corrected', 'amended', 'final'];

function translateDeviceGroup(c: Ctx, g: Group, patient: PatientIdentity | undefined): Reading {
  const devices = new Map<string, Device>();
  const observations: Observation[] = [];
  const location = g.pv1 ? [get(g.pv1, 3, 1), get(g.pv1, 3, 2), get(g.pv1, 3, 3), get(g.pv1, 3, 4)].filter(Boolean).join(' ') : '';
  const fallbackDevice: DeviceIdentity = (() => {
    const app = c.msg.header;
    // MSH-3 may name the sending device itself by EUI-64 (HD: namespace^universal id^EUI-64).
    const parts = app.sendingApplication.split(app.delimiters.component);
    if (parts[2]?.toUpperCase() === 'EUI-64' && HEX16.test(parts[1] ?? '')) return { system: c.opts.eui64System, value: eui64(parts[1]) };
    return { system: c.ctx.deviceIdentifierSystem, value: parts[0] || 'unknown-sender' };
  })();

  g.orders.forEach((order, oi) => {
    const obrEffective = effectiveOf(c, order.obr, 7);
    const nodes = order.obxs.map((obx) => ({ obx, pos: containment(obx) }));
    const pathKey = (p: number[], level: number) => p.slice(0, level + 1).join('.');
    const containers = new Map<string, Hl7Segment>();
    for (const n of nodes) if (n.pos && n.pos.level < 3 && !valueText(n.obx, '^')) containers.set(pathKey(n.pos.path, n.pos.level), n.obx);
    const identityOfMds = (mds: number | undefined): DeviceIdentity => {
      if (mds === undefined) return fallbackDevice;
      const own = equipmentIdentity(containers.get(String(mds)), c.ctx, c.opts);
      if (own) return own;
      for (const n of nodes) if (n.pos?.path[0] === mds) {
        const id = equipmentIdentity(n.obx, c.ctx, c.opts);
        if (id) return id;
      }
      return { system: fallbackDevice.system, value: `${fallbackDevice.value}.mds${mds}` };
    };
    const deviceFor = (mds: number | undefined): DeviceIdentity => {
      const identity = identityOfMds(mds);
      const key = `${identity.system}|${identity.value}`;
      if (!devices.has(key)) {
        const mdsObx = mds !== undefined ? containers.get(String(mds)) : undefined;
        let type: CodeableConcept | undefined;
        if (mdsObx) {
          const { codings, text } = codedElement(mdsObx, 3);
          const mdc = codings.find((k) => k.system === MDC_SYSTEM && k.code && /^\d+$/.test(k.code));
          if (mdc) type = { coding: [{ system: MDC_SYSTEM, code: mdc.code, ...(mdc.display ? { display: mdc.display } : {}) }], text: mdc.display ?? text };
        }
        const device = buildDevice({ identity, type });
        if (location) device.location = { display: location };
        devices.set(key, device);
      }
      return identity;
    };
    const effectiveFor = (obx: Hl7Segment, pos: { path: number[] } | undefined): string | undefined => {
      const own = effectiveOf(c, obx, 14);
      if (own) return own;
      if (pos) {
        for (let level = 2; level >= 0; level--) {
          const parent = containers.get(pathKey(pos.path, level));
          const e = parent ? effectiveOf(c, parent, 14) : undefined;
          if (e) return e;
        }
      }
      return obrEffective;
    };

    const panels = new Map<string, { device: DeviceIdentity; family: string; effective: string; parts: Partial<Record<'systolic' | 'diastolic' | 'mean', Metric>> }>();
    for (const { obx, pos } of nodes) {
      if (!valueText(obx, '^') && !(get(obx, 11)?.toUpperCase() === 'N' && pos?.level === 3)) continue; // a container, or no value
      const device = deviceFor(pos?.path[0]);
      const key = `OBR${oi + 1}|${get(obx, 4) ?? `OBX${get(obx, 1) ?? ''}`}`;
      const m = metricOf(c, obx, effectiveFor(obx, pos), key);
      if (!m) continue;
      const bp = m.code.bp;
      if (bp && bp.role !== 'panel' && m.value?.kind === 'quantity') {
        // One panel per channel (components may carry slightly different times; the panel takes the systolic's).
        const pk = pos ? `${pathKey(pos.path, 2)}|${bp.family}` : `|${bp.family}|${m.effective}`;
        const p = panels.get(pk) ?? { device, family: bp.family, effective: m.effective, parts: {} };
        if (p.parts[bp.role]) {
          c.issues.push(hl7Issue('business-rule', `two ${bp.role} blood-pressure values for the same channel and time`, at(c.msg, obx, 3)));
          continue;
        }
        p.parts[bp.role] = m;
        panels.set(pk, p);
        continue;
      }
      if (bp?.role === 'panel') {
        c.issues.push(hl7Issue('code-invalid', 'a blood-pressure panel code with a value; send systolic/diastolic/mean as their own OBX', at(c.msg, obx, 3)));
        continue;
      }
      const obs = buildObservation({
        device,
        patient,
        effective: m.effective,
        code: m.code,
        value: m.value,
        status: m.status,
        sourceId: `${c.sourceBase}|${m.key}`,
        interpretation: m.interpretation,
        referenceRange: m.referenceRange,
      });
      observations.push(finish(obs, m));
    }
    for (const [pk, p] of panels) {
      if (!p.parts.systolic && !p.parts.diastolic && p.parts.mean) {
        // A mean pressure alone is an observation of its own (8478-0 is not a panel slice).
        const m = p.parts.mean;
        const obs = buildObservation({ device: p.device, patient, effective: m.effective, code: m.code, value: m.value, status: m.status, sourceId: `${c.sourceBase}|${m.key}`, interpretation: m.interpretation, referenceRange: m.referenceRange });
        observations.push(finish(obs, m));
        continue;
      }
      if (!p.parts.systolic || !p.parts.diastolic) {
        const have = (p.parts.systolic ?? p.parts.diastolic ?? p.parts.mean) as Metric;
        c.issues.push(hl7Issue('business-rule', 'blood pressure needs systolic and diastolic values for the same channel and time', at(c.msg, have.obx, 3)));
        continue;
      }
      const roles = (['systolic', 'diastolic', 'mean'] as const).filter((r) => p.parts[r]);
      const components = roles.map((role) => {
        const m = p.parts[role] as Metric;
        const loinc = BP_COMPONENT_LOINC[role];
        const codings = m.code.codings.some((k) => k.system === LOINC_SYSTEM) ? m.code.codings : [{ system: LOINC_SYSTEM, code: loinc.code, display: loinc.display }, ...m.code.codings];
        return { code: { ...m.code, codings }, value: m.value as ObservationValue };
      });
      const statuses = roles.map((r) => (p.parts[r] as Metric).status);
      const status = STATUS_ORDER.find((s) => statuses.includes(s)) ?? 'unknown';
      const effective = (p.parts.systolic as Metric).effective;
      const obs = buildObservation({ device: p.device, patient, effective, code: bpPanelCode(p.family), components, status, sourceId: `${c.sourceBase}|OBR${oi + 1}|${pk}` });
      roles.forEach((r, i) => {
        const m = p.parts[r] as Metric;
        const comp = obs.component![i];
        if (m.interpretation.length) comp.interpretation = m.interpretation;
        if (m.referenceRange?.length) comp.referenceRange = m.referenceRange;
      });
      const notes = roles.flatMap((r) => (p.parts[r] as Metric).notes.map((n) => ({ text: `${r}: ${n.text}` })));
      if (notes.length) obs.note = notes;
      observations.push(obs);
    }
  });
  return { devices: [...devices.values()], observations, patient };
}

function translateLabGroup(c: Ctx, g: Group, patient: PatientIdentity | undefined): Reading {
  const observations: Observation[] = [];
  const device: DeviceIdentity = { system: c.ctx.deviceIdentifierSystem, value: c.msg.header.sendingApplication || 'unknown-sender' };
  g.orders.forEach((order, oi) => {
    const obrEffective = effectiveOf(c, order.obr, 7);
    for (const obx of order.obxs) {
      if (!valueText(obx, '^')) continue;
      const m = metricOf(c, obx, effectiveOf(c, obx, 14) ?? obrEffective, `OBR${oi + 1}|OBX${get(obx, 1) ?? observations.length + 1}`);
      if (!m) continue;
      const code = m.code.category ? m.code : { ...m.code, category: 'laboratory' as const };
      const obs = buildObservation({
        device,
        patient,
        effective: m.effective,
        code,
        value: m.value,
        status: m.status,
        sourceId: `${c.sourceBase}|${m.key}`,
        interpretation: m.interpretation,
        referenceRange: m.referenceRange,
      });
      delete obs.device; // the lab instrument is not known; the identifier still includes the sender
      observations.push(finish(obs, m));
    }
  });
  return { devices: [], observations, patient };
}

export function translateOru(msg: Hl7Message, ctx: TranslationContext, opts: Hl7TranslateOptions): Reading[] {
  const issues: OperationOutcomeIssue[] = [];
  const c: Ctx = { msg, ctx, opts, issues, fallbackOffset: tsOffset(msg.header.dateTime), sourceBase: sourceIdOf(msg) };
  const device = isDeviceMessage(msg);
  const out: Reading[] = [];
  const gs = groups(msg);
  if (!gs.some((g) => g.orders.some((o) => o.obxs.length))) issues.push(hl7Issue('required', 'the ORU message holds no OBX segment', 'OBX'));
  for (const g of gs) {
    if (!g.pid) issues.push(hl7Issue('required', 'PID segment is missing: results need a patient', 'PID'));
    const patient = patientIdentity(g.pid, ctx, opts);
    if (g.pid && !patient) issues.push(hl7Issue('required', 'PID-3 (patient identifier) is empty', at(msg, g.pid, 3)));
    const t = device ? translateDeviceGroup(c, g, patient) : translateLabGroup(c, g, patient);
    out.push(t);
  }
  if (issues.length) throw new TranslationError(issues);
  return out;
}

