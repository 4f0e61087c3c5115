/**
 * ADT → FHIR Patient. A01/A04/A08/A28/A31 carry demographics: one Patient per message (identifiers from PID-3, the
 * chosen primary first, name from PID-5, birth date from PID-7, gender from PID-8); delivery writes it with a
 * conditional update on the first identifier. A40 (merge) is acknowledged and logged by the channel; it produces no
 * resources (merging patients in the EHR is not the gateway's decision).
 */
import type { HumanName, Patient } from 'fhir/r4';
import type { Reading, TranslationContext } from '../core/contract.js';
import { TranslationError } from '../core/contract.js';
import type { Hl7TranslateOptions } from './config.js';
import { get, type Hl7Message, segment } from './parse.js';
import { at, hl7Issue, identitySources, patientIdentifiers } from './translate-common.js';

export const ADT_DEMOGRAPHIC_EVENTS = ['A01', 'A04', 'A08', 'A28', 'A31'] as const;
export const ADT_EVENTS = [...ADT_DEMOGRAPHIC_EVENTS, 'A40'] as const;

const NAME_USE: Record<string, HumanName['use']> = { L: 'official', M: 'maiden', D: 'usual', N: 'nickname' };

/** PID-8 (table 0001) → FHIR administrative gender (v2-to-FHIR mapping). */
function gender(code: string | undefined): Patient['gender'] | undefined {
  switch ((code ?? '').toUpperCase()) {
    case 'M':
      return 'male';
    case 'F':
      return 'female';
    case 'O':
    case 'A':
    case 'N':
      return 'other';
    case 'U':
      return 'unknown';
    default:
      return undefined;
  }
}

export function translateAdt(msg: Hl7Message, ctx: TranslationContext, opts: Hl7TranslateOptions): Reading[] {
  const event = msg.header.triggerEvent;
  if (event === 'A40') return [];
  if (!(ADT_DEMOGRAPHIC_EVENTS as readonly string[]).includes(event)) {
    throw new TranslationError([hl7Issue('not-supported', `ADT^${event} is not supported`, 'MSH[1]-9.2')]);
  }
  const pid = segment(msg, 'PID');
  if (!pid) throw new TranslationError([hl7Issue('required', 'PID segment is missing: an ADT message needs the patient', 'PID')]);
  const ids = patientIdentifiers(pid, ctx, opts);
  if (!ids.length) throw new TranslationError([hl7Issue('required', 'PID-3 (patient identifier) is empty', at(msg, pid, 3))]);

  const patient: Patient = {
    resourceType: 'Patient',
    identifier: ids.map((i) => ({
      system: i.system,
      value: i.value,
      ...(i.type ? { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: i.type }] } } : {}),
    })),
  };
  // Only codes of table 0203 are known to v2-0203; a local type travels as text.
  for (const id of patient.identifier ?? []) {
    const code = id.type?.coding?.[0]?.code;
    if (code && !/^(MR|PI|PN|PT|AN|VN|SS|NI|NH|DL|PPN|BR|PRN|EN|U)$/.test(code)) id.type = { text: code };
  }
  const names: HumanName[] = [];
  (pid.fields[5] ?? []).forEach((_, r) => {
    const family = get(pid, 5, 1, 1, r);
    const given = [get(pid, 5, 2, 1, r), ...(get(pid, 5, 3, 1, r)?.split(' ') ?? [])].filter((x): x is string => !!x);
    if (!family && !given.length) return;
    const n: HumanName = {};
    const use = NAME_USE[(get(pid, 5, 7, 1, r) ?? '').toUpperCase()];
    if (use) n.use = use;
    if (family) n.family = family;
    if (given.length) n.given = given;
    const suffix = get(pid, 5, 4, 1, r);
    const prefix = get(pid, 5, 5, 1, r);
    if (suffix) n.suffix = [suffix];
    if (prefix) n.prefix = [prefix];
    names.push(n);
  });
  if (names.length) patient.name = names;
  const birth = get(pid, 7);
  if (birth) {
    const m = /^(\d{4})(\d{2})(\d{2})/.exec(birth);
    const d = m ? new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : undefined;
    if (!m || !d || d.getUTCMonth() !== Number(m[2]) - 1 || d.getUTCDate() !== Number(m[3])) {
      throw new TranslationError([hl7Issue('value', `PID-7 '${birth}' is not a date (YYYYMMDD)`, at(msg, pid, 7))]);
    }
    patient.birthDate = `${m[1]}-${m[2]}-${m[3]}`;
  }
  const g = gender(get(pid, 8));
  if (g) patient.gender = g;
  identitySources.set(patient, at(msg, pid, 3));
  // No `patient` (subject): there are no observations; delivery writes `patients` with a conditional update.
  return [{ devices: [], observations: [], patients: [patient] }];
}
