/**
 * A DeviceAdapter built from an iomt-fhir / MedTech mapping pair (devicecontent.json + fhirmapping.json).
 *
 * translate(): the payload (message.body) is wrapped in iomt's EventData shape, every device template is applied
 * (one payload may yield many measurements, of many types), measurements are grouped per FHIR template
 * (periodInterval), device, patient and encounter, and each group becomes one Observation. Translations are grouped by
 * device, patient and write mode: one Device per device id (identifier system ctx.deviceIdentifierSystem), the patient
 * by identifier (ctx.patientIdentifierSystem). Groups over a period or a correlation id are written with
 * writeMode 'merge' (see merge.ts): a later message for the same window merges into the same Observation.
 *
 * Pure: no I/O, no clock. Any problem in a message refuses the whole message with a TranslationError whose
 * OperationOutcome names the template, the type and the payload path; nothing is dropped silently.
 */
import type { Device, Observation, OperationOutcomeIssue } from 'fhir/r4';
import { buildDevice } from '../../fhir/builders.js';
import { issue } from '../../core/errors.js';
import { type DeviceAdapter, type InboundMessage, type Reading, type TranslationContext, TranslationError } from '../../core/contract.js';
import {
  type ContentTemplate,
  eventEnvelope,
  type ExtractionProblem,
  extractMeasurements,
  parseDeviceMapping,
} from './device-templates.js';
import { buildGroupObservation, type CodeValueTemplate, groupMeasurements, parseFhirMapping } from './fhir-templates.js';
import { child, errorsOf, IssueSink, isObject, MappingError, type MappingIssue, prop } from './issues.js';
import { limitText, templateLimits } from '../limits.js';
import { type MappingSource, overBudget, templatePool } from './pool.js';
import { createHash } from 'node:crypto';
import { checkTerminology } from './terminology-checks.js';

export const DEVICE_MAPPING_FILE = 'devicecontent.json';
export const FHIR_MAPPING_FILE = 'fhirmapping.json';

export interface CompiledMapping {
  deviceTemplates: ContentTemplate[];
  fhirTemplates: CodeValueTemplate[];
  byType: ReadonlyMap<string, CodeValueTemplate>;
}

export interface MappingFiles {
  /** Label of the device mapping in messages (default devicecontent.json). */
  deviceFile?: string;
  /** Label of the FHIR mapping in messages (default fhirmapping.json). */
  fhirFile?: string;
}

/** Parses both templates and cross-checks them (types and value names line up). Terminology is checked separately. */
export function compileMapping(
  deviceMapping: unknown,
  fhirMapping: unknown,
  files: MappingFiles = {},
): { mapping?: CompiledMapping; issues: MappingIssue[] } {
  const deviceFile = files.deviceFile ?? DEVICE_MAPPING_FILE;
  const fhirFile = files.fhirFile ?? FHIR_MAPPING_FILE;
  const over = sizeIssues(deviceMapping, fhirMapping, deviceFile, fhirFile);
  if (over.length) return { issues: over };
  const d = parseDeviceMapping(deviceMapping, deviceFile);
  const f = parseFhirMapping(fhirMapping, fhirFile);
  const issues = [...d.issues, ...f.issues];
  const byType = new Map(f.templates.map((t) => [t.typeName, t]));
  const dsink = new IssueSink(deviceFile);
  const fsink = new IssueSink(fhirFile);
  const deviceByType = new Map<string, ContentTemplate[]>();
  for (const t of d.templates) deviceByType.set(t.typeName, [...(deviceByType.get(t.typeName) ?? []), t]);
  for (const t of d.templates) {
    if (!byType.has(t.typeName) && !f.issues.some((i) => i.severity === 'error')) {
      dsink.error(
        `${t.path}.template.typeName`,
        `typeName '${t.typeName}' has no CodeValueFhir template in ${fhirFile} (types there: ${[...byType.keys()].join(', ') || 'none'})`,
      );
    }
  }
  for (const t of f.templates) {
    const producers = deviceByType.get(t.typeName);
    if (!producers) {
      if (!d.issues.some((i) => i.severity === 'error'))
        fsink.warning(
          `${t.path}.template.typeName`,
          `no device template in ${deviceFile} produces typeName '${t.typeName}'; this template is never used`,
        );
      continue;
    }
    const extracted = new Set(producers.flatMap((p) => p.values.map((v) => v.name)));
    const mapped = [t.value, ...t.components.map((c) => c.value)].filter((v) => v !== undefined);
    for (const v of mapped) {
      if (!extracted.has(v.valueName))
        fsink.error(
          child(v.path, 'valueName'),
          `valueName '${v.valueName}' is not extracted by any device template of type '${t.typeName}' (they extract ${[...extracted].map((n) => `'${n}'`).join(', ')})`,
        );
    }
    for (const p of producers) {
      for (const v of p.values) {
        if (!mapped.some((m) => m.valueName === v.name))
          dsink.warning(`${p.path}.template.values`, `value '${v.name}' is extracted but ${fhirFile} ${t.path} does not map it`);
      }
      if (t.periodInterval === -1 && !p.correlationId) {
        dsink.error(
          `${p.path}.template.correlationIdExpression`,
          `required: ${fhirFile} ${t.path} groups type '${t.typeName}' by correlation id (periodInterval -1)`,
        );
      }
    }
  }
  issues.push(...dsink.issues, ...fsink.issues);
  if (errorsOf(issues).length) return { issues };
  return { mapping: { deviceTemplates: d.templates, fhirTemplates: f.templates, byType }, issues };
}

