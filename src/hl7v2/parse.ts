/**
 * HL7v2 parsing, wrapped so that the rest of the gateway never sees the quirks of the `hl7v2` package (1.8.0).
 *
 * What this wrapper does around the package, and why (each found by trying it):
 * - Bytes → text: the package picks a decoder from MSH-18 itself but knows no fallback. We decode here: a UTF-8 BOM
 *   forces UTF-8 and is removed; MSH-18 (ASCII, 8859/n, UNICODE UTF-8, …) chooses the decoder; without MSH-18 the
 *   configured default applies, and when that default is UTF-8 but the bytes are not valid UTF-8 we fall back to
 *   ISO-8859-1 (the usual case of a legacy sender that omits MSH-18) instead of producing U+FFFD.
 * - Segment separators: the package treats LF-separated segments as one segment; we normalise CR, LF and CRLF to CR.
 * - Batches: the package requires MSH first; FHS/BHS/BTS/FTS envelopes (with or without trailers) are split here.
 * - MSH: the package accepts a message truncated inside MSH; we check MSH ourselves (encoding characters, MSH-9,
 *   MSH-10, MSH-12) and refuse with an HL7 error code (table 0357) so the ACK can say what is wrong.
 * - Escapes: the package's un-escaping matches only a backslash (ignoring a custom escape character from MSH-2), does
 *   not know `\.br\` and friends, and decodes `\Xhh\` as UTF-8 whatever MSH-18 says. We hide every escape character
 *   from it (mapped to a private-use character before parsing) and decode all escapes ourselves afterwards.
 * - Data types: the package converts values by the dictionary's types (NM → number, TS/DTM re-formatted, losing the
 *   original text and in places the time zone). We parse with a copy of the dictionaries whose decoders are removed,
 *   so every value stays the text that was sent.
 * - Sub-components: the package splits sub-components only where its dictionary says the component is composite; we
 *   split every component on the sub-component separator so the structure does not depend on the dictionary.
 * - Explicit nulls (`""`) are kept as `null`, distinct from an empty (absent) value.
 * - Cost: the package builds several objects per field, repetition and component (measured: about 5 µs and 700 bytes
 *   per repetition, so one 1 MB field of `~` took 5 s and 740 MB of heap). Before the package sees a message, one
 *   linear scan (`checkLimits`) counts segments, fields, repetitions, components and sub-components against
 *   `ParseLimits` and refuses a message over any of them with an error that names the limit. This bounds the time and
 *   memory of a parse whatever the bytes are. The fast path (below) counts the same as it splits, and leaves the
 *   refusal to `checkLimits` when a count passes a limit.
 *
 * - Speed: with escapes hidden and decoders removed, what is left of the package's work is splitting, and it did that
 *   through an object per field, repetition, component and sub-component, each looking its definition up in the
 *   dictionary (measured: 2/3 of the gateway's HL7 time). `splitFast` splits directly, in one pass over the
 *   characters, and gives the same result; it declines, and the package parses, only where the package's answer
 *   depends on its dictionary or where it may refuse (see there). `test/hl7v2/parse-fast.test.ts` compares the two on
 *   every sample and on generated messages, with and without small limits.
 *
 * - Memory: the package and its dictionaries cost about 130 MiB of RSS once loaded (measured), and the fast path
 *   parses every ordinary message. So the package is loaded on demand, by `loadHl7Package`, the first time a message
 *   needs it: `parseMessage` (synchronous) throws `Hl7PackageNotLoaded` for such a message until then, and
 *   `parseMessageAsync` (what the MLLP session and the adapter use) loads the package and parses again. A gateway
 *   that never meets such a message never loads the package.
 *
 * The result is a plain, JSON-serialisable `Hl7Message`: segments → fields → repetitions → components →
 * sub-components, every leaf a decoded string or null.
 */
import type { HL7Message as PkgMessage } from 'hl7v2';
import type { HL7Dictionary } from 'hl7v2-dictionary';
import { GatewayError, issue, outcome } from '../core/errors.js';

/** A leaf value: decoded text, or null for an explicit HL7 null (`""`). Absent values are '' or missing. */
export type Sub = string | null;
/** A field: repetitions → components → sub-components. */
export type Hl7Field = Sub[][][];

export interface Hl7Segment {
  name: string;
  /** fields[n] is field n (1-based; fields[0] is unused). MSH-1 and MSH-2 hold the delimiters as sent. */
  fields: Hl7Field[];
}

export interface Delimiters {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subComponent: string;
}

/** MSH as needed for routing and acknowledgement. `raw[n]` is MSH-n exactly as sent (still escaped). */
export interface MshHeader {
  delimiters: Delimiters;
  raw: string[];
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication: string;
  receivingFacility: string;
  dateTime: string;
  messageCode: string;
  triggerEvent: string;
  messageStructure: string;
  controlId: string;
  processingId: string;
  version: string;
  acceptAckType: string;
  appAckType: string;
  charset: string;
  /** MSH-21 message profile identifiers (first component of each repetition). */
  profiles: string[];
}

export interface Hl7Message {
  header: MshHeader;
  segments: Hl7Segment[];
  /** The decoded message text, segments separated by CR. */
  text: string;
  /** The character set used to decode the bytes. */
  charset: string;
}

/** HL7 table 0357 error codes used by the gateway. */
export const Hl7ErrorCode = {
  segmentSequence: 100,
  requiredFieldMissing: 101,
  dataType: 102,
  tableValueNotFound: 103,
  unsupportedMessageType: 200,
  unsupportedEventCode: 201,
  unsupportedProcessingId: 202,
  unsupportedVersion: 203,
  applicationInternalError: 207,
} as const;
export type Hl7ErrorCode = (typeof Hl7ErrorCode)[keyof typeof Hl7ErrorCode];

