/**
 * The plugin SDK: everything a TypeScript (or JavaScript) adapter plugin needs, from one module. See
 * docs/adapters.md, "TypeScript plugins", and the worked example in plugins/example-vendor/.
 *
 *   import { definePlugin, TranslationError, fromMeasurements } from '<gateway>/src/adapters/sdk.js';
 *   export default definePlugin({ id: 'acme-ble-bp', description: '…', vendor: 'Acme', translate(message, context) { … } });
 *
 * The contract is the adapter contract (contract.ts): `translate` is pure (no I/O, no clock, no randomness: the
 * receive time is in the message), returns Reading[] and throws TranslationError for input it cannot map.
 */
import type { DeviceAdapter, InboundMessage, Reading, TranslationContext } from '../core/contract.js';
import { TranslationError } from '../core/contract.js';
import { measurementsAdapter } from './measurements.js';

export type {
  DeviceAdapter,
  InboundMessage,
  Reading,
  Translation,
  TranslationContext,
  PatientIdentity,
  Principal,
} from '../core/contract.js';
export { TranslationError } from '../core/contract.js';
export {
  buildDevice,
  buildObservation,
  bpPanelCode,
  categoryConcept,
  deterministicUuid,
  deviceReference,
  hashKey,
  mdcCoding,
  observationIdentifier,
  patientReference,
  quantity,
  resolveCode,
  resolveMdc,
  type DeviceIdentity,
  type DeviceInput,
  type ObservationInput,
  type ObservationValue,
  type ResolvedCode,
} from '../fhir/builders.js';
export {
  Category,
  convertExact,
  findMdcMetric,
  LOINC_SYSTEM,
  LOINC_VITALS,
  MDC_SYSTEM,
  toUcum,
  UCUM_SYSTEM,
  type MdcMetric,
} from '../fhir/terminology.js';
export { issue, outcome } from '../core/errors.js';
export { isRecord, parseTimestamp } from './util.js';

/** The version of this contract. A plugin built for another major version is refused at load. */
export const PLUGIN_API_VERSION = 1;

/** Marks adapters made by definePlugin; a registered symbol, so it survives two copies of the SDK. */
export const PLUGIN_MARK: unique symbol = Symbol.for('iomt-gateway.plugin');

export interface PluginSample {
  /** Label in messages, e.g. "cuff-reading". */
  name: string;
  body: unknown;
  attributes?: Record<string, string>;
}

export interface PluginDefinition {
  /** Adapter id: lower case, ^[a-z0-9][a-z0-9._-]{0,63}$ (the URL /ingest/<id>, MQTT_TOPICS, logs). */
  id: string;
  description: string;
  /** The vendor id that owns the plugin (shown by GET /api/adapters). */
  vendor?: string;
  /** Pure translation. Throw TranslationError (or return no translations) for input you cannot map. */
  translate(message: InboundMessage, context: TranslationContext): Reading[];
  /** Sample payloads: each must translate into resources the gateway's validator accepts, or the plugin is not loaded. */
  samples?: PluginSample[];
}

export interface PluginAdapter extends DeviceAdapter {
  readonly vendor?: string;
  readonly apiVersion: number;
  readonly samples: readonly PluginSample[];
  readonly [PLUGIN_MARK]: true;
}

const ADAPTER_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Declares a plugin adapter. Throws at import time when the definition is unusable (so loading reports it). */
export function definePlugin(def: PluginDefinition): PluginAdapter {
  if (!def || typeof def !== 'object') throw new TypeError('definePlugin: a definition object is required');
  if (typeof def.id !== 'string' || !ADAPTER_ID.test(def.id))
    throw new TypeError(`definePlugin: id '${String(def.id)}' must match ${ADAPTER_ID}`);
  if (typeof def.description !== 'string' || !def.description.trim())
    throw new TypeError(`definePlugin(${def.id}): description is required`);
  if (typeof def.translate !== 'function') throw new TypeError(`definePlugin(${def.id}): translate(message, context) is required`);
  const translate = def.translate;
  return Object.freeze({
    id: def.id,
    description: def.description,
    vendor: def.vendor,
    apiVersion: PLUGIN_API_VERSION,
    samples: Object.freeze([...(def.samples ?? [])]),
    [PLUGIN_MARK]: true as const,
    translate: (message: InboundMessage, context: TranslationContext) => translate.call(def, message, context),
  });
}

export function isPluginAdapter(a: unknown): a is PluginAdapter {
  return typeof a === 'object' && a !== null && (a as Record<symbol, unknown>)[PLUGIN_MARK] === true;
}

/**
 * Translates readings in the gateway's own vendor-neutral format (the `measurements` adapter: MDC or LOINC codes, UCUM
 * or common units, blood-pressure panels assembled from systolic/diastolic/mean). A plugin that decodes a binary or
 * signed payload into this shape gets correct codes, units and identifiers without building resources itself.
 *
 *   fromMeasurements({ deviceId, patientId, timestamp, measurements: [{ code: 'MDC_PRESS_BLD_NONINV_SYS', value: 120, unit: 'mmHg' }] }, message, context)
 */
export function fromMeasurements(readings: unknown, message: InboundMessage, context: TranslationContext): Reading[] {
  return measurementsAdapter.translate({ ...message, body: readings }, context);
}

/** Convenience: a TranslationError with one issue at a payload path. */
export function refuse(message: string, expression?: string): never {
  throw TranslationError.of(message, expression);
}
