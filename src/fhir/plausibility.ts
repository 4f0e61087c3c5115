/**
 * What a reading may claim about a human body and about time, checked before anything is queued (fhir/validate.ts):
 *
 * - Plausibility: per code, the range of values human physiology makes possible, in the code's canonical UCUM unit.
 *   These are bounds of the possible, set outside the most extreme values reported in people who survived them, not
 *   clinical alarm limits: a reading outside them is a device or mapping fault (a sign error, a unit slip, an overflow),
 *   never a patient. Values in another unit of the same dimension are converted before the comparison. Every number
 *   must be finite, whatever its code. The table is documented in docs/codes.md (generated from `PLAUSIBLE_RANGES`) and
 *   can be overridden per code with PLAUSIBILITY_RANGES_FILE.
 * - The time window: an effective time before READING_TIME_MIN or more than READING_TIME_MAX_AHEAD_MS after the gateway
 *   received the reading is refused (a clock that was never set, a year 9999).
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Coding, Observation, OperationOutcomeIssue, Quantity } from 'fhir/r4';
import { ConfigError, type ConfigKey, type ConfigValue } from '../config/schema.js';
import { issue } from '../core/errors.js';
import { LOINC_SYSTEM, MDC_METRICS, MDC_SYSTEM, UCUM_SYSTEM, findMdcMetric, toUcum } from './terminology.js';

export interface PlausibleRange {
  min: number;
  max: number;
  /** The canonical UCUM unit of min and max. */
  unit: string;
}

export interface PlausibleRangeRow extends PlausibleRange {
  /** A LOINC code, or an MDC reference id for a metric without a LOINC pairing. */
  key: string;
  what: string;
  /** Why these bounds: the extreme cases they lie beyond, or the definition that bounds them. */
  basis: string;
}

const LOINC_KEY = /^\d{1,7}-\d$/;

/**
 * The built-in table. Sources are named in `basis` (and in docs/codes.md); each bound lies beyond the most extreme value
 * reported in a living person, with a margin.
 */
export const PLAUSIBLE_RANGES: readonly PlausibleRangeRow[] = [
  {
    key: '2708-6',
    what: 'Oxygen saturation',
    unit: '%',
    min: 0,
    max: 100,
    basis: 'a saturation is the share of haemoglobin carrying oxygen: 0 to 100 % by definition',
  },
  {
    key: '8867-4',
    what: 'Heart rate',
    unit: '/min',
    min: 0,
    max: 600,
    basis:
      '0 is asystole; 600/min is the fastest human rate reported (Chhabra et al., "Mouse heart rate in a human", Indian Pacing Electrophysiol J 2012), above the 480/min reported before it',
  },
  {
    key: '9279-1',
    what: 'Respiratory rate',
    unit: '/min',
    min: 0,
    max: 300,
    basis:
      '0 is apnoea; neonates reach about 150/min. Oscillation frequencies of high-frequency ventilation (up to 900/min) are not a respiratory rate: widen with PLAUSIBILITY_RANGES_FILE if a ventilator reports them under this code',
  },
  ...(
    [
      ['8480-6', 'Systolic blood pressure'],
      ['8462-4', 'Diastolic blood pressure'],
      ['8478-0', 'Mean blood pressure'],
    ] as const
  ).map(([key, what]) => ({
    key,
    what,
    unit: 'mm[Hg]',
    min: 0,
    max: 600,
    basis:
      'intra-arterial peaks above 480/350 mm[Hg] were recorded in weightlifters (MacDougall et al., J Appl Physiol 1985;58:785-790); 0 in circulatory arrest',
  })),
  {
    key: '8310-5',
    what: 'Body temperature',
    unit: 'Cel',
    min: 5,
    max: 50,
    basis:
      'survivors of accidental hypothermia at 13.7 °C (Gilbert et al., Lancet 2000;355:375-376) and lower in children and in surgical hypothermia; heat stroke survived at 46.5 °C (1980)',
  },
  {
    key: '29463-7',
    what: 'Body weight',
    unit: 'kg',
    min: 0.1,
    max: 700,
    basis: 'the smallest surviving newborns weighed about 0.21 kg; the heaviest person recorded about 635 kg',
  },
  {
    key: '8302-2',
    what: 'Body height',
    unit: 'cm',
    min: 20,
    max: 300,
    basis: 'extremely preterm newborns measure about 25 cm; the tallest person recorded 272 cm',
  },
  {
    key: '39156-5',
    what: 'Body mass index',
    unit: 'kg/m2',
    min: 1,
    max: 300,
    basis:
      'from the weight and height bounds of people reported alive (a 0.21 kg, 24 cm newborn is about 4 kg/m2; the heaviest adults about 200)',
  },
  {
    key: '9843-4',
    what: 'Head circumference',
    unit: 'cm',
    min: 10,
    max: 120,
    basis: 'extremely preterm newborns measure about 20 cm; extreme hydrocephalus has been reported above 90 cm',
  },
  {
    key: '19891-1',
    what: 'End-tidal CO2',
    unit: 'mm[Hg]',
    min: 0,
    max: 400,
    basis: 'arterial CO2 partial pressures of several hundred mm[Hg] have been survived; end-tidal CO2 does not exceed arterial',
  },
  {
    key: 'MDC_AWAY_CO2_ET',
    what: 'End-tidal CO2 (partial pressure term)',
    unit: 'mm[Hg]',
    min: 0,
    max: 400,
    basis: 'the same quantity as LOINC 19891-1, under the MDC partial-pressure term: the same bounds',
  },
  {
    key: 'MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD',
    what: 'Capillary blood glucose',
    unit: 'mg/dL',
    min: 0,
    max: 3000,
    basis: 'the highest blood glucose reported in a survivor is 2,656 mg/dL (147.6 mmol/L, 2008)',
  },
  {
    key: 'MDC_BLD_PERF_INDEX',
    what: 'Perfusion index',
    unit: '%',
    min: 0,
    max: 100,
    basis: 'the pulsatile share of the absorbed light: 0 to 100 % by definition',
  },
];

