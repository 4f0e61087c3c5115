/**
 * The HL7v2 device adapter (id 'hl7v2'): ORU^R01 (IHE PCD-01 device data, or lab results) and ADT patient
 * demographics. The body is a parsed `Hl7Message` (what the MLLP and HTTP channels hand in) or the message text.
 */
import type { DeviceAdapter, InboundMessage, Reading, TranslationContext } from '../core/contract.js';
import { identitySources, obxField, observationSources } from './translate-common.js';
import { TranslationError } from '../core/contract.js';
import { issue } from '../core/errors.js';
import { defaultHl7Config, type Hl7TranslateOptions } from './config.js';
import { decodeBytes, type Hl7Message, Hl7ParseError, type ParseLimits, parseMessage, splitMessages, withHl7Package } from './parse.js';
import { ADT_EVENTS, translateAdt } from './translate-adt.js';
import { translateOru } from './oru/index.js';

export const HL7_ADAPTER_ID = 'hl7v2';

/** Message types the gateway takes; anything else is refused with AR (not acceptable). */
export function unsupportedReason(code: string, trigger: string): { code: 200 | 201; text: string } | undefined {
  if (code === 'ORU') return trigger === 'R01' ? undefined : { code: 201, text: `ORU^${trigger} is not supported (only ORU^R01)` };
  if (code === 'ADT')
    return (ADT_EVENTS as readonly string[]).includes(trigger)
      ? undefined
      : { code: 201, text: `ADT^${trigger} is not supported (ADT^${ADT_EVENTS.join('/')})` };
  return { code: 200, text: `message type ${code}^${trigger} is not supported (ORU^R01 and ADT^${ADT_EVENTS.join('/')} are)` };
}

function isHl7Message(v: unknown): v is Hl7Message {
  return typeof v === 'object' && v !== null && 'header' in v && 'segments' in v && Array.isArray((v as Hl7Message).segments);
}

function bodyToMessage(body: unknown, opts: { defaultCharset?: string; parseLimits?: ParseLimits }): Hl7Message {
  if (isHl7Message(body)) return body;
  let text: string;
  let charset: string | undefined;
  if (typeof body === 'string') text = body;
  else if (Buffer.isBuffer(body)) ({ text, charset } = decodeBytes(body, opts.defaultCharset));
  else throw TranslationError.of('the body must be an HL7v2 message (text or parsed)');
  const { messages } = splitMessages(text);
  if (messages.length !== 1)
    throw TranslationError.of(
      `the body holds ${messages.length} HL7 messages; send one at a time (or use the MLLP or /hl7v2 channel for batches)`,
    );
  try {
    return parseMessage(messages[0], { charset, limits: opts.parseLimits });
  } catch (e) {
    if (e instanceof Hl7ParseError)
      throw new TranslationError([issue('structure', e.message, e.location ? [e.location.segment] : undefined)]);
    throw e;
  }
}

export function createHl7Adapter(
  options: Partial<Hl7TranslateOptions> & { defaultCharset?: string; parseLimits?: ParseLimits } = {},
): DeviceAdapter & { translateAsync(message: InboundMessage, ctx: TranslationContext): Promise<Reading[]> } {
  const defaults = defaultHl7Config();
  const opts: Hl7TranslateOptions = {
    statusR: options.statusR ?? defaults.statusR,
    defaultTimezone: options.defaultTimezone ?? defaults.defaultTimezone,
    assigningAuthoritySystems: options.assigningAuthoritySystems ?? defaults.assigningAuthoritySystems,
    eui64System: options.eui64System ?? defaults.eui64System,
  };
  const translateMessage = (msg: Hl7Message, ctx: TranslationContext): Reading[] => {
    const { messageCode, triggerEvent } = msg.header;
    const unsupported = unsupportedReason(messageCode, triggerEvent);
    if (unsupported) throw new TranslationError([issue('not-supported', unsupported.text, ['MSH[1]-9'])]);
    if (messageCode === 'ORU') return translateOru(msg, ctx, opts);
    return translateAdt(msg, ctx, opts);
  };
  return {
    id: HL7_ADAPTER_ID,
    description: 'HL7v2 ORU^R01 (IHE PCD-01 device data, lab results) and ADT (patient demographics)',
    /** Needs the hl7v2 package loaded for a text body the fast path declines (else Hl7PackageNotLoaded). */
    translate(message: InboundMessage, ctx: TranslationContext): Reading[] {
      return translateMessage(bodyToMessage(message.body, options), ctx);
    },
    /** What the pipeline calls: a text body that needs the hl7v2 package loads it first (parse.ts). */
    async translateAsync(message: InboundMessage, ctx: TranslationContext): Promise<Reading[]> {
      return translateMessage(await withHl7Package(() => bodyToMessage(message.body, options)), ctx);
    },
    locate(resource: object, element: string): string | undefined {
      const named = identitySources.get(resource);
      if (named) return named;
      const src = observationSources.get(resource);
      if (!src) return undefined;
      // A component is named by position (component[1]) or by LOINC code (component(8462-4)).
      const byIndex = /^Observation\.component\[(\d+)\]/.exec(element);
      const byLoinc = /^Observation\.component\(([^)]+)\)/.exec(element);
      const components = (resource as { component?: { code?: { coding?: { code?: string }[] } }[] }).component ?? [];
      const k = byIndex
        ? Number(byIndex[1])
        : byLoinc
          ? components.findIndex((c) => c.code?.coding?.some((x) => x.code === byLoinc[1]))
          : -1;
      const segment = (k >= 0 && src.components?.[k]) || src.obx;
      const field = obxField(element);
      return field ? `${segment}-${field}` : segment;
    },
  };
}

/** The adapter with the default policy (the gateway registers one built from its configuration). */
export const hl7v2Adapter: DeviceAdapter = createHl7Adapter();