/** The limits on a mapping's size, checked before anything is compiled (compiling is what they bound). */
function sizeIssues(deviceMapping: unknown, fhirMapping: unknown, deviceFile: string, fhirFile: string): MappingIssue[] {
  const limits = templateLimits();
  const issues: MappingIssue[] = [];
  const bytes = Buffer.byteLength(JSON.stringify(deviceMapping) ?? '') + Buffer.byteLength(JSON.stringify(fhirMapping) ?? '');
  if (bytes > limits.maxTemplateBytes)
    issues.push({
      file: deviceFile,
      path: '$',
      message: `the mapping is ${bytes} bytes (both template files as JSON); a mapping may have ${limitText('maxTemplateBytes', 'bytes')}`,
      severity: 'error',
    });
  for (const [json, file] of [
    [deviceMapping, deviceFile],
    [fhirMapping, fhirFile],
  ] as const) {
    const list = isObject(json) ? prop(json, 'template') : undefined;
    if (Array.isArray(list?.value) && list.value.length > limits.maxTemplates)
      issues.push({
        file,
        path: `$.${list.key}`,
        message: `${list.value.length} templates; a template file may hold ${limitText('maxTemplates', 'templates')}`,
        severity: 'error',
      });
  }
  return issues;
}

function toIssues(problems: ExtractionProblem[]): OperationOutcomeIssue[] {
  return problems.map((p) => issue(p.code, p.message, [p.expression]));
}

export interface MappingRun {
  translations: Reading[];
  /** The FHIR template each Observation came from (for explanations). */
  origins: Map<Observation, CodeValueTemplate>;
}

/**
 * Runs a compiled mapping over one message. Throws TranslationError. `checkpoint` is called between templates (the
 * cooperative deadline of in-thread evaluation; it throws to stop).
 */
export function runMapping(
  mapping: CompiledMapping,
  message: InboundMessage,
  ctx: TranslationContext,
  vendor?: string,
  checkpoint?: () => void,
): MappingRun {
  if (message.body === undefined || message.body === null || typeof message.body !== 'object') {
    throw new TranslationError([issue('structure', 'the payload must be a JSON object or array', ['$'])]);
  }
  const envelope = eventEnvelope(message);
  const problems: ExtractionProblem[] = [];
  const wrapped = envelope !== message.body;
  const measurements = mapping.deviceTemplates.flatMap((t) => {
    checkpoint?.();
    return extractMeasurements(t, envelope, problems, wrapped);
  });
  checkpoint?.();
  if (problems.length) throw new TranslationError(toIssues(problems));
  if (measurements.length === 0) {
    const tried = mapping.deviceTemplates.map((t) => `'${t.typeName}' (${t.typeMatch.source})`).join(', ');
    throw new TranslationError([issue('not-found', `no template matched the payload; typeNames tried: ${tried}`, ['$'])]);
  }
  const groups = groupMeasurements(measurements, mapping.byType, problems);
  const origins = new Map<Observation, CodeValueTemplate>();
  const built: { obs: Observation; deviceId: string; patientId?: string; merge: boolean }[] = [];
  for (const g of groups) {
    checkpoint?.();
    const obs = buildGroupObservation(g, ctx, problems);
    if (!obs) continue;
    origins.set(obs, g.template);
    built.push({ obs, deviceId: g.deviceId, patientId: g.patientId, merge: g.template.periodInterval !== 0 });
  }
  if (problems.length) throw new TranslationError(toIssues(problems));
  const byKey = new Map<string, Reading>();
  const devices = new Map<string, Device>();
  for (const b of built) {
    const key = [b.deviceId, b.patientId ?? '', b.merge ? 'merge' : 'create'].join('\u001f');
    let tr = byKey.get(key);
    if (!tr) {
      let device = devices.get(b.deviceId);
      if (!device) {
        device = buildDevice({ identity: { system: ctx.deviceIdentifierSystem, value: b.deviceId }, manufacturer: vendor });
        devices.set(b.deviceId, device);
      }
      tr = { devices: [device], observations: [], writeMode: b.merge ? 'merge' : 'create' };
      if (b.patientId) tr.patient = { system: ctx.patientIdentifierSystem, value: b.patientId };
      byKey.set(key, tr);
    }
    tr.observations.push(b.obs);
  }
  return { translations: [...byKey.values()], origins };
}

