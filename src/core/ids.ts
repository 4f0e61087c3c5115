/**
 * Deterministic identifiers: the same content gives the same id in every process and on every retry, which is what
 * makes a replay or a redelivery harmless (job ids, resource ids, conditional-create identifiers, lock keys).
 */
import { hash } from 'node:crypto';

/** The UUID variant digit (RFC 4122, 10xx) for each first hex digit of byte 8: its two high bits set to 10. */
const VARIANT = '89ab89ab89ab89ab';

/**
 * A UUID (version 5 layout) derived from a SHA-256 of the parts: stable across processes and retries. The first 16
 * bytes of the digest, with the version nibble set to 5 and the variant bits to 10 (as a version 5 UUID has them).
 * One-shot `crypto.hash` to hex and string slices: a Hash object, a Buffer and its edits cost several times more
 * (the HL7 path makes one per Observation).
 */
export function deterministicUuid(...parts: string[]): string {
  const x = hash('sha256', parts.join('\u001f'), 'hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-5${x.slice(13, 16)}-${VARIANT[Number.parseInt(x[16], 16)]}${x.slice(17, 20)}-${x.slice(20, 32)}`;
}

/** A 128-bit hex key of the parts (job ids, Redis keys). */
export function hashKey(...parts: string[]): string {
  return hash('sha256', parts.join('\u001f'), 'hex').slice(0, 32);
}

/**
 * The syntax of a device id, the registry's key (POST /api/devices refuses any other): 1 to 128 ASCII characters,
 * letters, digits and `. _ : / -`, starting with a letter or digit. The same rule holds for a device id arriving on any
 * channel (a JSON deviceId, an MQTT topic level, HL7 OBX-18 or MSH-3), so that data never auto-registers a device the
 * registry could not name. `_` and `/` are in it because the gateway derives such ids itself (an HL7 sending
 * application "ACME_GW", an MDS instance "<EUI-64>/mds1").
 */
export const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

/** The syntax of a patient identifier value (a reading's patient, a device's assigned patient, HL7 PID-3): as DEVICE_ID. */
export const PATIENT_ID = DEVICE_ID;

export const ID_MAX_LENGTH = 128;

/**
 * Why `value` is not a valid device or patient id, or undefined when it is. The reason never quotes the value (a patient
 * identifier is PHI); it names the first character that is not allowed by position and code point. U+FFFD is said for
 * what it usually is: bytes that were not valid UTF-8, replaced by a decoder (two different byte sequences would
 * otherwise become one id).
 */
export function idSyntaxProblem(value: string, rule: RegExp = DEVICE_ID): string | undefined {
  if (rule.test(value)) return undefined;
  if (value.length === 0) return 'is empty';
  const chars = [...value];
  if (chars.length > ID_MAX_LENGTH) return `is ${chars.length} characters long (at most ${ID_MAX_LENGTH})`;
  const bad = chars.findIndex((c, i) => !(i === 0 ? /^[A-Za-z0-9]$/ : /^[A-Za-z0-9._:/-]$/).test(c));
  const c = chars[bad] ?? '';
  const cp = `U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
  const what =
    c === '\uFFFD'
      ? `${cp}, the replacement character: the bytes were not valid UTF-8`
      : /\p{Cc}/u.test(c)
        ? `${cp}, a control character`
        : bad === 0
          ? `${cp}: it must start with a letter or digit`
          : `${cp}: only letters, digits and . _ : / - are allowed`;
  return `has a character that is not allowed at position ${bad + 1} (${what})`;
}