export const HL7_ERROR_TEXT: Record<Hl7ErrorCode, string> = {
  100: 'Segment sequence error',
  101: 'Required field missing',
  102: 'Data type error',
  103: 'Table value not found',
  200: 'Unsupported message type',
  201: 'Unsupported event code',
  202: 'Unsupported processing id',
  203: 'Unsupported version id',
  207: 'Application internal error',
};

/** Where an error is (ERR-2 / ERL): segment id, its sequence (1-based), field, component. */
export interface ErrLocation {
  segment: string;
  sequence?: number;
  field?: number;
  component?: number;
}

export class Hl7ParseError extends Error {
  constructor(
    message: string,
    readonly code: Hl7ErrorCode,
    readonly location?: ErrLocation,
    /** The header, when MSH could be read: the ACK echoes MSH-10 and uses the sender's delimiters. */
    readonly header?: MshHeader,
  ) {
    super(message);
    this.name = 'Hl7ParseError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Bytes → text

/** MSH-18 values (HL7 table 0211) → WHATWG decoder labels (Node's TextDecoder, full ICU). */
const CHARSETS: Record<string, string> = {
  ASCII: 'ascii',
  '8859/1': 'latin1',
  '8859/2': 'iso-8859-2',
  '8859/3': 'iso-8859-3',
  '8859/4': 'iso-8859-4',
  '8859/5': 'iso-8859-5',
  '8859/6': 'iso-8859-6',
  '8859/7': 'iso-8859-7',
  '8859/8': 'iso-8859-8',
  '8859/9': 'iso-8859-9',
  '8859/15': 'iso-8859-15',
  'UNICODE UTF-8': 'utf-8',
  'UTF-8': 'utf-8',
  'UNICODE UTF-16': 'utf-16le',
  UNICODE: 'utf-16le',
  'GB 18030-2000': 'gb18030',
  'KS X 1001': 'euc-kr',
  'BIG-5': 'big5',
};
export const SUPPORTED_CHARSETS = Object.keys(CHARSETS);

/** The decoder label of an MSH-18 name; undefined when unknown (own entries only: 'toString' names no charset). */
export function charsetLabel(name: string): string | undefined {
  return ownCharset(name.trim().toUpperCase()) ?? ownCharset(name.trim());
}

function ownCharset(k: string): string | undefined {
  return Object.hasOwn(CHARSETS, k) ? CHARSETS[k] : undefined;
}

function decodeWith(label: string, bytes: Buffer): string {
  // Node's Buffer 'latin1' is ISO-8859-1 proper; TextDecoder('latin1') would be windows-1252.
  if (label === 'latin1' || label === 'ascii') return bytes.toString('latin1');
  let decoder = decoders.get(label);
  if (!decoder) decoders.set(label, (decoder = new TextDecoder(label)));
  return decoder.decode(bytes);
}

/** One decoder per label: decoding without `stream` keeps no state from one call to the next. */
const decoders = new Map<string, TextDecoder>();

/** Reads MSH-18 (first component of the first repetition) from the raw bytes, before decoding. */
function declaredCharset(bytes: Buffer): string | undefined {
  const cr = bytes.indexOf(0x0d);
  const lf = bytes.indexOf(0x0a);
  const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
  const line = bytes.subarray(0, end < 0 ? Math.min(bytes.length, 4096) : end).toString('latin1');
  const i = line.indexOf('MSH');
  if (i < 0 || line.length < i + 8) return undefined;
  const fs = line[i + 3];
  const parts = line.slice(i).split(fs);
  const enc = parts[1] ?? '';
  const f18 = parts[17];
  if (!f18) return undefined;
  const first = f18
    .split(enc[1] ?? '~')[0]
    .split(enc[0] ?? '^')[0]
    .trim();
  return first || undefined;
}

/** As `decoders`: one decoder serves every message. */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

export interface Decoded {
  text: string;
  /** The MSH-18 name (or the default) that was used. */
  charset: string;
}

/**
 * Decodes the bytes of one frame or file: BOM, MSH-18, default. A batch's FHS has no MSH-18, so the first MSH found
 * decides for the whole payload (a batch carries one character set).
 */
export function decodeBytes(bytes: Buffer, defaultCharset = 'UNICODE UTF-8'): Decoded {
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
    return { text: new TextDecoder('utf-8').decode(bytes.subarray(3)), charset: 'UNICODE UTF-8' };
  }
  if (bytes.length >= 2 && bytes[0] === 0xff && bytes[1] === 0xfe) {
    return { text: new TextDecoder('utf-16le').decode(bytes.subarray(2)), charset: 'UNICODE UTF-16' };
  }
  const mshAt = bytes.indexOf('MSH');
  const declared = mshAt >= 0 ? declaredCharset(bytes.subarray(mshAt)) : undefined;
  const declaredLabel = declared ? charsetLabel(declared) : undefined;
  if (declared && declaredLabel) return { text: decodeWith(declaredLabel, bytes), charset: declared };
  const defLabel = charsetLabel(defaultCharset) ?? 'utf-8';
  if (defLabel === 'utf-8') {
    try {
      return { text: STRICT_UTF8.decode(bytes), charset: 'UNICODE UTF-8' };
    } catch {
      // Not valid UTF-8: a legacy sender without MSH-18. ISO-8859-1 maps every byte, so nothing is lost.
      return { text: bytes.toString('latin1'), charset: '8859/1' };
    }
  }
  return { text: decodeWith(defLabel, bytes), charset: defaultCharset };
}

/** Encodes an outgoing message (an ACK) in the character set of the message it answers. */
export function encodeText(text: string, charset: string | undefined): Buffer {
  const label = charset ? charsetLabel(charset) : 'utf-8';
  if (label === 'latin1') return Buffer.from(text.replace(/[^\u0000-\u00ff]/g, '?'), 'latin1');
  if (label === 'ascii') return Buffer.from(text.replace(/[^\u0000-\u007f]/g, '?'), 'latin1');
  if (label === 'utf-16le') return Buffer.from(text, 'utf16le');
  if (!label || label === 'utf-8') return Buffer.from(text, 'utf8');
  // Other single-byte sets: ASCII is common to all of them.
  return Buffer.from(text.replace(/[^\u0000-\u007f]/g, '?'), 'latin1');
}

// ---------------------------------------------------------------------------------------------------------------
// Batches and message boundaries

export interface SplitResult {
  /**
   * Each message's text (segments separated by CR), in order. Lines before the first MSH are dropped (counted in
   * `skippedLines`) when the payload holds a message; a payload without any MSH is returned as one entry, which then
   * fails the MSH check (AR).
   */
  messages: string[];
  skippedLines?: number;
  /** Present when the payload used batch envelopes (FHS/BHS). */
  batch?: { fhs?: string; bhs?: string };
}

/** Normalises CR, LF and CRLF to CR; strips MLLP control bytes and blank lines. */
export function normaliseSegments(text: string): string[] {
  const clean = text.includes('\u000b') || text.includes('\u001c') ? text.replace(/[\u000b\u001c]/g, '') : text;
  // Without an LF, the segments are separated by CR alone.
  const lines = clean.includes('\n') ? clean.split(/\r\n|\n\r|\r|\n/) : clean.split('\r');
  const out: string[] = [];
  for (const line of lines) {
    const l = line.startsWith(' ') || line.startsWith('\t') ? line.replace(/^[ \t]+/, '') : line;
    if (l.trim() !== '') out.push(l);
  }
  return out;
}

/** Splits a payload into messages: one message, several, or a batch (FHS/BHS…BTS/FTS, trailers optional). */
export function splitMessages(text: string): SplitResult {
  const lines = normaliseSegments(text);
  const messages: string[][] = [];
  const leading: string[] = [];
  let current: string[] | undefined;
  let batch: SplitResult['batch'];
  for (const line of lines) {
    const tag = line.slice(0, 3);
    if (tag === 'FHS' || tag === 'BHS') {
      batch ??= {};
      batch[tag === 'FHS' ? 'fhs' : 'bhs'] = line;
      current = undefined;
      continue;
    }
    if (tag === 'BTS' || tag === 'FTS') {
      current = undefined;
      continue;
    }
    if (tag === 'MSH') {
      current = [line];
      messages.push(current);
      continue;
    }
    if (!current) {
      if (!messages.length) leading.push(line);
      continue; // a stray segment between BTS and the next header: nothing to attach it to
    }
    current.push(line);
  }
  if (!messages.length && leading.length) return { messages: [leading.join('\r') + '\r'], batch };
  return { messages: messages.map((m) => m.join('\r') + '\r'), batch, ...(leading.length ? { skippedLines: leading.length } : {}) };
}

// ---------------------------------------------------------------------------------------------------------------
// MSH

const MSH_FIELDS_READ = 64;

/** Reads and checks MSH without the package: it must be readable even when the rest of the message is not. */
export function readHeader(messageText: string): MshHeader {
  const first = messageText.split('\r', 1)[0] ?? '';
  if (!first.startsWith('MSH')) {
    throw new Hl7ParseError(`the message must start with an MSH segment (found '${first.slice(0, 3)}')`, Hl7ErrorCode.segmentSequence, {
      segment: 'MSH',
      sequence: 1,
    });
  }
  const fs = first[3];
  if (!fs || /[A-Za-z0-9\s]/.test(fs))
    throw new Hl7ParseError('MSH-1 (field separator) is missing or invalid', Hl7ErrorCode.requiredFieldMissing, {
      segment: 'MSH',
      sequence: 1,
      field: 1,
    });
  // MSH has at most 28 fields (v2.9): a header with many more is not split further (a 1 MB MSH of field separators
  // must not become a million strings before the parser limits are checked).
  const parts = first.split(fs, MSH_FIELDS_READ);
  const enc = parts[1] ?? '';
  const delims = [fs, ...enc.slice(0, 4)];
  if (enc.length < 4 || new Set(delims).size !== 5 || /[A-Za-z0-9\s]/.test(enc.slice(0, 4))) {
    throw new Hl7ParseError(`MSH-2 (encoding characters) '${enc}' must hold four distinct delimiter characters`, Hl7ErrorCode.dataType, {
      segment: 'MSH',
      sequence: 1,
      field: 2,
    });
  }
  const d: Delimiters = { field: fs, component: enc[0], repetition: enc[1], escape: enc[2], subComponent: enc[3] };
  // raw[n] = MSH-n
  const raw: string[] = ['', fs, ...parts.slice(1)];
  const split: string[][] = [];
  const header: MshHeader = {
    delimiters: d,
    raw,
    sendingApplication: raw[3] ?? '',
    sendingFacility: raw[4] ?? '',
    receivingApplication: raw[5] ?? '',
    receivingFacility: raw[6] ?? '',
    dateTime: mshComponent(raw, split, d, 7, 1),
    messageCode: mshComponent(raw, split, d, 9, 1).toUpperCase(),
    triggerEvent: mshComponent(raw, split, d, 9, 2).toUpperCase(),
    messageStructure: mshComponent(raw, split, d, 9, 3).toUpperCase(),
    controlId: mshComponent(raw, split, d, 10, 1),
    processingId: mshComponent(raw, split, d, 11, 1),
    version: mshComponent(raw, split, d, 12, 1),
    acceptAckType: mshComponent(raw, split, d, 15, 1).toUpperCase(),
    appAckType: mshComponent(raw, split, d, 16, 1).toUpperCase(),
    charset: mshComponent(raw, split, d, 18, 1),
    profiles: (raw[21] ?? '')
      .split(d.repetition)
      .map((r) => unescapeText(r.split(d.component)[0] ?? '', d).trim())
      .filter(Boolean),
  };
  if (!header.messageCode)
    throw new Hl7ParseError(
      'MSH-9 (message type) is missing',
      Hl7ErrorCode.requiredFieldMissing,
      { segment: 'MSH', sequence: 1, field: 9 },
      header,
    );
  if (!header.controlId)
    throw new Hl7ParseError(
      'MSH-10 (message control id) is missing',
      Hl7ErrorCode.requiredFieldMissing,
      { segment: 'MSH', sequence: 1, field: 10 },
      header,
    );
  if (!header.version)
    throw new Hl7ParseError(
      'MSH-12 (version id) is missing',
      Hl7ErrorCode.requiredFieldMissing,
      { segment: 'MSH', sequence: 1, field: 12 },
      header,
    );
  return header;
}

/**
 * Component `comp` of the first repetition of MSH-n, unescaped and trimmed. `split` keeps each field's components, so
 * that a field read several times (MSH-9) is split once.
 */
function mshComponent(raw: string[], split: string[][], d: Delimiters, n: number, comp: number): string {
  split[n] ??= (raw[n] ?? '').split(d.repetition, 1)[0].split(d.component);
  return unescapeText(split[n][comp - 1] ?? '', d).trim();
}

// ---------------------------------------------------------------------------------------------------------------
// Escapes

/** The escape character as the package sees it (it never sees the real one, see the file comment). */
const HIDDEN_ESC = '\ue000';
/** A literal backslash in data when the escape character is not a backslash. */
const HIDDEN_BACKSLASH = '\ue001';

/**
 * Decodes all HL7 escape sequences in one leaf value: \F\ \S\ \T\ \R\ \E\, \Xhh…\ (bytes in the message's character
 * set), \.br\ (and the other formatting commands) and \H\ \N\ (highlighting, dropped). Unknown sequences are dropped,
 * as the standard asks.
 */
export function unescapeText(value: string, d: Delimiters, escape = d.escape, charset?: string): string {
  if (!value.includes(escape)) return value;
  let out = '';
  let i = 0;
  while (i < value.length) {
    const ch = value[i];
    if (ch !== escape) {
      out += ch;
      i++;
      continue;
    }
    const end = value.indexOf(escape, i + 1);
    if (end < 0) {
      out += value.slice(i); // an unterminated escape is data
      break;
    }
    const seq = value.slice(i + 1, end);
    i = end + 1;
    switch (seq) {
      case 'F':
        out += d.field;
        continue;
      case 'S':
        out += d.component;
        continue;
      case 'T':
        out += d.subComponent;
        continue;
      case 'R':
        out += d.repetition;
        continue;
      case 'E':
        out += d.escape;
        continue;
      case 'H':
      case 'N':
        continue;
      default:
        break;
    }
    if (/^X([0-9A-Fa-f]{2})+$/.test(seq)) {
      const bytes = Buffer.from(seq.slice(1), 'hex');
      const label = charset ? charsetLabel(charset) : undefined;
      out += label && label !== 'utf-8' ? decodeWith(label, bytes) : new TextDecoder('utf-8').decode(bytes);
      continue;
    }
    if (seq === '.br' || seq.startsWith('.sp')) {
      out += '\n';
      continue;
    }
    // .fi .nf .in .ti .sk .ce, \Cxxyy\, \Mxxyyzz\, \Zxx\: formatting or locally defined, dropped.
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The package, loaded on demand, with decoders removed

interface Hl7Package {
  Message: typeof PkgMessage;
  dictionaries: Record<string, HL7Dictionary>;
}

let pkg: Hl7Package | undefined;
let loading: Promise<Hl7Package> | undefined;

/**
 * Thrown by the synchronous parse where the fast path declines and the package is not loaded yet: call
 * `loadHl7Package()` and parse again (`parseMessageAsync` and `withHl7Package` do both). Never reaches a sender.
 */
export class Hl7PackageNotLoaded extends Error {
  constructor() {
    super('this message needs the hl7v2 package, which is not loaded yet (loadHl7Package)');
    this.name = 'Hl7PackageNotLoaded';
  }
}

/**
 * Loads the `hl7v2` package and its dictionaries (once; about half a second and 130 MiB). A failure is the gateway's
 * own, retryable error (500), and a later call tries again.
 */
export function loadHl7Package(): Promise<void> {
  loading ??= Promise.all([import('hl7v2'), import('hl7v2-dictionary')]).then(
    ([h, d]) => {
      pkg = { Message: h.HL7Message, dictionaries: plainCopies(d.dictionaries as Record<string, HL7Dictionary>) };
      return pkg;
    },
    (err: unknown) => {
      loading = undefined;
      throw new GatewayError(500, outcome([issue('exception', 'the HL7v2 parser could not be loaded')]), { cause: err });
    },
  );
  return loading.then(() => undefined);
}

/** Whether the package is loaded (tests, and the memory test of the roles). */
export function hl7PackageLoaded(): boolean {
  return pkg !== undefined;
}

/** Runs `fn`, a synchronous use of the parser; where it needed the package, loads the package and runs it again. */
export async function withHl7Package<T>(fn: () => T): Promise<T> {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof Hl7PackageNotLoaded)) throw err;
    await loadHl7Package();
    return fn();
  }
}

