/**
 * Device data (IHE PCD-01) of one patient → Devices and Observations. The OBX segments of each order are placed in the
 * MDC containment tree (containment.ts). Each MDS becomes a Device (identifier from OBX-18, an EUI-64 under the
 * configured EUI-64 system; type = the MDS's own MDC code as sent; location = PV1-3). Each metric with a value becomes
 * an Observation coded with the MDC code and, where the gateway's verified table pairs it with one, the vital-signs
 * LOINC code; its time is its own OBX-14, else that of its channel, VMD or MDS row, else OBR-7. The systolic,
 * diastolic and mean values of one channel become one blood-pressure panel with components (fhir/bp-panel.ts).
 */
import type { CodeableConcept, Device, Observation } from 'fhir/r4';
import type { PatientIdentity, Reading } from '../../core/contract.js';
import { assembleBpPanel, BpCollector, type BpGroup, type BpPanel } from '../../fhir/bp-panel.js';
import { buildDevice, buildObservation, type DeviceIdentity, type ObservationValue } from '../../fhir/builders.js';
import { MDC_SYSTEM } from '../../fhir/terminology.js';
import { get, type Hl7Segment } from '../parse.js';
import { at, codedElement, hl7Issue, identitySources, observationSources } from '../translate-common.js';
import {
  type ContainmentTree,
  containmentTree,
  equipmentIdentity,
  mdsIdentity,
  pathKey,
  type Position,
  senderIdentity,
} from './containment.js';
import type { ObservationGroup, OruContext } from './context.js';
import { effectiveOf, type Metric, metricOf, type ObservationStatus, valueText, withAbsenceAndNotes } from './values.js';

/** Precedence when the components of one panel disagree: the least trustworthy status wins. */
const STATUS_ORDER: ObservationStatus[] = [
  'entered-in-error',
  'cancelled',
  'unknown',
  'registered',
  'preliminary',
  'corrected',
  'amended',
  'final',
];

/** What the translation of the OBX segments of one order (OBR) works with. */
interface OrderScope {
  oru: OruContext;
  tree: ContainmentTree;
  /** The device named by MSH-3: owner of OBX segments without a containment path, and base of made-up MDS ids. */
  sender: DeviceIdentity;
  /** PV1-3 as text (point of care, room, bed, facility): the location of every Device of the group. */
  location: string;
  /** The Devices of the group by "system|value", shared by its orders, in the order they were first needed. */
  devices: Map<string, Device>;
  /** OBR-7: the time of an OBX that has none of its own and none from its containers. */
  obrEffective: string | undefined;
  /** The identity of each MDS number of the order's tree (`deviceFor`), read once: every metric under it asks. */
  identities: Map<number | undefined, DeviceIdentity>;
}

/** A blood-pressure metric waiting for its panel, with the device it was measured by. */
type PanelMetric = Metric & { device: DeviceIdentity };

/** The Devices and Observations of one patient group's device data; problems go to `oru.issues`. */
export function translateDeviceGroup(oru: OruContext, group: ObservationGroup, patient: PatientIdentity | undefined): Reading {
  const devices = new Map<string, Device>();
  const observations: Observation[] = [];
  const location = locationOf(group.pv1);
  const sender = senderIdentity(oru.msg, oru.translation, oru.opts);

  group.orders.forEach((order, oi) => {
    const obrEffective = effectiveOf(oru, order.obr, 7);
    const tree = containmentTree(order.obxs);
    const scope: OrderScope = { oru, tree, sender, location, devices, obrEffective, identities: new Map() };
    const panels = new BpCollector<PanelMetric>();
    for (const { obx, pos } of scope.tree.nodes) {
      // A container, or no value:
      if (!valueText(obx, '^') && !(get(obx, 11)?.toUpperCase() === 'N' && pos?.level === 3)) continue;
      const device = deviceFor(scope, pos?.path[0]);
      const key = `OBR${oi + 1}|${get(obx, 4) ?? `OBX${get(obx, 1) ?? ''}`}`;
      const m = metricOf(oru, obx, effectiveFor(scope, obx, pos), key);
      if (!m) continue;
      const bp = m.code.bp;
      if (bp && bp.role !== 'panel' && m.value?.kind === 'quantity') {
        // One panel per channel (components may carry slightly different times; the panel takes the systolic's).
        const pk = pos ? `${pathKey(pos.path, 2)}|${bp.family}` : `|${bp.family}|${m.effective}`;
        if (panels.held(pk, bp.role)) {
          const why = `two ${bp.role} blood-pressure values for the same channel and time`;
          oru.issues.push(hl7Issue('business-rule', why, at(oru.msg, obx, 3)));
          continue; // the first value stays
        }
        panels.put(pk, bp.family, bp.role, { ...m, device });
        continue;
      }
      if (bp?.role === 'panel') {
        const why = 'a blood-pressure panel code with a value; send systolic/diastolic/mean as their own OBX';
        oru.issues.push(hl7Issue('code-invalid', why, at(oru.msg, obx, 3)));
        continue;
      }
      observations.push(metricObservation(oru, m, device, patient));
    }
    for (const [pk, bpGroup] of panels.groups()) {
      const panel = assembleBpPanel(bpGroup, (m) => ({ code: m.code, value: m.value as ObservationValue }));
      if (panel.complete) {
        observations.push(panelObservation(oru, bpGroup, panel, `OBR${oi + 1}|${pk}`, patient));
      } else if (panel.meanOnly) {
        // A mean pressure alone is an observation of its own (8478-0 is not a panel slice).
        observations.push(metricObservation(oru, panel.present, panel.present.device, patient));
      } else {
        const why = 'blood pressure needs systolic and diastolic values for the same channel and time';
        oru.issues.push(hl7Issue('business-rule', why, at(oru.msg, panel.present.obx, 3)));
      }
    }
  });
  return { devices: [...devices.values()], observations, patient };
}

