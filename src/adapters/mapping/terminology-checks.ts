/**
 * Terminology checks of a FHIR mapping, before any payload arrives: correct codes are a patient-safety property.
 *
 * The rules come from the R4 vital-signs profiles in profiles/ (loadProfiles: the LOINC code each profile fixes, its
 * units, its required components) and from the verified terminology table (src/fhir/terminology.ts). They explain,
 * in the vendor's terms, what the generic validator (src/fhir/validate.ts) would later refuse. Example: iomt-fhir's
 * sample templates code diastolic blood pressure as LOINC 8867-4, which is Heart rate.
 */
import type { Coding } from 'fhir/r4';
import { loadProfiles } from '../../fhir/profiles.js';
import { findMdcMetric, LOINC_SYSTEM, LOINC_VITALS, MDC_SYSTEM, toUcum } from '../../fhir/terminology.js';
import type { CompiledMapping } from './adapter.js';
import { type CodeValueTemplate, type FhirValueTemplate, FhirValueType, hasVitalSignLoinc } from './fhir-templates.js';
import { child, IssueSink, type MappingIssue } from './issues.js';

/** What a display text names, for the hint "diastolic blood pressure is LOINC 8462-4". */
const DISPLAY_HINTS: [RegExp, string][] = [
  [/diastolic/i, '8462-4'],
  [/systolic/i, '8480-6'],
  [/\bmean\b.*(pressure|bp)|\bmap\b/i, '8478-0'],
  [/blood pressure panel|\bbp panel/i, '85354-9'],
  [/heart rate|pulse rate|\bpulse\b/i, '8867-4'],
  [/resp(iratory|iration)? rate|breath/i, '9279-1'],
  [/temperature/i, '8310-5'],
  [/weight/i, '29463-7'],
  [/height|length/i, '8302-2'],
  [/\bbmi\b|body mass index/i, '39156-5'],
  [/head circumference/i, '9843-4'],
  [/oxygen|spo2|saturation/i, '2708-6'],
];

function hintFor(display: string): string | undefined {
  return DISPLAY_HINTS.find(([rx]) => rx.test(display))?.[1];
}

const norm = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, ' ')
    .trim();

function loincName(code: string): string {
  const v = LOINC_VITALS.get(code);
  return v ? `LOINC ${code} '${v.display}'` : `LOINC ${code}`;
}

/** Checks one coding list; returns the LOINC vital-sign codes it carries. */
function checkCodings(codes: Coding[], at: string, sink: IssueSink): string[] {
  const loinc: string[] = [];
  codes.forEach((c, i) => {
    const cp = child(at, i);
    if (!c.code) return;
    if (c.system === LOINC_SYSTEM) {
      const known = LOINC_VITALS.get(c.code);
      if (known) loinc.push(c.code);
      if (known && c.display) {
        const a = norm(c.display);
        const b = norm(known.display);
        const hint = hintFor(c.display);
        if (!a.includes(b) && !b.includes(a) && hint && hint !== c.code) {
          sink.error(
            cp,
            `LOINC ${c.code} is '${known.display}', but this coding's display says '${c.display}', which is ${loincName(hint)}: correct the code (a wrong code is a patient-safety defect)`,
          );
        }
      }
    } else if (c.system === MDC_SYSTEM) {
      const m = findMdcMetric(c.code);
      if (c.display && /^MDC_/i.test(c.display)) {
        const named = findMdcMetric(c.display);
        if (named && named.code !== m?.code)
          sink.error(cp, `MDC code ${c.code}${m ? ` is ${m.refId}` : ''}, but the display names ${c.display}, which is ${named.code}`);
      }
      const pair = m?.loinc?.code;
      const otherLoinc = codes.filter((k) => k.system === LOINC_SYSTEM && k.code && LOINC_VITALS.has(k.code)).map((k) => k.code as string);
      if (m && pair && otherLoinc.length && !otherLoinc.includes(pair)) {
        sink.error(
          cp,
          `MDC ${m.code} (${m.refId}) pairs with ${loincName(pair)}, but the codes carry ${otherLoinc.map(loincName).join(', ')}`,
        );
      }
      if (m && pair && otherLoinc.length === 0) {
        sink.warning(
          cp,
          `MDC ${m.code} (${m.refId}) is a vital sign: add the LOINC coding ${loincName(pair)} that the R4 vital-signs profile requires`,
        );
      }
    }
  });
  return loinc;
}

/** The UCUM code a value template will carry (what the adapter writes), if any. */
function ucumOf(v: FhirValueTemplate): string | undefined {
  if (v.code) return v.code;
  return v.unit ? toUcum(v.unit) : undefined;
}

