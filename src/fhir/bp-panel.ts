/**
 * The blood-pressure panel rule, in one place: it is a clinical coding rule, and every adapter that builds panels (the
 * `measurements` JSON adapter, the HL7v2 ORU translation) must apply it the same way.
 *
 * Systolic, diastolic and mean values of one family (MDC NONINV, BLD, ART, ART_ABP, or plain LOINC) that belong
 * together become one panel Observation coded with the family's panel code (`bpPanelCode`), with one component per
 * value in the order systolic, diastolic, mean. A panel needs both systolic and diastolic; mean is optional. Each
 * component carries a LOINC coding: when the value's own codings hold none, the LOINC code of its role (8480-6,
 * 8462-4, 8478-0) is put in front; codings that hold one are kept as they are.
 *
 * What stays with the adapter: what "belong together" means (one JSON reading; one HL7 channel), how a duplicate or an
 * incomplete panel is reported, and the panel's time, status and identifier.
 */
import { BP_COMPONENT_LOINC, bpPanelCode, type ObservationValue, type ResolvedCode } from './builders.js';
import { LOINC_SYSTEM } from './terminology.js';

/** The place of a value in a blood-pressure panel (the `bp.role` of a resolved code, other than 'panel'). */
export type BpRole = 'systolic' | 'diastolic' | 'mean';

/** The order of the components in a panel. */
const ROLES: readonly BpRole[] = ['systolic', 'diastolic', 'mean'];

/** The values collected for one panel: the family (`bp.family` of their codes) and at most one value per role. */
export interface BpGroup<T> {
  family: string;
  parts: Partial<Record<BpRole, T>>;
}

/**
 * Collects blood-pressure values into panels. The key is the adapter's idea of "one panel"; it should include the
 * family. Panels come out in the order their first value came in.
 */
export class BpCollector<T> {
  private readonly groupsByKey = new Map<string, BpGroup<T>>();

  /** The value the panel `key` already holds for `role`, if any: the adapter decides what a duplicate means. */
  held(key: string, role: BpRole): T | undefined {
    return this.groupsByKey.get(key)?.parts[role];
  }

  /** Puts a value into the panel `key` (opened on first use), replacing any value it held for the role. */
  put(key: string, family: string, role: BpRole, value: T): void {
    const group = this.groupsByKey.get(key) ?? { family, parts: {} };
    group.parts[role] = value;
    this.groupsByKey.set(key, group);
  }

  /** The panels as [key, group], in the order they were opened. */
  groups(): IterableIterator<[string, BpGroup<T>]> {
    return this.groupsByKey.entries();
  }
}

/** One component as the FHIR builders take it. */
export interface BpComponent {
  code: ResolvedCode;
  value: ObservationValue;
}

/**
 * What a group of values makes. Complete: the panel's code and components, and the collected value behind each
 * component (same order), for adapters that copy more onto the components. Incomplete (systolic or diastolic
 * missing): `present` is the value to point the refusal at (systolic, else diastolic, else mean), and `meanOnly` says
 * that the group holds nothing but a mean value.
 */
export type BpPanel<T> =
  | { complete: true; code: ResolvedCode; components: BpComponent[]; members: { role: BpRole; value: T }[] }
  | { complete: false; meanOnly: boolean; present: T };

/** Assembles one panel from its group. Pure: `componentOf` gives the code and value of one collected value. */
export function assembleBpPanel<T>(group: BpGroup<T>, componentOf: (value: T) => BpComponent): BpPanel<T> {
  const { systolic, diastolic, mean } = group.parts;
  if (!systolic || !diastolic) {
    // A group is opened by its first value, so at least one role is filled.
    return { complete: false, meanOnly: !systolic && !diastolic, present: (systolic ?? diastolic ?? mean) as T };
  }
  const members = ROLES.flatMap((role) => {
    const value = group.parts[role];
    return value ? [{ role, value }] : [];
  });
  const components = members.map(({ role, value }) => withComponentLoinc(role, componentOf(value)));
  return { complete: true, code: bpPanelCode(group.family), components, members };
}

/** The component with the LOINC code of its role in front of its codings, unless they already hold a LOINC coding. */
function withComponentLoinc(role: BpRole, component: BpComponent): BpComponent {
  const { code, value } = component;
  const loinc = BP_COMPONENT_LOINC[role];
  const codings = code.codings.some((k) => k.system === LOINC_SYSTEM)
    ? code.codings
    : [{ system: LOINC_SYSTEM, code: loinc.code, display: loinc.display }, ...code.codings];
  return { code: { ...code, codings }, value };
}