function stripDecoders(defs: Record<string, unknown> | undefined): void {
  for (const def of Object.values(defs ?? {})) {
    if (!def || typeof def !== 'object') continue;
    const o = def as { decode?: unknown; fields?: Record<string, unknown> };
    delete o.decode;
    if (o.fields) stripDecoders(o.fields);
  }
}

/** Copies of the package's dictionaries in which no data type converts values (all values stay text). */
function plainCopies(dictionaries: Record<string, HL7Dictionary>): Record<string, HL7Dictionary> {
  const out: Record<string, HL7Dictionary> = {};
  for (const [version, dict] of Object.entries(dictionaries)) {
    const copy = dict.extend({});
    stripDecoders(copy.types as unknown as Record<string, unknown>);
    for (const seg of Object.values(copy.segments as unknown as Record<string, { fields?: Record<string, unknown> }>))
      stripDecoders(seg.fields);
    out[version] = copy;
  }
  return out;
}

/**
 * Structural limits per message, checked by one cheap scan before the package parses (see the file comment). The
 * defaults leave room for any ordinary message: a PCD-01 message uses a few hundred elements, a waveform (OBX-5 of
 * type NA) one component per sample.
 */
export interface ParseLimits {
  /** Segments in one message. */
  segments: number;
  /** Fields in one segment. */
  fields: number;
  /** Repetitions of one field. */
  repetitions: number;
  /** Components in one repetition. */
  components: number;
  /** Sub-components in one component. */
  subComponents: number;
  /** Fields, repetitions, components and sub-components of the whole message, in all. */
  elements: number;
}

