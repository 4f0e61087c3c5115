/** Small helpers shared by adapters. */

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(:(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * Accepts an ISO 8601 date-time with a time zone (FHIR dateTime requires one when a time is given) or epoch
 * milliseconds; returns it as FHIR dateTime text, or undefined when it is not one.
 */
export function parseTimestamp(v: unknown): string | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) {
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
  }
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
