/**
 * HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]) → FHIR date / dateTime.
 *
 * FHIR requires a time zone whenever a time is given. When the value has none, the offset comes from (in order) the
 * message's own MSH-7 offset (the sender's zone, per HL7), then the configured default zone (HL7_DEFAULT_TIMEZONE: an
 * IANA name such as Europe/Berlin, UTC, or a fixed offset such as +01:00), evaluated at that local time (so daylight
 * saving time is honoured).
 */

const TS = /^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?([+-]\d{4})?$/;

/** Checks a zone setting: an IANA zone name, UTC/Z, or ±HH:MM / ±HHMM. */
export function isValidZone(zone: string): boolean {
  if (/^(Z|UTC|GMT)$/i.test(zone) || /^[+-]\d{2}:?\d{2}$/.test(zone)) return true;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

function fixedOffsetMinutes(zone: string): number | undefined {
  if (/^(Z|UTC|GMT)$/i.test(zone)) return 0;
  const m = /^([+-])(\d{2}):?(\d{2})$/.exec(zone);
  if (!m) return undefined;
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function zoneOffsetAt(zone: string, utcMs: number): number {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(zone, f);
  }
  const p = Object.fromEntries(f.formatToParts(new Date(utcMs)).map((x) => [x.type, x.value]));
  const asUtc = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second));
  return Math.round((asUtc - Math.floor(utcMs / 1000) * 1000) / 60000);
}

/** Offset in minutes of `zone` for a wall-clock time given as if it were UTC. */
function offsetForLocal(zone: string, localAsUtcMs: number): number {
  const fixed = fixedOffsetMinutes(zone);
  if (fixed !== undefined) return fixed;
  const first = zoneOffsetAt(zone, localAsUtcMs);
  return zoneOffsetAt(zone, localAsUtcMs - first * 60000);
}

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const a = Math.abs(minutes);
  return `${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

/** The ±HHMM offset of an HL7 TS, as FHIR ±HH:MM; undefined when it has none. */
export function tsOffset(ts: string | undefined): string | undefined {
  const m = ts ? TS.exec(ts.trim()) : null;
  return m?.[8] ? `${m[8].slice(0, 3)}:${m[8].slice(3)}` : undefined;
}

/**
 * Converts an HL7 TS to FHIR. Precision to the day or coarser gives a FHIR date (no zone needed); with a time it
 * gives a dateTime with seconds and a zone. Returns undefined when the text is not a valid TS.
 */
export function hl7TsToFhir(ts: string | undefined, options: { fallbackOffset?: string; defaultZone?: string } = {}): string | undefined {
  if (!ts) return undefined;
  const m = TS.exec(ts.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, off] = m;
  const month = mo ? Number(mo) : 1;
  const day = d ? Number(d) : 1;
  if (month < 1 || month > 12) return undefined;
  const check = new Date(Date.UTC(Number(y), month - 1, day));
  if (check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) return undefined;
  if (!h) return [y, mo, d].filter(Boolean).join('-');
  const hour = Number(h);
  const minute = mi ? Number(mi) : 0;
  const second = s ? Number(s) : 0;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  if (off && (Number(off.slice(1, 3)) > 14 || Number(off.slice(3)) > 59)) return undefined;
  const time = `${h}:${mi ?? '00'}:${s ?? '00'}${frac ? '.' + frac : ''}`;
  let zone: string;
  if (off) zone = `${off.slice(0, 3)}:${off.slice(3)}`;
  else if (options.fallbackOffset) zone = options.fallbackOffset;
  else {
    const local = Date.UTC(Number(y), month - 1, day, hour, minute, second);
    zone = formatOffset(offsetForLocal(options.defaultZone ?? 'UTC', local));
  }
  return `${y}-${mo}-${d}T${time}${zone}`;
}

/** Current time as an HL7 DTM with offset (for MSH-7 of ACKs): YYYYMMDDHHMMSS+0000. */
export function nowHl7(date = new Date()): string {
  const iso = date.toISOString();
  return iso.slice(0, 19).replace(/[-T:]/g, '') + '+0000';
}