export const DEFAULT_PARSE_LIMITS: Readonly<ParseLimits> = {
  segments: 1000,
  fields: 256,
  repetitions: 100,
  components: 10000,
  subComponents: 100,
  elements: 20000,
};

/** The configuration key of each limit (named in the refusal, so that the sender's operator knows what to ask). */
export const PARSE_LIMIT_KEYS: Readonly<Record<keyof ParseLimits, string>> = {
  segments: 'HL7_MAX_SEGMENTS',
  fields: 'HL7_MAX_FIELDS',
  repetitions: 'HL7_MAX_REPETITIONS',
  components: 'HL7_MAX_COMPONENTS',
  subComponents: 'HL7_MAX_SUBCOMPONENTS',
  elements: 'HL7_MAX_ELEMENTS',
};

/**
 * Counts the structure of one message (segments separated by CR, MSH first) in one pass over its characters and
 * throws an Hl7ParseError (207, located, naming the limit's key) at the first limit exceeded. Escaped delimiters
 * (\F\, \S\, …) are letters, so every raw delimiter character counts.
 */
export function checkLimits(text: string, header: MshHeader, limits: ParseLimits = DEFAULT_PARSE_LIMITS): void {
  const d = header.delimiters;
  const F = d.field.charCodeAt(0);
  const C = d.component.charCodeAt(0);
  const R = d.repetition.charCodeAt(0);
  const S = d.subComponent.charCodeAt(0);
  let segments = 1;
  let segStart = 0;
  let seg = 'MSH';
  /** The occurrence of this segment id in the message (ERR-2.2 counts per segment id). */
  let sequence = 1;
  const seen = new Map<string, number>([['MSH', 1]]);
  let field = 2;
  let rep = 1;
  let comp = 1;
  let sub = 1;
  let elements = 0;
  const fail = (limit: keyof ParseLimits, what: string, location: Omit<ErrLocation, 'segment' | 'sequence'> = {}): never => {
    throw new Hl7ParseError(
      `the message exceeds a parser limit: ${what} (${PARSE_LIMIT_KEYS[limit]} = ${limits[limit]}); it was not processed`,
      Hl7ErrorCode.applicationInternalError,
      { segment: seg, sequence, ...location },
      header,
    );
  };
  // MSH-1 and MSH-2 hold the delimiters themselves: the scan starts after them, inside MSH-2.
  const start = 4 + (header.raw[2]?.length ?? 4);
  for (let i = start; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 13) {
      if (i + 1 >= text.length || text.charCodeAt(i + 1) === 13) continue;
      segStart = i + 1;
      seg = text.slice(segStart, segStart + 3);
      sequence = (seen.get(seg) ?? 0) + 1;
      if (seen.size < 1000 || seen.has(seg)) seen.set(seg, sequence);
      if (++segments > limits.segments) fail('segments', `it has more than ${limits.segments} segments`);
      field = 0;
      rep = comp = sub = 1;
      continue;
    }
    if (ch === F) {
      rep = comp = sub = 1;
      if (++field > limits.fields) fail('fields', `${seg} has more than ${limits.fields} fields`);
    } else if (ch === R) {
      comp = sub = 1;
      if (++rep > limits.repetitions) fail('repetitions', `${seg}-${field} has more than ${limits.repetitions} repetitions`, { field });
    } else if (ch === C) {
      sub = 1;
      if (++comp > limits.components)
        fail('components', `${seg}-${field} has more than ${limits.components} components in one repetition`, { field });
    } else if (ch === S) {
      if (++sub > limits.subComponents)
        fail('subComponents', `${seg}-${field}.${comp} has more than ${limits.subComponents} sub-components`, {
          field,
          component: comp,
        });
    } else continue;
    if (++elements > limits.elements)
      fail('elements', `it has more than ${limits.elements} fields, repetitions, components and sub-components in all`, { field });
  }
}