/**
 * Linear conversions into a canonical unit: value × factor + offset. Exact by definition except where said: mmol/L of
 * glucose (molar mass 180.16 g/mol) and kPa to mm[Hg] (101.325/760), both exact enough to compare with a bound.
 */
const TO_CANONICAL: Record<string, Record<string, { factor: number; offset?: number }>> = {
  Cel: { '[degF]': { factor: 5 / 9, offset: (-32 * 5) / 9 } },
  kg: { g: { factor: 0.001 }, '[lb_av]': { factor: 0.45359237 } },
  cm: { m: { factor: 100 }, mm: { factor: 0.1 }, '[in_i]': { factor: 2.54 } },
  'mm[Hg]': { kPa: { factor: 760 / 101.325 } },
  'mg/dL': { 'mmol/L': { factor: 18.016 } },
  '/min': { '1/min': { factor: 1 } },
};

/** The value in `canonical`, or undefined when the unit cannot be compared with it. */
export function toCanonical(value: number, unit: string, canonical: string): number | undefined {
  if (unit === canonical) return value;
  const c = TO_CANONICAL[canonical]?.[unit];
  return c ? value * c.factor + (c.offset ?? 0) : undefined;
}

export interface ReadingChecks {
  /** Ranges by LOINC code and by MDC numeric code (as text). */
  byLoinc: ReadonlyMap<string, PlausibleRangeRow>;
  byMdc: ReadonlyMap<string, PlausibleRangeRow>;
  /** Earliest accepted effective time (epoch ms) and its text. */
  timeMin: number;
  timeMinText: string;
  /** How far an effective time may lie after the receive time. */
  maxAheadMs: number;
}

/** The range table with the overrides applied (a null override removes the range of that code). */
export function buildReadingChecks(
  overrides: Record<string, { min: number; max: number } | null> = {},
  timeMinText = DEFAULT_TIME_MIN,
  maxAheadMs = DEFAULT_MAX_AHEAD_MS,
): ReadingChecks {
  const rows = new Map(PLAUSIBLE_RANGES.map((r) => [r.key, r]));
  for (const [key, o] of Object.entries(overrides)) {
    const base = rows.get(key) ?? rowFor(key);
    if (o === null) rows.delete(key);
    else if (base) rows.set(key, { ...base, min: o.min, max: o.max, basis: 'PLAUSIBILITY_RANGES_FILE' });
  }
  const byLoinc = new Map<string, PlausibleRangeRow>();
  const byMdc = new Map<string, PlausibleRangeRow>();
  for (const r of rows.values()) {
    if (LOINC_KEY.test(r.key)) byLoinc.set(r.key, r);
    else {
      const m = findMdcMetric(r.key);
      if (m) byMdc.set(String(m.code), r);
    }
  }
  return { byLoinc, byMdc, timeMin: Date.parse(timeMinText), timeMinText, maxAheadMs };
}

/** A row for a code the built-in table has no range for (an override adds one): its unit is the code's canonical unit. */
function rowFor(key: string): PlausibleRangeRow | undefined {
  if (LOINC_KEY.test(key)) {
    const m = [...MDC_METRICS.values()].find((x) => x.loinc?.code === key && x.ucum);
    return m?.ucum ? { key, what: m.loinc?.display ?? key, unit: m.ucum, min: 0, max: 0, basis: '' } : undefined;
  }
  const m = findMdcMetric(key);
  return m?.ucum ? { key: m.refId, what: m.refId, unit: m.ucum, min: 0, max: 0, basis: '' } : undefined;
}

