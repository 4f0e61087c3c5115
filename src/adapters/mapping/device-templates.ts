/**
 * The device-mapping template (devicecontent.json) of iomt-fhir / Azure MedTech, parsed and applied.
 *
 *   { "templateType": "CollectionContent", "template": [ { "templateType": "<type>", "template": { ... } }, ... ] }
 *
 * Template types, with the semantics of microsoft/iomt-fhir (src/lib/Microsoft.Health.Fhir.Ingest.Template):
 * - JsonPathContent: JSONPath expressions. typeMatchExpression selects tokens in the event; every other expression
 *   is evaluated against the selected token.
 * - CalculatedContent (alias CalculatedFunctionContent): each expression is a string (in defaultExpressionLanguage,
 *   JsonPath unless set) or { "value", "language": "JsonPath" | "JmesPath" }. Expressions other than the type match are
 *   evaluated against the whole event plus the selected token under `matchedToken`.
 * - IotJsonPathContent: as JsonPathContent, device id from $.SystemProperties.iothub-connection-device-id and time
 *   from $.Properties.iothub-creation-time-utc, else $.SystemProperties.iothub-enqueuedtime.
 * - IotCentralJsonPathContent: as JsonPathContent, device id $.deviceId, time $.enqueuedTime.
 *
 * The event is iomt's EventData shape: { "Body": <payload>, "Properties": {...}, "SystemProperties": {...} }, built
 * from the inbound message (see `eventEnvelope`), so templates written for iomt-fhir work unchanged.
 */
import type { InboundMessage } from '../../core/contract.js';
import { parseTimestamp } from '../util.js';

const EPOCH_HINT = '100000000, 1973 in seconds';
import { type CompiledExpression, compileExpression, ExpressionLanguage, parseLanguage, type Selected } from './expressions.js';
import { child, IssueSink, isObject, type MappingIssue, prop } from './issues.js';

export const ContentTemplateKind = {
  jsonPath: 'JsonPathContent',
  calculated: 'CalculatedContent',
  iotJsonPath: 'IotJsonPathContent',
  iotCentral: 'IotCentralJsonPathContent',
} as const;
export type ContentTemplateKind = (typeof ContentTemplateKind)[keyof typeof ContentTemplateKind];

const KIND_NAMES: Record<string, ContentTemplateKind | 'collection'> = {
  collectioncontent: 'collection',
  jsonpathcontent: ContentTemplateKind.jsonPath,
  calculatedcontent: ContentTemplateKind.calculated,
  calculatedfunctioncontent: ContentTemplateKind.calculated,
  iotjsonpathcontent: ContentTemplateKind.iotJsonPath,
  iotcentraljsonpathcontent: ContentTemplateKind.iotCentral,
};

/** iomt matches "JsonPathContent" and "JsonPathContentTemplate" alike, ignoring case. */
function kindOf(templateType: string): ContentTemplateKind | 'collection' | undefined {
  return KIND_NAMES[templateType.toLowerCase().replace(/template$/, '')];
}

export interface ValueExpression {
  name: string;
  expression: CompiledExpression;
  required: boolean;
}

export interface ContentTemplate {
  index: number;
  /** JSONPath of this template in devicecontent.json, e.g. $.template[2] */
  path: string;
  kind: ContentTemplateKind;
  typeName: string;
  typeMatch: CompiledExpression;
  /** Alternatives, tried in order (IotJsonPathContent's timestamp has two). */
  deviceId: CompiledExpression[];
  timestamp: CompiledExpression[];
  patientId?: CompiledExpression;
  encounterId?: CompiledExpression;
  correlationId?: CompiledExpression;
  values: ValueExpression[];
}

const IOT_DEVICE_ID = '$.SystemProperties.iothub-connection-device-id';
const IOT_TIME = '$.Properties.iothub-creation-time-utc';
const IOT_ENQUEUED = '$.SystemProperties.iothub-enqueuedtime';

