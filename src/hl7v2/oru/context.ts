/**
 * The two shapes every step of the ORU^R01 translation passes around: the message being translated with what is
 * known about it (`OruContext`), and one patient's results as the message groups them (`ObservationGroup`). They live
 * apart from index.ts so that the group translators can use them without importing the entry point (no cycle).
 */
import type { OperationOutcomeIssue } from 'fhir/r4';
import type { TranslationContext } from '../../core/contract.js';
import type { Hl7TranslateOptions } from '../config.js';
import type { Hl7Message, Hl7Segment } from '../parse.js';

/**
 * Everything about one ORU message that the translation of each OBX needs, created once per message by `translateOru`.
 * Problems found anywhere are pushed to `issues`; the message is refused as a whole at the end if any were found, so
 * that the sender gets every problem in one ACK.
 */
export interface OruContext {
  msg: Hl7Message;
  /** The gateway's identifier systems for device and patient ids that carry none of their own. */
  translation: TranslationContext;
  /** The HL7 translation policy (OBX-11 'R' status, default time zone, assigning authorities, EUI-64 system). */
  opts: Hl7TranslateOptions;
  /** Problems found so far, with their location (`OBX[3]-5`); any issue refuses the message. */
  issues: OperationOutcomeIssue[];
  /** The UTC offset of MSH-7 (`+0100`), used for OBX-14 and OBR-7 times that carry none. */
  fallbackOffset?: string;
  /** MSH-3|MSH-4|MSH-10 (sender and control id): the start of every Observation's source id. */
  sourceBase: string;
  /**
   * Each HL7 time of the message already converted (`effectiveOf`), by its text: most OBX rows of a device report
   * carry the same OBX-14, and a metric without one reads its containers' again.
   */
  times: Map<string, string | undefined>;
}

/**
 * One ORDER_OBSERVATION group: an OBR (the order or the monitoring session; OBR-7 is the fallback observation time)
 * and the OBX segments that follow it. `obr` is absent for OBX segments sent before any OBR.
 */
export interface OrderObservation {
  obr?: Hl7Segment;
  obxs: Hl7Segment[];
}

/**
 * One PATIENT_RESULT group of an ORU^R01: the results of one patient. It starts at a PID (the patient; PID-3 gives the
 * subject) with an optional PV1 (the visit; PV1-3 is the bed, which becomes the Device location), followed by one or
 * more ORDER_OBSERVATION groups. A message without PID gives one group without `pid`, which is then refused.
 */
export interface ObservationGroup {
  pid?: Hl7Segment;
  pv1?: Hl7Segment;
  orders: OrderObservation[];
}