export interface MappingAdapterOptions {
  id: string;
  description: string;
  deviceMapping: unknown;
  fhirMapping: unknown;
  /** Manufacturer written on the Device resources. */
  vendor?: string;
  /** Labels for messages (default devicecontent.json / fhirmapping.json). */
  files?: MappingFiles;
  /**
   * 'all' (default): structure and terminology (wrong LOINC codes, units a profile refuses) must be clean.
   * 'structure': terminology errors are not fatal. For inspecting third-party templates only, never for production.
   */
  checks?: 'all' | 'structure';
}

/** A compiled mapping with what a worker thread needs to compile it again. */
export interface BoundedMapping {
  mapping: CompiledMapping;
  /** Identifies `source` (a hash): workers cache compiled mappings by it. */
  key: string;
  source: MappingSource;
}

export function boundedMapping(mapping: CompiledMapping, source: MappingSource): BoundedMapping {
  const key = createHash('sha256')
    .update(JSON.stringify([source.deviceMapping, source.fhirMapping, source.files ?? {}, source.vendor ?? '']))
    .digest('hex');
  return { mapping, key, source };
}

/**
 * Runs a mapping over one message within the time budget (TEMPLATE_BUDGET_MS): in a worker thread of the template
 * pool (a hard bound: the worker is replaced when it overruns), or, with TEMPLATE_WORKERS=0, in this thread with the
 * budget checked between templates. Throws TranslationError (422), also when the budget is overrun.
 */
export async function runMappingBounded(
  adapterId: string,
  m: BoundedMapping,
  message: InboundMessage,
  ctx: TranslationContext,
  vendor = m.source.vendor,
): Promise<MappingRun> {
  const limits = templateLimits();
  if (limits.workers <= 0) {
    const deadline = performance.now() + limits.budgetMs;
    return runMapping(m.mapping, message, ctx, vendor, () => {
      if (performance.now() > deadline) throw overBudget(adapterId, limits.budgetMs);
    });
  }
  const r = await templatePool().run(adapterId, m.key, { ...m.source, vendor }, message, ctx);
  const origins = new Map<Observation, CodeValueTemplate>();
  r.translations.forEach((t, ti) => {
    t.observations.forEach((o, oi) => {
      const template = m.mapping.fhirTemplates[r.origins[ti]?.[oi] ?? -1];
      if (template) origins.set(o, template);
    });
  });
  return { translations: r.translations, origins };
}

export interface MappingAdapter extends DeviceAdapter {
  readonly mapping: CompiledMapping;
  /** The mapping and its source, for evaluation in a worker thread. */
  readonly bounded: BoundedMapping;
  /** translate() within the time budget, off the event loop (see runMappingBounded): what ingest uses. */
  translateAsync(message: InboundMessage, context: TranslationContext): Promise<Reading[]>;
  /** Warnings found when the mapping was compiled. */
  readonly warnings: MappingIssue[];
}

/** Builds a DeviceAdapter from a mapping pair. Throws MappingError (with every issue) when the mapping has errors. */
export function createMappingAdapter(opts: MappingAdapterOptions): MappingAdapter {
  const { mapping, issues } = compileMapping(opts.deviceMapping, opts.fhirMapping, opts.files);
  const all = mapping ? [...issues, ...checkTerminology(mapping, opts.files?.fhirFile ?? FHIR_MAPPING_FILE)] : issues;
  const fatal = opts.checks === 'structure' && mapping ? errorsOf(issues) : errorsOf(all);
  if (!mapping || fatal.length) throw new MappingError(all);
  const bounded = boundedMapping(mapping, {
    deviceMapping: opts.deviceMapping,
    fhirMapping: opts.fhirMapping,
    files: opts.files,
    vendor: opts.vendor,
  });
  return {
    id: opts.id,
    description: opts.description,
    mapping,
    bounded,
    async translateAsync(message: InboundMessage, context: TranslationContext): Promise<Reading[]> {
      return (await runMappingBounded(opts.id, bounded, message, context)).translations;
    },
    warnings: all.filter((i) => i.severity === 'warning' || !fatal.includes(i)),
    translate(message: InboundMessage, context: TranslationContext): Reading[] {
      return runMapping(mapping, message, context, opts.vendor).translations;
    },
  };
}