export interface ParseOptions {
  /** Character set the text was decoded from (for \Xhh\ escapes). */
  charset?: string;
  /** Structural limits (default DEFAULT_PARSE_LIMITS). */
  limits?: ParseLimits;
  /** What `readHeader` gave for this same text, when the caller has read it already (it is not read again). */
  header?: MshHeader;
}

/**
 * Parses one message's text (segments separated by CR, LF or CRLF). Throws Hl7ParseError, or Hl7PackageNotLoaded
 * for a message the fast path declines before `loadHl7Package()` (see `parseMessageAsync`).
 */
export function parseMessage(messageText: string, options: ParseOptions = {}): Hl7Message {
  return parseWith(messageText, options, 'auto') as Hl7Message;
}

/** `parseMessage`, loading the package first where the message needs it. Throws Hl7ParseError or a GatewayError (500). */
export function parseMessageAsync(messageText: string, options: ParseOptions = {}): Promise<Hl7Message> {
  return withHl7Package(() => parseMessage(messageText, options));
}

/**
 * The same as `parseMessage`, always through the package (never the fast path). The gateway uses the package only
 * where the fast path declines (see `splitFast`); the differential tests compare the two on every sample. Needs
 * `loadHl7Package()` first.
 */
export function parseMessageWithPackage(messageText: string, options: ParseOptions = {}): Hl7Message {
  return parseWith(messageText, options, 'package') as Hl7Message;
}

