/** Small helpers shared by adapters. */

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(:(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/** Epoch numbers below this are seconds (it is 5138 in seconds but 1973 in milliseconds, when no device sent data). */
const EPOCH_MS_FROM = 1e11;
/** Below this a number is no plausible epoch time in either unit (1973 in seconds). */
const EPOCH_S_FROM = 1e8;

/**
 * An epoch time in seconds or milliseconds (a number, or a string of digits) as ISO 8601: the unit is told by the
 * size, so Unix seconds are not read as milliseconds (January 1970).
 */
export function parseEpoch(v: unknown): string | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{9,16}(\.\d+)?$/.test(v.trim()) ? Number(v.trim()) : undefined;
  if (n === undefined || !Number.isFinite(n) || n < EPOCH_S_FROM) return undefined;
  const d = new Date(n < EPOCH_MS_FROM ? n * 1000 : n);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/**
 * Accepts an ISO 8601 date-time with a time zone (FHIR dateTime requires one when a time is given) or an epoch time in
 * seconds or milliseconds (parseEpoch); returns it as FHIR dateTime text, or undefined when it is not one.
 */
export function parseTimestamp(v: unknown): string | undefined {
  const epoch = parseEpoch(v);
  if (epoch) return epoch;
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  const m = ISO_DATE_TIME.exec(s);
  if (!m) return undefined;
  const d = new Date(s);
  if (Number.isNaN(d.getTime())) return undefined;
  // Reject calendar overflow that Date silently normalises (2026-02-30).
  const [y, mo, da] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const check = new Date(Date.UTC(y, mo - 1, da));
  if (check.getUTCMonth() !== mo - 1 || check.getUTCDate() !== da || Number(m[4]) > 23 || Number(m[5]) > 59) return undefined;
  return m[6] ? s : s.replace(/(Z|[+-]\d{2}:\d{2})$/, ':00$1');
}