function parseBool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|false)$/i.test(v.trim())) return v.trim().toLowerCase() === 'true';
  return undefined;
}

/** Parses devicecontent.json; every problem is reported with its JSON path. */
export function parseDeviceMapping(json: unknown, file?: string): { templates: ContentTemplate[]; issues: MappingIssue[] } {
  const sink = new IssueSink(file);
  const templates: ContentTemplate[] = [];
  if (!isObject(json)) {
    sink.error('$', 'the device mapping must be a JSON object { "templateType": "CollectionContent", "template": [ ... ] }');
    return { templates, issues: sink.issues };
  }
  const tt = prop(json, 'templateType');
  if (typeof tt?.value !== 'string' || kindOf(tt.value) !== 'collection') {
    sink.error('$.templateType', `must be "CollectionContent"${tt ? ` (found ${JSON.stringify(tt.value)})` : ': required'}`);
  }
  const list = prop(json, 'template');
  if (!Array.isArray(list?.value)) {
    sink.error('$.template', list ? 'must be an array of templates' : 'required');
    return { templates, issues: sink.issues };
  }
  if (list.value.length === 0) sink.error('$.template', 'the collection holds no templates');
  list.value.forEach((entry, index) => {
    const t = parseContentTemplate(entry, index, `$.template[${index}]`, sink);
    if (t) templates.push(t);
  });
  return { templates, issues: sink.issues };
}

