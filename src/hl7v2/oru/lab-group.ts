/**
 * Results other than device data (lab) of one patient → Observations. Each OBX with a value becomes an Observation
 * coded as sent (LN → http://loinc.org), category laboratory (vital-signs when the LOINC code is one of the R4 vital
 * signs), timed by OBX-14 else OBR-7, without a device: the lab instrument is not known.
 */
import type { Observation } from 'fhir/r4';
import type { PatientIdentity, Reading } from '../../core/contract.js';
import { buildObservation, type DeviceIdentity } from '../../fhir/builders.js';
import { get } from '../parse.js';
import type { ObservationGroup, OruContext } from './context.js';
import { effectiveOf, metricOf, valueText, withAbsenceAndNotes } from './values.js';

/** The Observations of one patient group's lab results; problems go to `oru.issues`. */
export function translateLabGroup(oru: OruContext, group: ObservationGroup, patient: PatientIdentity | undefined): Reading {
  const observations: Observation[] = [];
  // The sender (MSH-3) stands in for the device in the Observation identifier; the Observation itself gets no device.
  const sender = oru.msg.header.sendingApplication || 'unknown-sender';
  const device: DeviceIdentity = { system: oru.translation.deviceIdentifierSystem, value: sender };
  group.orders.forEach((order, oi) => {
    const obrEffective = effectiveOf(oru, order.obr, 7);
    for (const obx of order.obxs) {
      if (!valueText(obx, '^')) continue;
      const key = `OBR${oi + 1}|OBX${get(obx, 1) ?? observations.length + 1}`;
      const m = metricOf(oru, obx, effectiveOf(oru, obx, 14) ?? obrEffective, key);
      if (!m) continue;
      const code = m.code.category ? m.code : { ...m.code, category: 'laboratory' as const };
      const obs = buildObservation({
        device,
        patient,
        effective: m.effective,
        code,
        value: m.value,
        status: m.status,
        sourceId: `${oru.sourceBase}|${m.key}`,
        interpretation: m.interpretation,
        referenceRange: m.referenceRange,
      });
      delete obs.device; // the lab instrument is not known; the identifier still includes the sender
      observations.push(withAbsenceAndNotes(obs, m));
    }
  });
  return { devices: [], observations, patient };
}
