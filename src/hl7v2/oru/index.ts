/**
 * ORU^R01 (observation results) → FHIR: the entry point. The message is split into one group per patient; each group
 * gives one Reading. There are two kinds of message:
 *
 * - Device data (IHE PCD-01: an IHE PCD profile in MSH-21, or an MDC-coded OBX-3): Devices and vital-sign
 *   Observations, with blood-pressure panels (device-group.ts, containment.ts).
 * - Other results (lab): Observations coded as sent, without a device (lab-group.ts).
 *
 * Each OBX is read in values.ts. PID-3 gives the subject (translate-common.ts). Every problem found anywhere is
 * collected, and the message is refused as a whole with all of them (TranslationError), never half translated.
 */
import type { OperationOutcomeIssue } from 'fhir/r4';
import type { Reading, TranslationContext } from '../../core/contract.js';
import { TranslationError } from '../../core/contract.js';
import type { Hl7TranslateOptions } from '../config.js';
import { get, type Hl7Message } from '../parse.js';
import { tsOffset } from '../time.js';
import { at, hl7Issue, identitySources, patientIdentity, sourceIdOf } from '../translate-common.js';
import type { ObservationGroup, OruContext } from './context.js';
import { translateDeviceGroup } from './device-group.js';
import { translateLabGroup } from './lab-group.js';

/** Device data: a message that declares an IHE PCD profile (MSH-21), or any OBX coded in MDC (OBX-3.3 or OBX-3.6). */
function isDeviceMessage(msg: Hl7Message): boolean {
  if (msg.header.profiles.some((p) => /PCD|IHE_PCD/i.test(p))) return true;
  return msg.segments.some((s) => s.name === 'OBX' && [get(s, 3, 3), get(s, 3, 6)].some((x) => x?.toUpperCase() === 'MDC'));
}

/**
 * Splits the message at each PID (PATIENT_RESULT groups) and each OBR (ORDER_OBSERVATION groups). OBX segments before
 * any OBR form an order of their own; segments before the first PID, a group without a patient.
 */
function groups(msg: Hl7Message): ObservationGroup[] {
  const out: ObservationGroup[] = [];
  let g: ObservationGroup | undefined;
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

/** One Reading per patient group; throws a TranslationError with every problem found when there is any. */
export function translateOru(msg: Hl7Message, translation: TranslationContext, opts: Hl7TranslateOptions): Reading[] {
  const issues: OperationOutcomeIssue[] = [];
  const fallbackOffset = tsOffset(msg.header.dateTime);
  const oru: OruContext = { msg, translation, opts, issues, fallbackOffset, sourceBase: sourceIdOf(msg), times: new Map() };
  const device = isDeviceMessage(msg);
  const out: Reading[] = [];
  const gs = groups(msg);
  if (!gs.some((g) => g.orders.some((o) => o.obxs.length))) {
    issues.push(hl7Issue('required', 'the ORU message holds no OBX segment', 'OBX'));
  }
  for (const g of gs) {
    if (!g.pid) issues.push(hl7Issue('required', 'PID segment is missing: results need a patient', 'PID'));
    const patient = patientIdentity(g.pid, translation, opts);
    if (g.pid && !patient) issues.push(hl7Issue('required', 'PID-3 (patient identifier) is empty', at(msg, g.pid, 3)));
    if (g.pid && patient) identitySources.set(patient, at(msg, g.pid, 3));
    const t = device ? translateDeviceGroup(oru, g, patient) : translateLabGroup(oru, g, patient);
    out.push(t);
  }
  if (issues.length) throw new TranslationError(issues);
  return out;
}