function parseContentTemplate(entry: unknown, index: number, path: string, sink: IssueSink): ContentTemplate | undefined {
  if (!isObject(entry)) {
    sink.error(path, 'must be an object { "templateType": ..., "template": { ... } }');
    return undefined;
  }
  const tt = prop(entry, 'templateType');
  const kind = typeof tt?.value === 'string' ? kindOf(tt.value) : undefined;
  if (!tt) sink.error(`${path}.templateType`, 'required');
  else if (!kind || kind === 'collection') {
    sink.error(
      `${path}.templateType`,
      `unknown template type ${JSON.stringify(tt.value)}; expected one of ${Object.values(ContentTemplateKind).join(', ')}`,
    );
  }
  const body = prop(entry, 'template');
  const tpath = `${path}.template`;
  if (!isObject(body?.value)) {
    sink.error(tpath, body ? 'must be an object' : 'required');
    return undefined;
  }
  if (!kind || kind === 'collection') return undefined;
  const t = body.value;
  const before = sink.errorCount;

  let defaultLanguage: ExpressionLanguage = ExpressionLanguage.jsonPath;
  if (kind === ContentTemplateKind.calculated) {
    const dl = prop(t, 'defaultExpressionLanguage');
    if (dl) {
      const lang = parseLanguage(dl.value);
      if (lang) defaultLanguage = lang;
      else sink.error(child(tpath, dl.key), `must be "JsonPath" or "JmesPath" (found ${JSON.stringify(dl.value)})`);
    }
  }

  const expr = (name: string, required: boolean): CompiledExpression | undefined => {
    const p = prop(t, name);
    const at = child(tpath, p?.key ?? name);
    if (p === undefined || p.value === null || (typeof p.value === 'string' && p.value.trim() === '')) {
      if (required) sink.error(at, 'required');
      return undefined;
    }
    return compileAt(p.value, at, kind, defaultLanguage, sink);
  };

  const typeName = prop(t, 'typeName');
  if (typeof typeName?.value !== 'string' || !typeName.value.trim())
    sink.error(child(tpath, typeName?.key ?? 'typeName'), typeName ? 'must be a non-empty string' : 'required');
  const typeMatch = expr('typeMatchExpression', true);
  if (typeMatch?.language === ExpressionLanguage.jsonPath) {
    const m = /^\$\.([A-Za-z_$][\w$-]*)/.exec(typeMatch.source.trim());
    if (m && !['Body', 'Properties', 'SystemProperties'].includes(m[1])) {
      sink.warning(
        child(tpath, 'typeMatchExpression'),
        `evaluated against the event { Body, Properties, SystemProperties } as in iomt-fhir, so '${typeMatch.source}' selects nothing in a payload; the payload is $.Body (did you mean '$.Body.${typeMatch.source.trim().slice(2)}'?)`,
      );
    }
  }
  const fixed = (source: string) => compileExpression(source, ExpressionLanguage.jsonPath);
  let deviceId: CompiledExpression[] = [];
  let timestamp: CompiledExpression[] = [];
  switch (kind) {
    case ContentTemplateKind.iotJsonPath:
      deviceId = [fixed(IOT_DEVICE_ID)];
      timestamp = [fixed(IOT_TIME), fixed(IOT_ENQUEUED)];
      break;
    case ContentTemplateKind.iotCentral:
      deviceId = [fixed('$.deviceId')];
      timestamp = [fixed('$.enqueuedTime')];
      break;
    case ContentTemplateKind.jsonPath:
    case ContentTemplateKind.calculated: {
      const d = expr('deviceIdExpression', true);
      const ts = expr('timestampExpression', true);
      deviceId = d ? [d] : [];
      timestamp = ts ? [ts] : [];
      break;
    }
    default:
      kind satisfies never;
  }
  const patientId = expr('patientIdExpression', false);
  const encounterId = expr('encounterIdExpression', false);
  const correlationId = expr('correlationIdExpression', false);

  const values: ValueExpression[] = [];
  const vs = prop(t, 'values');
  if (vs && !Array.isArray(vs.value)) sink.error(child(tpath, vs.key), 'must be an array of { valueName, valueExpression, required }');
  else if (!vs || (vs.value as unknown[]).length === 0)
    sink.error(child(tpath, vs?.key ?? 'values'), 'at least one value is required (a measurement without values maps to nothing)');
  else {
    const seen = new Set<string>();
    (vs.value as unknown[]).forEach((v, i) => {
      const vpath = child(child(tpath, vs.key), i);
      if (!isObject(v)) return void sink.error(vpath, 'must be an object { valueName, valueExpression, required }');
      const name = prop(v, 'valueName');
      if (typeof name?.value !== 'string' || !name.value.trim())
        sink.error(child(vpath, name?.key ?? 'valueName'), name ? 'must be a non-empty string' : 'required');
      else if (seen.has(name.value)) sink.error(child(vpath, name.key), `duplicate valueName '${name.value}' in this template`);
      else seen.add(name.value);
      const req = prop(v, 'required');
      const required = req === undefined ? false : parseBool(req.value);
      if (required === undefined) sink.error(child(vpath, req?.key ?? 'required'), 'must be true or false');
      const ve = prop(v, 'valueExpression');
      let compiled: CompiledExpression | undefined;
      if (ve === undefined || ve.value === null || ve.value === '') sink.error(child(vpath, ve?.key ?? 'valueExpression'), 'required');
      else compiled = compileAt(ve.value, child(vpath, ve.key), kind, defaultLanguage, sink);
      if (compiled && typeof name?.value === 'string' && name.value.trim())
        values.push({ name: name.value, expression: compiled, required: required ?? false });
    });
  }
  if (sink.errorCount > before || !typeMatch || typeof typeName?.value !== 'string') return undefined;
  return { index, path, kind, typeName: typeName.value, typeMatch, deviceId, timestamp, patientId, encounterId, correlationId, values };
}

