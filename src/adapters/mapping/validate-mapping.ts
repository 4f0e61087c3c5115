/**
 * Validation of a mapping pair, reporting every problem with its file and JSON path (not just the first), e.g.
 *   devicecontent.json $.template[2].template.deviceIdExpression: required
 *
 * Three layers: structure (both template files, cross-checked: every device type has a FHIR template, every mapped
 * value name is extracted), terminology (terminology-checks.ts: codes and units against the R4 vital-signs profiles),
 * and samples: the mapping translates sample payloads and every produced resource goes through the gateway's
 * validator (src/fhir/validate.ts), each finding labelled with the template that produced the resource.
 */
import type { Observation, Resource } from 'fhir/r4';
import { CORE_KEYS } from '../../config/index.js';
import { validate } from '../../fhir/validate.js';
import type { Reading, TranslationContext } from '../../core/contract.js';
import { TranslationError } from '../../core/contract.js';
import {
  type BoundedMapping,
  type CompiledMapping,
  compileMapping,
  DEVICE_MAPPING_FILE,
  FHIR_MAPPING_FILE,
  type MappingRun,
  runMapping,
  runMappingBounded,
} from './adapter.js';
import type { MappingIssue } from './issues.js';
import { checkTerminology } from './terminology-checks.js';

export interface ValidateMappingOptions {
  /** Folder label prefixed to the file names in messages, e.g. "mappings/acme-oximeter". */
  file?: string;
  /** File names (default devicecontent.json and fhirmapping.json). */
  deviceFile?: string;
  fhirFile?: string;
}

function labels(opts: ValidateMappingOptions): { deviceFile: string; fhirFile: string } {
  const join = (name: string) => (opts.file ? `${opts.file.replace(/\/+$/, '')}/${name}` : name);
  return { deviceFile: join(opts.deviceFile ?? DEVICE_MAPPING_FILE), fhirFile: join(opts.fhirFile ?? FHIR_MAPPING_FILE) };
}

/** Every structural and terminology issue (errors and warnings) of a mapping pair. */
export function validateMapping(deviceMapping: unknown, fhirMapping: unknown, opts: ValidateMappingOptions = {}): MappingIssue[] {
  const files = labels(opts);
  const { mapping, issues } = compileMapping(deviceMapping, fhirMapping, files);
  return mapping ? [...issues, ...checkTerminology(mapping, files.fhirFile)] : issues;
}

const coreDefault = (env: string): string => CORE_KEYS.find((k) => k.env === env)?.default ?? `urn:iomt-gateway:${env.toLowerCase()}`;

/** Identifier systems used for dry runs (the gateway's defaults). */
export const DRY_RUN_CONTEXT: TranslationContext = {
  deviceIdentifierSystem: coreDefault('DEVICE_IDENTIFIER_SYSTEM'),
  patientIdentifierSystem: coreDefault('PATIENT_IDENTIFIER_SYSTEM'),
};

export interface SamplePayload {
  /** Label, e.g. samples/spot-check.json */
  file: string;
  body: unknown;
  attributes?: Record<string, string>;
}

export interface SampleResult {
  file: string;
  translations?: Reading[];
  /** Set when the mapping refused the sample. */
  error?: TranslationError;
  issues: MappingIssue[];
}

/** A fixed receive time for dry runs: translations must not depend on the clock. */
export const DRY_RUN_RECEIVED_AT = '2000-01-01T00:00:00Z';

/**
 * Translates each sample with the mapping and validates every produced resource. A sample the mapping refuses is an
 * error of that sample (with the TranslationError's diagnostics); a resource the validator refuses is an error with
 * the template that produced it.
 */
export function checkSamples(
  mapping: CompiledMapping,
  samples: readonly SamplePayload[],
  opts: ValidateMappingOptions & { ctx?: TranslationContext; vendor?: string } = {},
): SampleResult[] {
  const ctx = opts.ctx ?? DRY_RUN_CONTEXT;
  return samples.map((s) => {
    try {
      return sampleResult(s, runMapping(mapping, sampleMessage(s), ctx, opts.vendor), opts);
    } catch (e) {
      return sampleRefused(s, e);
    }
  });
}

/**
 * checkSamples for samples that come with the mapping from a vendor (the registration API): each sample is a message,
 * evaluated like one at ingest (off the event loop, within the time budget per message; see runMappingBounded).
 */
