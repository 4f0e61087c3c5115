/**
 * Pieces shared by the ORU and ADT translations: coded elements, patient identifiers, issue locations.
 * Issue expressions use the form `SEG[n]-field.component` (n = 1-based occurrence of the segment), which ack.ts turns
 * into an ERR location.
 */
import type { CodeableConcept, Coding, OperationOutcomeIssue } from 'fhir/r4';
import type { PatientIdentity, TranslationContext } from '../core/contract.js';
import { issue, type IssueCode } from '../core/errors.js';
import { LOINC_SYSTEM, MDC_SYSTEM, UCUM_SYSTEM } from '../fhir/terminology.js';
import type { Hl7TranslateOptions } from './config.js';
import { get, type Hl7Message, type Hl7Segment } from './parse.js';

/** HL7 table 0396 coding-system names → FHIR system URIs. Unknown (local) systems map to none. */
export function codingSystem(name: string | undefined): string | undefined {
  if (!name) return undefined;
  const n = name.trim().toUpperCase();
  switch (n) {
    case 'LN':
    case 'LOINC':
      return LOINC_SYSTEM;
    case 'SCT':
    case 'SNM':
    case 'SNOMED-CT':
      return 'http://snomed.info/sct';
    case 'MDC':
      return MDC_SYSTEM;
    case 'UCUM':
      return UCUM_SYSTEM;
    case 'I9':
    case 'I9C':
      return 'http://hl7.org/fhir/sid/icd-9-cm';
    case 'I10':
      return 'http://hl7.org/fhir/sid/icd-10';
    default: {
      const t = /^HL7(\d{4})$/.exec(n);
      return t ? `http://terminology.hl7.org/CodeSystem/v2-${t[1]}` : undefined;
    }
  }
}

/** A CWE/CE field (repetition r) to codings: the primary triplet (1-3), the alternate (4-6), and the text. */
export function codedElement(
  seg: Hl7Segment | undefined,
  f: number,
  r = 0,
): { codings: Coding[]; text?: string; systems: (string | undefined)[] } {
  const codings: Coding[] = [];
  const systems: (string | undefined)[] = [];
  for (const base of [1, 4]) {
    const code = get(seg, f, base, 1, r);
    const display = get(seg, f, base + 1, 1, r);
    const sysName = get(seg, f, base + 2, 1, r);
    if (!code && !display) continue;
    systems.push(sysName);
    const c: Coding = {};
    const system = codingSystem(sysName);
    if (system) c.system = system;
    if (code) c.code = code;
    if (display) c.display = display;
    codings.push(c);
  }
  const text = get(seg, f, 9, 1, r) ?? codings.find((c) => c.display)?.display ?? codings[0]?.code;
  return { codings, text, systems };
}

export function codeableConcept(seg: Hl7Segment | undefined, f: number, r = 0): CodeableConcept | undefined {
  const { codings, text } = codedElement(seg, f, r);
  if (!codings.length && !text) return undefined;
  const cc: CodeableConcept = {};
  if (codings.length) cc.coding = codings;
  if (text) cc.text = text;
  return cc;
}

/** The n-th (1-based) occurrence of this segment in the message, for issue locations. */
export function occurrence(msg: Pick<Hl7Message, 'segments'>, seg: Hl7Segment): number {
  let k = 0;
  for (const s of msg.segments) {
    if (s.name === seg.name) k++;
    if (s === seg) return k;
  }
  return 0;
}

export function at(msg: Pick<Hl7Message, 'segments'>, seg: Hl7Segment | undefined, field?: number, component?: number): string {
  if (!seg) return 'MSH[1]';
  const n = occurrence(msg, seg);
  return `${seg.name}[${n}]${field ? `-${field}${component ? `.${component}` : ''}` : ''}`;
}

export function hl7Issue(code: IssueCode, text: string, where: string): OperationOutcomeIssue {
  return issue(code, text, [where]);
}