/** The fast path alone: undefined where it declines and `parseMessage` would hand the message to the package. */
export function parseMessageFast(messageText: string, options: ParseOptions = {}): Hl7Message | undefined {
  return parseWith(messageText, options, 'fast');
}

/**
 * Whether `normaliseSegments(text).join('\r') + '\r'` would be `text` itself: segments ended by CR, none empty or blank
 * (`\s` is what trim() removes) or starting with a space or tab, no LF and no MLLP control bytes. What splitMessages
 * gives is, so a message is not normalised twice.
 */
export function isNormalised(text: string): boolean {
  if (!text.endsWith('\r') || text.includes('\n') || text.includes('\u000b') || text.includes('\u001c')) return false;
  // Each segment's first character: not a space or tab, not the CR of an empty segment, not the start of a blank one.
  for (let start = 0; start < text.length; start = text.indexOf('\r', start) + 1) {
    const ch = text.charCodeAt(start);
    if (ch === 32 || ch === 9 || ch === 13) return false;
    if ((ch < 33 || ch > 126) && BLANK_SEGMENT.test(text.slice(start, text.indexOf('\r', start)))) return false;
  }
  return true;
}
const BLANK_SEGMENT = /^\s*$/;

function parseWith(messageText: string, options: ParseOptions, path: 'auto' | 'package' | 'fast'): Hl7Message | undefined {
  const normalised = isNormalised(messageText);
  const text = normalised ? messageText : normaliseSegments(messageText).join('\r') + '\r';
  const header = normalised && options.header ? options.header : readHeader(text);
  const limits = options.limits ?? DEFAULT_PARSE_LIMITS;
  const charset = options.charset ?? (header.charset || undefined);
  // The fast path counts the structure as it splits and calls checkLimits (which throws the located error) only when a
  // limit is passed; before the package, checkLimits runs in full, as it bounds what the package is given.
  let segments = path === 'package' ? undefined : splitFast(text, header, charset, limits);
  if (!segments) {
    checkLimits(text, header, limits);
    if (path === 'fast') return undefined;
    segments = parseSegmentsWithPackage(text, header, charset);
  }
  return { header, segments, text, charset: charset ?? 'UNICODE UTF-8' };
}

const SEGMENT_ID = /^[A-Z][A-Z0-9]{2}$/;
/** Thrown inside `splitFast` when the package's answer would depend on its dictionary: the package decides. */
const DECLINE = Symbol('decline');
/** Thrown inside `splitFast` when a count passes a parser limit: checkLimits finds it again and throws its error. */
const OVER_LIMIT = Symbol('over-limit');

/**
 * The fast path (measured: the package spent about 2/3 of the gateway's HL7 parse time building its object model
 * and re-reading its dictionary per component, see docs/hl7v2.md "Performance"). With decoders removed and escapes
 * hidden, what the package does to a segment is plain splitting — fields on MSH-1, repetitions, components,
 * sub-components — with `""` read as null; this function does that splitting directly and gives the same result.
 * It declines (returns undefined, and the package parses) where the package's result depends on its dictionary or
 * where the package refuses:
 * - a sub-component that is exactly `""` inside a component that has sub-components (the package reads it as null
 *   where its dictionary calls the component composite, and as the text `""` where it calls it primitive);
 * - a segment id that is not three capitals/digits (the package may throw on it; then the same error follows);
 * - the private-use characters the package path uses to hide escape characters.
 * It counts what checkLimits counts, at each delimiter, and where a count passes a limit lets checkLimits throw its
 * error (the same one: a limit is refused before either path gives a result).
 */