function compileAt(
  v: unknown,
  at: string,
  kind: ContentTemplateKind,
  defaultLanguage: ExpressionLanguage,
  sink: IssueSink,
): CompiledExpression | undefined {
  let source: unknown = v;
  let language = defaultLanguage;
  if (isObject(v)) {
    if (kind !== ContentTemplateKind.calculated) {
      sink.error(at, `${kind} expressions are JSONPath strings; { value, language } expressions need templateType CalculatedContent`);
      return undefined;
    }
    const val = prop(v, 'value');
    source = val?.value;
    const lang = prop(v, 'language');
    if (lang) {
      const l = parseLanguage(lang.value);
      if (!l) {
        sink.error(child(at, lang.key), `must be "JsonPath" or "JmesPath" (found ${JSON.stringify(lang.value)})`);
        return undefined;
      }
      language = l;
    }
    if (typeof source !== 'string' || !source.trim()) {
      sink.error(child(at, val?.key ?? 'value'), val ? 'must be a non-empty string' : 'required');
      return undefined;
    }
  }
  if (typeof source !== 'string') {
    sink.error(at, 'must be a string expression');
    return undefined;
  }
  try {
    return compileExpression(source, language);
  } catch (e) {
    sink.error(at, (e as Error).message);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Applying templates to an event

/** iomt's EventData shape. A body that already is one (Body + Properties/SystemProperties) is used as it is. */
export function eventEnvelope(message: InboundMessage): Record<string, unknown> {
  const b = message.body;
  if (isObject(b) && 'Body' in b && ('Properties' in b || 'SystemProperties' in b)) return b;
  const attrs = message.attributes ?? {};
  const system: Record<string, unknown> = { 'iothub-enqueuedtime': message.receivedAt };
  const deviceId = attrs['iothub-connection-device-id'] ?? attrs.deviceId;
  if (deviceId) system['iothub-connection-device-id'] = deviceId;
  return { Body: b, Properties: { ...attrs }, SystemProperties: system };
}

export interface ExtractedValue {
  name: string;
  value: unknown;
  /** Where the value is in the payload (JSONPath), or the expression when the language gives no path. */
  at: string;
  expression: string;
}

export interface Measurement {
  type: string;
  template: ContentTemplate;
  deviceId: string;
  patientId?: string;
  encounterId?: string;
  correlationId?: string;
  /** FHIR dateTime text and its epoch milliseconds. */
  time: string;
  timeMs: number;
  /** Where the matched token is in the payload, e.g. $.readings[2] */
  at: string;
  values: ExtractedValue[];
}

export interface ExtractionProblem {
  code: 'required' | 'value' | 'invalid' | 'business-rule' | 'not-found';
  message: string;
  /** Payload location (JSONPath) or the expression. */
  expression: string;
}

/** Envelope path → payload path: $.Body.x → $.x; other envelope parts keep their path. */
export function payloadPath(envelopePath: string): string {
  if (envelopePath === '$.Body') return '$';
  if (envelopePath.startsWith('$.Body.') || envelopePath.startsWith('$.Body[')) return '$' + envelopePath.slice('$.Body'.length);
  return envelopePath;
}

function joinPath(base: string, rel: string): string {
  return rel === '$' ? base : base + rel.slice(1);
}

/**
 * Runs one content template over the event: the measurements it implies, or the problems it met. `wrapped`: the
 * event was built around the payload (paths are then reported relative to the payload, $.Body.x → $.x).
 */
export function extractMeasurements(
  t: ContentTemplate,
  envelope: Record<string, unknown>,
  problems: ExtractionProblem[],
  wrapped = true,
): Measurement[] {
  const toPayload = (p: string) => (wrapped ? payloadPath(p) : p);
  const out: Measurement[] = [];
  const label = `template ${t.path} (typeName '${t.typeName}')`;
  let matches: Selected[];
  try {
    matches = t.typeMatch.selectTokens(envelope);
  } catch (e) {
    problems.push({
      code: 'invalid',
      message: `${label}: typeMatchExpression failed: ${(e as Error).message}`,
      expression: t.typeMatch.source,
    });
    return out;
  }
  for (const m of matches) {
    const matchPath = m.path ?? '$';
    const at = toPayload(matchPath);
    const legacy = t.kind !== ContentTemplateKind.calculated;
    const doc = legacy ? m.value : { ...envelope, matchedToken: m.value };
    const locate = (sel: Selected | undefined, expr: CompiledExpression): string => {
      if (!sel?.path) return `${at} (${expr.source})`;
      if (legacy) return toPayload(joinPath(matchPath, sel.path));
      if (sel.path === '$.matchedToken' || sel.path.startsWith('$.matchedToken.') || sel.path.startsWith('$.matchedToken['))
        return toPayload(joinPath(matchPath, '$' + sel.path.slice('$.matchedToken'.length)));
      return toPayload(sel.path);
    };
    const before = problems.length;
    /** One token from the first alternative that selects something; undefined when none does. */
    const one = (exprs: CompiledExpression[], what: string, required: boolean): { sel: Selected; expr: CompiledExpression } | undefined => {
      for (const e of exprs) {
        let sel: Selected[];
        try {
          sel = e.selectTokens(doc);
        } catch (err) {
          problems.push({
            code: 'invalid',
            message: `${label}: ${what} '${e.source}' failed on the token at ${at}: ${(err as Error).message}`,
            expression: at,
          });
          return undefined;
        }
        const present = sel.filter((s) => s.value !== null && s.value !== undefined && s.value !== '');
        if (present.length > 1) {
          problems.push({
            code: 'value',
            message: `${label}: ${what} '${e.source}' selected ${present.length} values in the token at ${at}; expected one`,
            expression: at,
          });
          return undefined;
        }
        if (present.length === 1) return { sel: present[0], expr: e };
      }
      if (required) {
        problems.push({
          code: 'required',
          message: `${label}: ${what} ${exprs.map((e) => `'${e.source}'`).join(' or ')} found nothing in the token at ${at}`,
          expression: at,
        });
      }
      return undefined;
    };
    const idText = (r: ReturnType<typeof one>, what: string): string | undefined => {
      if (!r) return undefined;
      const v = r.sel.value;
      if (typeof v === 'string' && v.trim()) return v.trim();
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      problems.push({
        code: 'value',
        message: `${label}: ${what} must be a string or a number, found ${describe(v)}`,
        expression: locate(r.sel, r.expr),
      });
      return undefined;
    };
    const deviceId = idText(one(t.deviceId, 'deviceIdExpression', true), 'the device id');
    const ts = one(t.timestamp, 'timestampExpression', true);
    let time: string | undefined;
    if (ts) {
      time = parseTimestamp(ts.sel.value);
      if (!time)
        problems.push({
          code: 'value',
          message: `${label}: the timestamp ${describe(ts.sel.value)} is not an ISO 8601 date-time with a time zone, nor an epoch time in seconds or milliseconds (a number from ${EPOCH_HINT}); point timestampExpression at the reading's time`,
          expression: locate(ts.sel, ts.expr),
        });
    }
    const patientId = t.patientId ? idText(one([t.patientId], 'patientIdExpression', false), 'the patient id') : undefined;
    const encounterId = t.encounterId ? idText(one([t.encounterId], 'encounterIdExpression', false), 'the encounter id') : undefined;
    // iomt: when a correlationIdExpression is defined it is required.
    const correlationId = t.correlationId
      ? idText(one([t.correlationId], 'correlationIdExpression', true), 'the correlation id')
      : undefined;
    const values: ExtractedValue[] = [];
    for (const v of t.values) {
      const r = one([v.expression], `valueExpression of '${v.name}'`, v.required);
      if (r) values.push({ name: v.name, value: r.sel.value, at: locate(r.sel, r.expr), expression: v.expression.source });
    }
    if (problems.length > before || !deviceId || !time) continue;
    if (values.length === 0) {
      problems.push({
        code: 'required',
        message: `${label}: the token at ${at} matched, but none of its values (${t.values.map((v) => v.name).join(', ')}) is present`,
        expression: at,
      });
      continue;
    }
    out.push({
      type: t.typeName,
      template: t,
      deviceId,
      patientId,
      encounterId,
      correlationId,
      time,
      timeMs: Date.parse(time),
      at,
      values,
    });
  }
  return out;
}

export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'number' && Number.isNaN(v)) return 'NaN';
  const s = JSON.stringify(v);
  return `${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v} ${s && s.length > 60 ? s.slice(0, 57) + '...' : s}`;
}
