/**
 * Limits on vendor templates and on what one message may yield: the bounded work per message of issue 13. Read once
 * from the configuration (src/adapters/config.ts, documented in docs/security.md) and applied wherever a mapping is
 * compiled (the mappings folder, the registration API, the command line) and wherever a message is translated.
 *
 * A refusal names the limit, its value and the setting that changes it, so that an operator knows what to raise and
 * a vendor knows what to shrink.
 */
import { issue, TranslationError } from '../core/errors.js';
import type { Reading } from '../core/contract.js';

export interface TemplateLimits {
  /** Most templates in one template file of a declarative mapping (device templates; FHIR templates). */
  maxTemplates: number;
  /** Most bytes of a declarative mapping: both template files, as JSON. */
  maxTemplateBytes: number;
  /** Most readings one message may yield (every adapter). */
  maxReadings: number;
  /** Most Observations one message may yield (every adapter). */
  maxObservations: number;
  /** Time one message's declarative templates may take; beyond it the message is refused. */
  budgetMs: number;
  /** Worker threads evaluating declarative templates; 0 evaluates them in the event loop (no hard budget). */
  workers: number;
}

export const DEFAULT_TEMPLATE_LIMITS: Readonly<TemplateLimits> = Object.freeze({
  maxTemplates: 100,
  maxTemplateBytes: 262_144,
  maxReadings: 1000,
  maxObservations: 5000,
  budgetMs: 1000,
  workers: 2,
});

/** The setting of each limit (for messages). */
export const LIMIT_SETTINGS: Readonly<Record<keyof TemplateLimits, string>> = Object.freeze({
  maxTemplates: 'MAPPING_MAX_TEMPLATES',
  maxTemplateBytes: 'MAPPING_MAX_BYTES',
  maxReadings: 'MESSAGE_MAX_READINGS',
  maxObservations: 'MESSAGE_MAX_OBSERVATIONS',
  budgetMs: 'TEMPLATE_BUDGET_MS',
  workers: 'TEMPLATE_WORKERS',
});

let current: TemplateLimits = { ...DEFAULT_TEMPLATE_LIMITS };

/** The limits in force (the defaults until the gateway configures them). */
export function templateLimits(): Readonly<TemplateLimits> {
  return current;
}

/** Sets the limits (the gateway at start-up; tests). Returns the previous ones. */
export function configureTemplateLimits(limits: Partial<TemplateLimits>): TemplateLimits {
  const previous = current;
  current = { ...current, ...limits };
  return previous;
}

/** The limits from the configuration values (keys of ADAPTER_LIMIT_KEYS in config.ts). */
export function readTemplateLimits(raw: ReadonlyMap<string, unknown>): TemplateLimits {
  const out = { ...DEFAULT_TEMPLATE_LIMITS };
  for (const [field, env] of Object.entries(LIMIT_SETTINGS) as [keyof TemplateLimits, string][]) {
    const v = raw.get(env);
    if (typeof v === 'number') out[field] = v;
  }
  return out;
}

/** "at most 1000 readings per message (MESSAGE_MAX_READINGS)". */
export function limitText(field: keyof TemplateLimits, what: string, value = current[field]): string {
  return `at most ${value} ${what} (${LIMIT_SETTINGS[field]}=${value})`;
}

/** Refuses (422, not retryable) a translation that yields more readings or Observations than one message may. */
export function checkMessageLimits(readings: readonly Reading[], limits: Readonly<TemplateLimits> = current): void {
  if (readings.length > limits.maxReadings)
    throw new TranslationError([
      issue(
        'too-costly',
        `the message yields ${readings.length} readings; a message may yield ${limitText('maxReadings', 'readings', limits.maxReadings)}: split it`,
      ),
    ]);
  const observations = readings.reduce((n, r) => n + r.observations.length, 0);
  if (observations > limits.maxObservations)
    throw new TranslationError([
      issue(
        'too-costly',
        `the message yields ${observations} Observations; a message may yield ${limitText('maxObservations', 'Observations', limits.maxObservations)}: split it`,
      ),
    ]);
}