function splitFast(text: string, header: MshHeader, charset: string | undefined, limits: ParseLimits): Hl7Segment[] | undefined {
  if (text.includes('\ue000') || text.includes('\ue001')) return undefined;
  const d = header.delimiters;
  const segments: Hl7Segment[] = [];
  // What checkLimits counts, counted here at each delimiter instead of for each character; fields start at 2 in the
  // first MSH (its scan starts at MSH-2's end) and at 0 in other segments, where the separator after the id counts.
  const count = { elements: 0 };
  try {
    for (let ls = 0; ls < text.length; ) {
      let le = text.indexOf('\r', ls);
      if (le < 0) le = text.length;
      if (le === ls) {
        ls++;
        continue;
      }
      // The segment id: up to the first field separator (or the whole line). Searched within the line only, so that
      // many lines without one cost no more than their length.
      let p = ls;
      while (p < le && text[p] !== d.field) p++;
      const name = text.slice(ls, p);
      if (!SEGMENT_ID.test(name)) return undefined;
      if (segments.length && segments.length >= limits.segments) throw OVER_LIMIT;
      const fields: Hl7Field[] = [[]];
      let field = 0;
      if (name === 'MSH') {
        // As the package reads MSH: MSH-1 is the field separator, MSH-2 the encoding characters, then MSH-3…
        fields.push([[[d.field]]], [[[d.component + d.repetition + d.escape + d.subComponent]]]);
        if (!segments.length) field = 2;
        if (p < le) {
          let q = p + 1;
          while (q < le && text[q] !== d.field) q++;
          // In an MSH after the first, checkLimits counts the separator after the id and the delimiters of MSH-2.
          if (segments.length) {
            if (++field > limits.fields || ++count.elements > limits.elements) throw OVER_LIMIT;
            countDelimiters(text, p + 1, q, d, limits, count);
          }
          p = q;
        }
      }
      if (p < le) {
        if (++field > limits.fields || ++count.elements > limits.elements) throw OVER_LIMIT;
        splitFields(text, p + 1, le, d, charset, fields, field, limits, count);
      }
      segments.push({ name, fields });
      ls = le + 1;
    }
  } catch (err) {
    if (err === DECLINE) return undefined;
    if (err === OVER_LIMIT) {
      checkLimits(text, header, limits); // throws
      return undefined; // (it did not: the package decides)
    }
    throw err;
  }
  return segments;
}

/** Counts the repetition, component and sub-component separators of text[from, to) (inside one field) as checkLimits does. */
function countDelimiters(text: string, from: number, to: number, d: Delimiters, limits: ParseLimits, count: { elements: number }): void {
  let rep = 1;
  let comp = 1;
  let sub = 1;
  for (let i = from; i < to; i++) {
    const ch = text[i];
    if (ch === d.repetition) {
      comp = sub = 1;
      if (++rep > limits.repetitions) throw OVER_LIMIT;
    } else if (ch === d.component) {
      sub = 1;
      if (++comp > limits.components) throw OVER_LIMIT;
    } else if (ch === d.subComponent) {
      if (++sub > limits.subComponents) throw OVER_LIMIT;
    } else continue;
    if (++count.elements > limits.elements) throw OVER_LIMIT;
  }
}

/**
 * Splits text[from, to) (the fields of one segment after its id, separated by the field separator) in one pass over
 * its characters into `fields`: fields, repetitions, components and sub-components, each leaf unescaped where it holds
 * the escape character. A component that is exactly `""` is null; a sub-component that is exactly `""` inside a
 * component with sub-components throws DECLINE (see `splitFast`). Counts as checkLimits does (`field` is the number of
 * the first field) and throws OVER_LIMIT where it would refuse.
 */
function splitFields(
  text: string,
  from: number,
  to: number,
  d: Delimiters,
  charset: string | undefined,
  fields: Hl7Field[],
  field: number,
  limits: ParseLimits,
  count: { elements: number },
): void {
  const F = d.field.charCodeAt(0);
  const C = d.component.charCodeAt(0);
  const R = d.repetition.charCodeAt(0);
  const S = d.subComponent.charCodeAt(0);
  const E = d.escape.charCodeAt(0);
  // The open repetitions, components and sub-components of the current field, component and repetition: built in
  // scratch arrays and copied out at their exact size (a growing array reserves 16 slots, and most hold one).
  const reps: Sub[][][] = [];
  const comps: Sub[][] = [];
  const subs: Sub[] = [];
  let nReps = 0;
  let nComps = 0;
  let nSubs = 0;
  let rep = 1;
  let comp = 1;
  let sub = 1;
  let start = from;
  let escaped = false;
  for (let i = from; ; i++) {
    // The end of the segment ends the last field.
    const ch = i < to ? text.charCodeAt(i) : F;
    if (ch !== F && ch !== C && ch !== R && ch !== S) {
      if (ch === E) escaped = true;
      continue;
    }
    if (i < to) {
      if (ch === F) {
        rep = comp = sub = 1;
        if (++field > limits.fields) throw OVER_LIMIT;
      } else if (ch === R) {
        comp = sub = 1;
        if (++rep > limits.repetitions) throw OVER_LIMIT;
      } else if (ch === C) {
        sub = 1;
        if (++comp > limits.components) throw OVER_LIMIT;
      } else if (++sub > limits.subComponents) throw OVER_LIMIT;
      if (++count.elements > limits.elements) throw OVER_LIMIT;
    }
    // A leaf ends here.
    let v: Sub = text.slice(start, i);
    if (v === '""') {
      if (ch === S || nSubs) throw DECLINE; // a null sub-component: the package's answer depends on its dictionary
      v = null;
    } else if (escaped) v = unescapeText(v, d, d.escape, charset);
    start = i + 1;
    escaped = false;
    subs[nSubs++] = v;
    if (ch === S) continue;
    const component = nSubs === 1 ? [v] : subs.slice(0, nSubs);
    nSubs = 0;
    comps[nComps++] = component;
    if (ch === C) continue;
    const repetition = nComps === 1 ? [component] : comps.slice(0, nComps);
    nComps = 0;
    reps[nReps++] = repetition;
    if (ch === R) continue;
    fields.push(nReps === 1 ? [repetition] : reps.slice(0, nReps));
    nReps = 0;
    if (i >= to) return;
  }
}