export async function checkSamplesBounded(
  adapterId: string,
  mapping: BoundedMapping,
  samples: readonly SamplePayload[],
  opts: ValidateMappingOptions & { ctx?: TranslationContext; vendor?: string } = {},
): Promise<SampleResult[]> {
  const ctx = opts.ctx ?? DRY_RUN_CONTEXT;
  const out: SampleResult[] = [];
  for (const s of samples) {
    try {
      out.push(sampleResult(s, await runMappingBounded(adapterId, mapping, sampleMessage(s), ctx, opts.vendor), opts));
    } catch (e) {
      out.push(sampleRefused(s, e));
    }
  }
  return out;
}

const sampleMessage = (s: SamplePayload) => ({ body: s.body, channel: 'http', receivedAt: DRY_RUN_RECEIVED_AT, attributes: s.attributes });

function sampleRefused(s: SamplePayload, e: unknown): SampleResult {
  if (!(e instanceof TranslationError)) throw e;
  const issues: MappingIssue[] = e.outcome.issue.map((i) => ({
    file: s.file,
    path: i.expression?.[0] ?? '$',
    message: i.diagnostics ?? i.code,
    severity: 'error',
  }));
  return { file: s.file, error: e, issues };
}

function sampleResult(s: SamplePayload, run: MappingRun, opts: ValidateMappingOptions): SampleResult {
  const { fhirFile } = labels(opts);
  const issues: MappingIssue[] = [];
  run.translations.forEach((tr, ti) => {
    const resources: Resource[] = [...tr.devices, ...tr.observations];
    resources.forEach((r) => {
      const origin = r.resourceType === 'Observation' ? run.origins.get(r as Observation) : undefined;
      const who = origin ? `Observation from ${fhirFile} ${origin.path} (typeName '${origin.typeName}')` : r.resourceType;
      const idx =
        r.resourceType === 'Observation'
          ? `observations[${tr.observations.indexOf(r as Observation)}]`
          : `devices[${tr.devices.indexOf(r as never)}]`;
      // A reading without a patient gets the device's assigned patient at ingest (MedTech's lookup mode): its
      // missing subject is the warning below, not an error (the rule of $translate).
      for (const i of validate(r, undefined, { subjectLater: !tr.patient })) {
        issues.push({
          file: s.file,
          path: `translation[${ti}].${idx} ${i.expression?.[0] ?? ''}`.trim(),
          message: `${who}: ${explain(i.diagnostics ?? i.code, r)}`,
          severity: 'error',
        });
      }
    });
  });
  run.translations.forEach((tr, ti) => {
    if (tr.patient || !tr.observations.length) return;
    issues.push({
      file: s.file,
      path: `translation[${ti}]`,
      message:
        'names no patient (no patientIdExpression, or it found nothing): at ingest the patient assigned to the device is filled in, or the data is held or refused by device policy',
      severity: 'warning',
    });
  });
  return { file: s.file, translations: run.translations, issues };
}

/** Adds what the vendor should change to the validator's words, for the mistakes seen in the field. */
function explain(diagnostics: string, r: Resource): string {
  if (r.resourceType !== 'Observation') return diagnostics;
  const obs = r as Observation;
  const loinc = (codes: { system?: string; code?: string; display?: string }[] | undefined) =>
    (codes ?? []).filter((c) => c.system === 'http://loinc.org');
  if (/requires component DiastolicBP/.test(diagnostics)) {
    const hr = (obs.component ?? []).flatMap((c) => loinc(c.code.coding)).find((c) => c.code === '8867-4');
    if (hr)
      return `${diagnostics}: a component is coded LOINC 8867-4 (Heart rate)${hr.display ? `, displayed as '${hr.display}'` : ''}; diastolic blood pressure is LOINC 8462-4`;
  }
  if (/^LOINC 8867-4: unit/.test(diagnostics)) {
    const c = loinc(obs.code.coding).find((k) => k.code === '8867-4');
    if (c?.display && !/heart|pulse/i.test(c.display))
      return `${diagnostics}: LOINC 8867-4 is Heart rate, but the template displays it as '${c.display}' (diastolic blood pressure is 8462-4, inside a blood-pressure panel 85354-9)`;
  }
  return diagnostics;
}