function checkUnit(v: FhirValueTemplate, allowed: string[] | undefined, what: string, sink: IssueSink): void {
  if (!allowed?.length) return;
  const ucum = ucumOf(v);
  const unitAt = child(v.path, v.valueType === FhirValueType.quantity && v.code ? 'code' : 'unit');
  const req = allowed.map((u) => `'${u}'`).join(' or ');
  if (v.valueType === FhirValueType.quantity) {
    if (!ucum)
      sink.error(
        unitAt,
        `${what} requires the UCUM unit ${req}; the unit ${JSON.stringify(v.unit ?? '')} is not one the gateway knows (set "code" and "system": "http://unitsofmeasure.org")`,
      );
    else if (!allowed.includes(ucum))
      sink.error(
        unitAt,
        `${what} requires the unit ${req}; this template gives '${ucum}'${v.unit && v.unit !== ucum ? ` (from "${v.unit}")` : ''}, which the validator refuses`,
      );
    if (v.system && v.system !== 'http://unitsofmeasure.org')
      sink.error(child(v.path, 'system'), `${what} requires UCUM units (system http://unitsofmeasure.org)`);
  } else if (v.valueType === FhirValueType.sampledData && ucum && !allowed.includes(ucum)) {
    sink.warning(unitAt, `${what} expects the unit ${req}; this series is in '${ucum}'`);
  }
}

function checkTemplate(t: CodeValueTemplate, sink: IssueSink): void {
  const tp = `${t.path}.template`;
  const { byLoinc } = loadProfiles();
  const loinc = checkCodings(t.codes, child(tp, 'codes'), sink);
  const profiles = [...new Set(loinc)].map((c) => byLoinc.get(c)).filter((p) => p !== undefined && p.id !== 'vitalspanel');
  if (profiles.length > 1)
    sink.error(
      child(tp, 'codes'),
      `the codes carry LOINC codes of ${profiles.length} vital-sign profiles (${profiles.map((p) => `${p?.loinc} ${p?.id}`).join(', ')}); one Observation has one`,
    );
  const profile = profiles[0];
  const vital = hasVitalSignLoinc(t.codes);
  if (vital && t.category && !t.category.some((c) => c.coding?.some((k) => k.code === 'vital-signs'))) {
    sink.error(
      child(tp, 'category'),
      `${loincName(loinc[0])} is a vital sign: the category must include vital-signs (http://terminology.hl7.org/CodeSystem/observation-category)`,
    );
  }
  const compLoinc = t.components.map((c) => {
    checkCodings(c.codes, child(c.path, 'codes'), sink);
    return { c, codes: c.codes.filter((k) => k.system === LOINC_SYSTEM && k.code).map((k) => k.code as string) };
  });
  if (profile) {
    const what = `${loincName(profile.loinc ?? '')} (R4 profile ${profile.id})`;
    if (profile.valueProhibited && t.value)
      sink.error(child(tp, 'value'), `${what} is a panel: it has no value of its own; map the values as components`);
    if (!profile.valueProhibited && t.value) {
      if (t.value.valueType !== FhirValueType.quantity) {
        sink.warning(
          child(t.value.path, 'valueType'),
          `${what} allows only valueQuantity; a ${t.value.valueType} coded ${profile.loinc} does not conform to the R4 vital-signs profile`,
        );
      }
      checkUnit(t.value, profile.units, what, sink);
    }
    for (const rule of profile.components) {
      const comp = compLoinc.find((x) => x.codes.includes(rule.loinc));
      if (!comp) {
        const suspects = compLoinc
          .filter((x) => x.codes.some((code) => !profile.components.some((r) => r.loinc === code)))
          .map((x) => {
            const shown = x.c.codes.find((k) => k.system === LOINC_SYSTEM);
            return `${x.c.path}.codes is ${loincName(shown?.code ?? '')}${shown?.display ? ` (displayed as '${shown.display}')` : ''}`;
          });
        sink.error(
          child(tp, 'components'),
          `${what} requires component ${rule.slice} with ${loincName(rule.loinc)}; none of the components carries it${suspects.length ? `. ${suspects.join('; ')}` : ''}`,
        );
        continue;
      }
      if (comp.c.value.valueType !== FhirValueType.quantity) {
        sink.error(
          child(comp.c.value.path, 'valueType'),
          `component ${rule.slice} (${loincName(rule.loinc)}) of ${what} must be a Quantity; the profile refuses ${comp.c.value.valueType}`,
        );
      }
      checkUnit(comp.c.value, rule.units, `component ${rule.slice} (${loincName(rule.loinc)})`, sink);
    }
    if (profile.components.length) {
      for (const x of compLoinc) {
        for (const code of x.codes) {
          if (LOINC_VITALS.get(code)?.bp) continue;
          if (LOINC_VITALS.has(code))
            sink.error(
              child(x.c.path, 'codes'),
              `${loincName(code)} is not a blood-pressure component (systolic 8480-6, diastolic 8462-4, mean 8478-0)`,
            );
        }
      }
    }
  } else {
    // Not a vital-sign profile code: components that are vital-sign codes still need their units.
    for (const x of compLoinc) {
      for (const code of x.codes) {
        const p = byLoinc.get(code);
        if (p?.units) checkUnit(x.c.value, p.units, `${loincName(code)} (R4 profile ${p.id})`, sink);
      }
    }
  }
}

/** Terminology issues of a compiled mapping (file = label of the FHIR mapping). */
export function checkTerminology(mapping: CompiledMapping, fhirFile: string): MappingIssue[] {
  const sink = new IssueSink(fhirFile);
  for (const t of mapping.fhirTemplates) checkTemplate(t, sink);
  return sink.issues;
}
