/**
 * The FHIR R4 vital-signs profiles in profiles/, read once at start-up and turned into the rules the validator checks:
 * which LOINC code each profile fixes, which UCUM units its value may carry, and which components it requires.
 * The rules come from the StructureDefinitions themselves (fixedCode, required bindings), not from a hand-kept list.
 */
import { readFileSync, readdirSync } from 'node:fs';
import type { Bundle, ElementDefinition, StructureDefinition, ValueSet } from 'fhir/r4';
import { LOINC_SYSTEM } from './terminology.js';

export const PROFILES_DIR = new URL('../../profiles/', import.meta.url);

export interface ComponentRule {
  slice: string;
  loinc: string;
  units: string[];
}

export interface VitalProfileRule {
  id: string;
  url: string;
  /** The LOINC code the profile fixes in Observation.code (undefined for the base profile). */
  loinc?: string;
  /** Allowed UCUM codes for valueQuantity; undefined when the profile does not constrain the unit. */
  units?: string[];
  /** Observation.value[x] prohibited (max 0), as for the blood-pressure panel. */
  valueProhibited: boolean;
  /** Required component slices (min ≥ 1). */
  components: ComponentRule[];
  /** Allowed UCUM codes for any component value (the base profile's required binding). */
  componentUnits?: string[];
  structureDefinition: StructureDefinition;
}

export interface ProfileSet {
  base: VitalProfileRule;
  byLoinc: ReadonlyMap<string, VitalProfileRule>;
  all: VitalProfileRule[];
}

function expand(vs: ValueSet | undefined): string[] | undefined {
  if (!vs?.compose?.include) return undefined;
  return vs.compose.include.flatMap((inc) => (inc.concept ?? []).map((c) => c.code));
}

function ruleFrom(sd: StructureDefinition, valueSets: Map<string, ValueSet>): VitalProfileRule {
  const els = sd.snapshot?.element ?? [];
  const byId = (id: string) => els.find((e) => e.id === id);
  const unitsAt = (prefix: string): string[] | undefined => {
    const codeEl = byId(`${prefix}.code`);
    if (codeEl?.fixedCode) return [codeEl.fixedCode];
    return expandBinding(codeEl, valueSets) ?? expandBinding(byId(prefix), valueSets);
  };
  const loincEl = els.find((e) => /^Observation\.code\.coding:[^.]+\.code$/.test(e.id ?? '') && e.fixedCode);
  const loincSystem = els.find((e) => /^Observation\.code\.coding:[^.]+\.system$/.test(e.id ?? ''))?.fixedUri;
  const valueEl = byId('Observation.value[x]');
  const valueQty = els.find((e) => /^Observation\.value(\[x\]:valueQuantity|Quantity)$/.test(e.id ?? ''));
  const components: ComponentRule[] = [];
  for (const el of els) {
    const m = /^Observation\.component:([^.]+)$/.exec(el.id ?? '');
    if (!m || (el.min ?? 0) < 1) continue;
    const slice = m[1];
    const code = byId(`Observation.component:${slice}.code.coding:${codingSlice(els, slice)}.code`)?.fixedCode;
    if (code) components.push({ slice, loinc: code, units: unitsAt(`Observation.component:${slice}.value[x]`) ?? [] });
  }
  return {
    id: sd.id ?? '',
    url: sd.url,
    loinc: loincSystem === LOINC_SYSTEM ? loincEl?.fixedCode : undefined,
    units: valueQty ? unitsAt(valueQty.id ?? '') : undefined,
    valueProhibited: valueEl?.max === '0' || valueQty?.max === '0',
    components,
    componentUnits: unitsAt('Observation.component.value[x]'),
    structureDefinition: sd,
  };
}

function expandBinding(el: ElementDefinition | undefined, valueSets: Map<string, ValueSet>): string[] | undefined {
  const url = el?.binding?.strength === 'required' ? el.binding.valueSet?.split('|')[0] : undefined;
  return url ? expand(valueSets.get(url)) : undefined;
}

function codingSlice(els: ElementDefinition[], componentSlice: string): string {
  const prefix = `Observation.component:${componentSlice}.code.coding:`;
  const el = els.find((e) => e.id?.startsWith(prefix));
  return el?.id?.slice(prefix.length).split('.')[0] ?? '';
}

let cached: ProfileSet | undefined;

/** Loads profiles/ once per process. */
export function loadProfiles(dir: URL = PROFILES_DIR): ProfileSet {
  if (cached) return cached;
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  const valueSets = new Map<string, ValueSet>();
  const sds: StructureDefinition[] = [];
  for (const f of files) {
    const json = JSON.parse(readFileSync(new URL(f, dir), 'utf8')) as StructureDefinition | Bundle;
    if (json.resourceType === 'Bundle') {
      for (const e of json.entry ?? []) {
        const r = e.resource as ValueSet | undefined;
        if (r?.resourceType === 'ValueSet') valueSets.set(r.url ?? '', r);
      }
    } else if (json.resourceType === 'StructureDefinition') {
      sds.push(json);
    }
  }
  const all = sds.map((sd) => ruleFrom(sd, valueSets));
  const base = all.find((r) => r.url === 'http://hl7.org/fhir/StructureDefinition/vitalsigns');
  if (!base) throw new Error('profiles/: the base vitalsigns StructureDefinition is missing');
  const byLoinc = new Map(all.filter((r) => r.loinc).map((r) => [r.loinc as string, r]));
  cached = { base, byLoinc, all };
  return cached;
}