/** The range of a code (LOINC or MDC reference id / numeric code) as in effect, for the docs and /codes. */
export function rangeOf(checks: ReadingChecks, code: { loinc?: string; mdc?: number }): PlausibleRangeRow | undefined {
  return (
    (code.mdc !== undefined ? checks.byMdc.get(String(code.mdc)) : undefined) ?? (code.loinc ? checks.byLoinc.get(code.loinc) : undefined)
  );
}

export const DEFAULT_TIME_MIN = '2000-01-01T00:00:00Z';
export const DEFAULT_MAX_AHEAD_MS = 600_000;
export const DEFAULT_READING_CHECKS: ReadingChecks = buildReadingChecks();

const list = <T>(x: T[] | undefined): T[] => (Array.isArray(x) ? x : []);

function rangeFor(checks: ReadingChecks, codings: Coding[] | undefined): PlausibleRangeRow | undefined {
  const cs = list(codings);
  for (const c of cs) if (c?.system === MDC_SYSTEM && c.code && checks.byMdc.has(c.code)) return checks.byMdc.get(c.code);
  for (const c of cs) if (c?.system === LOINC_SYSTEM && c.code && checks.byLoinc.has(c.code)) return checks.byLoinc.get(c.code);
  return undefined;
}

const fmt = (n: number) => (Math.abs(n) >= 1e6 || (n !== 0 && Math.abs(n) < 1e-3) ? n.toExponential(3) : String(Number(n.toPrecision(6))));

/** The unit of a quantity as UCUM: its code when it is UCUM, else its spelling normalised. */
function ucumOf(q: Quantity): string | undefined {
  if (q.code && (q.system === UCUM_SYSTEM || !q.system)) return q.code;
  return q.unit ? toUcum(q.unit) : undefined;
}

function quantityIssues(
  q: Quantity | undefined,
  codings: Coding[] | undefined,
  expr: string,
  at: (e: string) => string[],
  checks: ReadingChecks,
): OperationOutcomeIssue[] {
  if (!q || typeof q.value !== 'number') return [];
  if (!Number.isFinite(q.value)) return [issue('value', `the value ${q.value} is not a finite number`, at(`${expr}.value`))];
  const row = rangeFor(checks, codings);
  if (!row) return [];
  const unit = ucumOf(q);
  const v = unit ? toCanonical(q.value, unit, row.unit) : undefined;
  // A unit that cannot be compared is the unit checks' business (the vital-signs profiles list their units).
  if (v === undefined || (v >= row.min && v <= row.max)) return [];
  const code = LOINC_KEY.test(row.key) ? `LOINC ${row.key}` : row.key;
  const read = `${fmt(q.value)} ${q.code ?? q.unit ?? ''}`.trim();
  const converted = unit !== row.unit ? ` (${fmt(v)} ${row.unit})` : '';
  return [
    issue(
      'value',
      `${code} (${row.what}): ${read}${converted} is outside the physiologically possible range ${fmt(row.min)} to ${fmt(row.max)} ${row.unit}; a device or mapping fault, refused (ranges: docs/codes.md, PLAUSIBILITY_RANGES_FILE)`,
      at(`${expr}.value`),
    ),
  ];
}

/** Plausibility of every Quantity of an Observation (its value and its components' values). */
export function plausibilityIssues(obs: Observation, at: (e: string) => string[], checks: ReadingChecks): OperationOutcomeIssue[] {
  const out = quantityIssues(obs.valueQuantity, obs.code?.coding, 'Observation.valueQuantity', at, checks);
  list(obs.component).forEach((c, i) =>
    out.push(...quantityIssues(c?.valueQuantity, c?.code?.coding, `Observation.component[${i}].valueQuantity`, at, checks)),
  );
  return out;
}