/**
 * The patient's identifier from PID-3: the first repetition whose assigning authority has a configured system, else
 * the first of type MR, else the first. System: configured for the authority, else urn:oid:<oid> for an ISO
 * authority, else the default patient system.
 */
export function patientIdentity(
  pid: Hl7Segment | undefined,
  ctx: TranslationContext,
  opts: Hl7TranslateOptions,
): PatientIdentity | undefined {
  const first = patientIdentifiers(pid, ctx, opts)[0];
  return first ? { system: first.system, value: first.value } : undefined;
}

export function patientIdentifiers(
  pid: Hl7Segment | undefined,
  ctx: TranslationContext,
  opts: Hl7TranslateOptions,
): (PatientIdentity & { type?: string })[] {
  if (!pid) return [];
  const reps = pid.fields[3] ?? [];
  const out: (PatientIdentity & { type?: string; configured: boolean })[] = [];
  reps.forEach((_, r) => {
    const value = get(pid, 3, 1, 1, r);
    if (!value) return;
    const ns = get(pid, 3, 4, 1, r);
    const uid = get(pid, 3, 4, 2, r);
    const uidType = get(pid, 3, 4, 3, r);
    const type = get(pid, 3, 5, 1, r);
    const configured = (ns && opts.assigningAuthoritySystems.get(ns)) || (uid && opts.assigningAuthoritySystems.get(uid)) || undefined;
    const system =
      configured ?? (uid && uidType?.toUpperCase() === 'ISO' && /^\d+(\.\d+)+$/.test(uid) ? `urn:oid:${uid}` : ctx.patientIdentifierSystem);
    out.push({ system, value, type, configured: !!configured });
  });
  return out
    .map((x, i) => ({ x, i }))
    .sort((a, b) => rank(a.x) - rank(b.x) || a.i - b.i)
    .map(({ x }) => ({ system: x.system, value: x.value, type: x.type }));
}

/** The order of PID-3 identifiers: one with a configured authority first, then one of type MR, then the rest. */
function rank(x: { configured: boolean; type?: string }): number {
  return x.configured ? 0 : x.type?.toUpperCase() === 'MR' ? 1 : 2;
}

/** Sender identity for duplicate detection and source ids: MSH-3 and MSH-4 as sent. */
export function senderOf(msg: Pick<Hl7Message, 'header'>): string {
  return `${msg.header.sendingApplication}|${msg.header.sendingFacility}`;
}

export function sourceIdOf(msg: Pick<Hl7Message, 'header'>): string {
  return `${senderOf(msg)}|${msg.header.controlId}`;
}

/**
 * Where each Observation an HL7 message produced came from: its OBX ("OBX[3]"), and for a blood-pressure panel the
 * OBX of each component in component order. Filled during translation; read by the adapter's `locate` so that a
 * validation error is answered as ERR-2 "OBX[3]-6" rather than the gateway's "observation[0]".
 */
export const observationSources = new WeakMap<object, { obx: string; components?: string[] }>();

/**
 * Where the device and patient ids of a translation came from ("OBX[1]-18", "MSH[1]-3", "PID[1]-3"), keyed by the Device
 * resource, the reading's patient identity and the ADT Patient: read by the adapter's `locate` for id syntax errors.
 */
export const identitySources = new WeakMap<object, string>();

/** The OBX field an element of an Observation comes from (PCD-01): value 5, units 6, code 3, status 11, time 14. */
export function obxField(element: string): number | undefined {
  if (/value(Quantity|SampledData)?\.(code|unit|system)\b/.test(element) || /valueQuantity\.(code|unit|system)/.test(element)) return 6;
  if (/\.value/.test(element)) return 5;
  if (/^Observation\.(component\[\d+\]\.)?code\b/.test(element)) return 3;
  if (/\.status\b/.test(element)) return 11;
  if (/\.effective/.test(element)) return 14;
  return undefined;
}