/** PV1-3 (PL: point of care^room^bed^facility) as one line of text; empty without a PV1. */
function locationOf(pv1: Hl7Segment | undefined): string {
  return pv1 ? [get(pv1, 3, 1), get(pv1, 3, 2), get(pv1, 3, 3), get(pv1, 3, 4)].filter(Boolean).join(' ') : '';
}

/**
 * The device that measured an OBX under MDS number `mds` (undefined: the sender). Its Device resource is added to the
 * group on first use: typed with the MDC code of the MDS row (OBX-3) when that is numeric, located at PV1-3.
 */
function deviceFor(scope: OrderScope, mds: number | undefined): DeviceIdentity {
  const { oru, tree, devices } = scope;
  const known = scope.identities.get(mds);
  if (known) return known;
  const identity = mdsIdentity(tree, mds, scope.sender, oru.translation, oru.opts);
  scope.identities.set(mds, identity);
  const key = `${identity.system}|${identity.value}`;
  if (!devices.has(key)) {
    const mdsObx = mds !== undefined ? tree.containers.get(String(mds)) : undefined;
    let type: CodeableConcept | undefined;
    if (mdsObx) {
      const { codings, text } = codedElement(mdsObx, 3);
      const mdc = codings.find((k) => k.system === MDC_SYSTEM && k.code && /^\d+$/.test(k.code));
      if (mdc) {
        const coding = { system: MDC_SYSTEM, code: mdc.code, ...(mdc.display ? { display: mdc.display } : {}) };
        type = { coding: [coding], text: mdc.display ?? text };
      }
    }
    const device = buildDevice({ identity, type });
    if (scope.location) device.location = { display: scope.location };
    // Where the id was read: the OBX-18 that names it, else MSH-3 (the sender, or the base of an MDS instance id).
    const named = [mdsObx, ...tree.nodes.map((n) => n.obx)].find((o) => {
      const id = o && equipmentIdentity(o, oru.translation, oru.opts);
      return id?.system === identity.system && id.value === identity.value;
    });
    identitySources.set(device, named ? at(oru.msg, named, 18) : 'MSH[1]-3');
    devices.set(key, device);
  }
  return identity;
}

/**
 * The time of an OBX: its own OBX-14, else OBX-14 of the nearest container above it (channel, then VMD, then MDS),
 * else OBR-7. Each time read is checked, so a malformed container time is reported.
 */
function effectiveFor(scope: OrderScope, obx: Hl7Segment, pos: Position | undefined): string | undefined {
  const own = effectiveOf(scope.oru, obx, 14);
  if (own) return own;
  if (pos) {
    for (let level = 2; level >= 0; level--) {
      const parent = scope.tree.containers.get(pathKey(pos.path, level));
      const e = parent ? effectiveOf(scope.oru, parent, 14) : undefined;
      if (e) return e;
    }
  }
  return scope.obrEffective;
}

/** One metric as an Observation of its own. */
function metricObservation(oru: OruContext, m: Metric, device: DeviceIdentity, patient: PatientIdentity | undefined): Observation {
  const obs = buildObservation({
    device,
    patient,
    effective: m.effective,
    code: m.code,
    value: m.value,
    status: m.status,
    sourceId: `${oru.sourceBase}|${m.key}`,
    interpretation: m.interpretation,
    referenceRange: m.referenceRange,
  });
  observationSources.set(obs, { obx: at(oru.msg, m.obx) });
  return withAbsenceAndNotes(obs, m);
}

/**
 * A complete blood-pressure panel as one Observation: the systolic's time and device, the least trustworthy status of
 * its components, each component's interpretation and reference range, and their OBX-8 flags as notes naming the role.
 */
function panelObservation(
  oru: OruContext,
  group: BpGroup<PanelMetric>,
  panel: Extract<BpPanel<PanelMetric>, { complete: true }>,
  key: string,
  patient: PatientIdentity | undefined,
): Observation {
  const systolic = group.parts.systolic as PanelMetric; // a complete panel has one
  const statuses = panel.members.map(({ value }) => value.status);
  const status = STATUS_ORDER.find((s) => statuses.includes(s)) ?? 'unknown';
  const obs = buildObservation({
    device: systolic.device,
    patient,
    effective: systolic.effective,
    code: panel.code,
    components: panel.components,
    status,
    sourceId: `${oru.sourceBase}|${key}`,
  });
  panel.members.forEach(({ value: m }, i) => {
    const comp = obs.component![i];
    if (m.interpretation.length) comp.interpretation = m.interpretation;
    if (m.referenceRange?.length) comp.referenceRange = m.referenceRange;
  });
  const notes = panel.members.flatMap(({ role, value }) => value.notes.map((n) => ({ text: `${role}: ${n.text}` })));
  if (notes.length) obs.note = notes;
  observationSources.set(obs, { obx: at(oru.msg, systolic.obx), components: panel.members.map(({ value }) => at(oru.msg, value.obx)) });
  return obs;
}