/** The effective time(s) of an Observation against the window around `receivedAt`. */
export function timeWindowIssues(
  obs: Observation,
  receivedAt: string,
  at: (e: string) => string[],
  checks: ReadingChecks,
): OperationOutcomeIssue[] {
  const received = Date.parse(receivedAt);
  const out: OperationOutcomeIssue[] = [];
  // The effective times there are (no array of them: this runs for every Observation).
  for (let k = 0; k < 4; k++) {
    const t =
      k === 0 ? obs.effectiveDateTime : k === 1 ? obs.effectiveInstant : k === 2 ? obs.effectivePeriod?.start : obs.effectivePeriod?.end;
    if (typeof t !== 'string') continue;
    const ms = Date.parse(t);
    if (Number.isNaN(ms)) continue; // the structure checks speak for a malformed dateTime
    if (ms < checks.timeMin)
      out.push(
        issue(
          'value',
          `the effective time ${t} is before ${checks.timeMinText} (READING_TIME_MIN): a device clock that was never set? refused`,
          at('Observation.effective[x]'),
        ),
      );
    else if (!Number.isNaN(received) && ms > received + checks.maxAheadMs)
      out.push(
        issue(
          'value',
          `the effective time ${t} is ${describeAhead(ms - received)} ahead of the gateway's clock (${receivedAt}; at most ${describeAhead(checks.maxAheadMs)}, READING_TIME_MAX_AHEAD_MS): refused`,
          at('Observation.effective[x]'),
        ),
      );
  }
  return out;
}

function describeAhead(ms: number): string {
  const s = ms / 1000;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration

export const READING_CHECK_KEYS: readonly ConfigKey[] = [
  {
    env: 'PLAUSIBILITY_RANGES_FILE',
    type: 'string',
    description:
      'JSON file overriding the physiologically possible range of codes (docs/codes.md): { "<LOINC code or MDC reference id>": { "min": n, "max": n } | null }, in the code\'s canonical unit; null removes the check of that code. Unset: the built-in table',
  },
  {
    env: 'READING_TIME_MIN',
    type: 'string',
    default: DEFAULT_TIME_MIN,
    description: 'Readings whose effective time is before this ISO 8601 date-time are refused (a device clock that was never set)',
  },
  {
    env: 'READING_TIME_MAX_AHEAD_MS',
    type: 'int',
    default: String(DEFAULT_MAX_AHEAD_MS),
    min: 0,
    description: "Readings whose effective time is further than this ahead of the gateway's clock (when received) are refused",
  },
];

/** Reads the keys above (file included); throws a ConfigError with every problem found. */
export function readReadingChecks(raw: ReadonlyMap<string, ConfigValue>): ReadingChecks {
  const errors: string[] = [];
  const timeMin = (raw.get('READING_TIME_MIN') as string | undefined) ?? DEFAULT_TIME_MIN;
  if (!/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/.test(timeMin) || Number.isNaN(Date.parse(timeMin)))
    errors.push(`READING_TIME_MIN: '${timeMin}' is not an ISO 8601 date or date-time with a time zone`);
  const maxAhead = (raw.get('READING_TIME_MAX_AHEAD_MS') as number | undefined) ?? DEFAULT_MAX_AHEAD_MS;
  const file = raw.get('PLAUSIBILITY_RANGES_FILE') as string | undefined;
  const overrides = file ? readOverrides(file, errors) : {};
  if (errors.length) throw new ConfigError(errors);
  return buildReadingChecks(overrides, timeMin, maxAhead);
}

function readOverrides(file: string, errors: string[]): Record<string, { min: number; max: number } | null> {
  const env = 'PLAUSIBILITY_RANGES_FILE';
  if (!existsSync(file)) {
    errors.push(`${env}: ${file} does not exist`);
    return {};
  }
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    errors.push(`${env}: ${file} is not JSON (${(err as Error).message})`);
    return {};
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    errors.push(`${env}: ${file} must hold a JSON object of code → { min, max } or null`);
    return {};
  }
  const out: Record<string, { min: number; max: number } | null> = {};
  const known = new Set(PLAUSIBLE_RANGES.map((r) => r.key));
  for (const [key, v] of Object.entries(doc as Record<string, unknown>)) {
    const row = known.has(key) ? PLAUSIBLE_RANGES.find((r) => r.key === key) : rowFor(key);
    if (!row) {
      errors.push(`${env}: '${key}' is not a LOINC code or MDC reference id with a unit the gateway knows (docs/codes.md)`);
      continue;
    }
    if (v === null) {
      out[row.key] = null;
      continue;
    }
    const r = v as { min?: unknown; max?: unknown; unit?: unknown };
    if (
      !r ||
      typeof r !== 'object' ||
      typeof r.min !== 'number' ||
      typeof r.max !== 'number' ||
      !Number.isFinite(r.min) ||
      !Number.isFinite(r.max) ||
      r.min > r.max
    ) {
      errors.push(`${env}: '${key}' must be { "min": n, "max": n } with finite numbers, min ≤ max (or null)`);
      continue;
    }
    if (r.unit !== undefined && r.unit !== row.unit) {
      errors.push(`${env}: '${key}' is bounded in ${row.unit}; unit '${String(r.unit)}' is not its canonical unit`);
      continue;
    }
    out[row.key] = { min: r.min, max: r.max };
  }
  return out;
}