/** Parses the segments through the package (escapes hidden, decoders removed; see the file comment). */
function parseSegmentsWithPackage(text: string, header: MshHeader, charset: string | undefined): Hl7Segment[] {
  if (!pkg) throw new Hl7PackageNotLoaded();
  const d = header.delimiters;
  // Hide escape characters (and any other backslash) from the package; see the file comment.
  let hidden = text.replace(/[\ue000\ue001]/g, '\ufffd');
  if (d.escape === '\\') hidden = hidden.replaceAll('\\', HIDDEN_ESC);
  else hidden = hidden.replaceAll('\\', HIDDEN_BACKSLASH).replaceAll(d.escape, HIDDEN_ESC);
  let parsed: PkgMessage;
  try {
    parsed = pkg.Message.parse(hidden, { dictionaries: pkg.dictionaries });
  } catch (err) {
    const e = err as { message?: string; segmentType?: string; line?: number; fieldPosition?: number };
    throw new Hl7ParseError(
      `the message cannot be parsed: ${(e.message ?? String(err)).replaceAll(HIDDEN_ESC, d.escape)}`,
      Hl7ErrorCode.dataType,
      e.segmentType ? { segment: e.segmentType, field: e.fieldPosition } : undefined,
      header,
    );
  }
  const leaf = (v: unknown): Sub => {
    if (v === null) return null;
    if (v === undefined) return '';
    const s = Buffer.isBuffer(v) ? v.toString('latin1') : String(v);
    // An unterminated escape is data: it comes back hidden, and is the escape character again.
    const u = unescapeText(s, d, HIDDEN_ESC, charset).replaceAll(HIDDEN_ESC, d.escape);
    return d.escape === '\\' ? u : u.replaceAll(HIDDEN_BACKSLASH, '\\');
  };
  const segments: Hl7Segment[] = [];
  for (const seg of parsed.segments) {
    const name = seg.segmentType;
    if (!SEGMENT_ID.test(name)) {
      throw new Hl7ParseError(
        `'${name.slice(0, 10)}' is not a segment id`,
        Hl7ErrorCode.segmentSequence,
        { segment: name.slice(0, 3), sequence: segments.length + 1 },
        header,
      );
    }
    const fields: Hl7Field[] = [[]];
    seg.fields.forEach((field, i) => {
      if (!field) {
        fields[i + 1] = [];
        return;
      }
      fields[i + 1] = field.repetitions.map((rep) =>
        (rep.components ?? []).map((comp) => {
          if (!comp) return [''];
          const subs = comp.isPrimitive ? [comp.getValue()] : (comp.subComponents ?? []).map((s) => s?.value);
          // Split primitive components on the sub-component separator too (escaped data cannot contain it).
          return subs.flatMap((s) => (typeof s === 'string' && s.includes(d.subComponent) ? s.split(d.subComponent) : [s])).map(leaf);
        }),
      );
    });
    for (let i = 1; i < fields.length; i++) fields[i] ??= [];
    if (name === 'MSH') {
      fields[1] = [[[d.field]]];
      fields[2] = [[[d.component + d.repetition + d.escape + d.subComponent]]];
    }
    segments.push({ name, fields });
  }
  return segments;
}

// ---------------------------------------------------------------------------------------------------------------
// Accessors (the message is plain data, so these are functions)

/** The n-th (0-based) segment with this id. */
export function segment(msg: Pick<Hl7Message, 'segments'>, name: string, n = 0): Hl7Segment | undefined {
  let k = 0;
  for (const s of msg.segments) if (s.name === name && k++ === n) return s;
  return undefined;
}

export function segmentsNamed(msg: Pick<Hl7Message, 'segments'>, name: string): Hl7Segment[] {
  return msg.segments.filter((s) => s.name === name);
}

/** One leaf: field f, component c, sub-component s of repetition r. '' when absent, null for an explicit null. */
export function getRaw(seg: Hl7Segment | undefined, f: number, c = 1, s = 1, r = 0): Sub {
  const v = seg?.fields[f]?.[r]?.[c - 1]?.[s - 1];
  return v === undefined ? '' : v;
}

/** One leaf as trimmed text; undefined when absent or explicitly null. */
export function get(seg: Hl7Segment | undefined, f: number, c = 1, s = 1, r = 0): string | undefined {
  const v = getRaw(seg, f, c, s, r);
  if (v === null) return undefined;
  const t = v.trim();
  return t === '' ? undefined : t;
}

/** True when the field (first repetition, first component) is the explicit null `""`. */
export function isExplicitNull(seg: Hl7Segment | undefined, f: number, c = 1): boolean {
  return getRaw(seg, f, c) === null;
}

/** Number of repetitions of a field. */
export function repetitions(seg: Hl7Segment | undefined, f: number): number {
  return seg?.fields[f]?.length ?? 0;
}

/** A component's sub-components joined back with '&' (for display only). */
export function componentText(seg: Hl7Segment | undefined, f: number, c = 1, r = 0): string | undefined {
  const comp = seg?.fields[f]?.[r]?.[c - 1];
  if (!comp) return undefined;
  const t = comp
    .map((s) => s ?? '')
    .join('&')
    .replace(/&+$/, '')
    .trim();
  return t || undefined;
}
