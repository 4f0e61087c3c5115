/**
 * ACK messages, built by hand (the package's createAck leaves MSH-3/4/5 empty). The ACK's MSH swaps sending and
 * receiving application/facility, uses the incoming delimiters, version and character set, a fresh control id and
 * MSH-9 ACK^<trigger>^ACK; MSA-2 echoes MSH-10. Errors go in ERR segments: ERR-2 location, ERR-3 HL7 error code
 * (table 0357), ERR-4 severity and ERR-8 user message from v2.5 on; ERR-1 (ELD) before v2.5.
 */
import { randomBytes } from 'node:crypto';
import type { OperationOutcomeIssue } from 'fhir/r4';
import { type Delimiters, type ErrLocation, HL7_ERROR_TEXT, Hl7ErrorCode, type MshHeader, parseMessage, get, segment } from './parse.js';
import { nowHl7 } from './time.js';

export const AckCode = { AA: 'AA', AE: 'AE', AR: 'AR', CA: 'CA', CE: 'CE', CR: 'CR' } as const;
export type AckCode = (typeof AckCode)[keyof typeof AckCode];

export interface AckError {
  code: Hl7ErrorCode;
  text: string;
  location?: ErrLocation;
  severity?: 'E' | 'W' | 'I';
}

const DEFAULT_DELIMITERS: Delimiters = { field: '|', component: '^', repetition: '~', escape: '\\', subComponent: '&' };

/** Escapes text for a field of a message with these delimiters. */
export function escapeText(text: string, d: Delimiters): string {
  let out = '';
  for (const ch of text.replace(/\r\n|\r|\n/g, ' ')) {
    if (ch === d.escape) out += `${d.escape}E${d.escape}`;
    else if (ch === d.field) out += `${d.escape}F${d.escape}`;
    else if (ch === d.component) out += `${d.escape}S${d.escape}`;
    else if (ch === d.subComponent) out += `${d.escape}T${d.escape}`;
    else if (ch === d.repetition) out += `${d.escape}R${d.escape}`;
    else if (ch < ' ') out += ' ';
    else out += ch;
  }
  return out;
}

/** This process's part of the control ids it makes: random, once (a call to the random source per ACK cost 2 % of the ACK path). */
const PROCESS_TAG = randomBytes(2).toString('hex').toUpperCase();
let sequence = 0;

/**
 * A fresh control id (MSH-10, at most 20 characters): 'GW', the time in ms, this process's random tag and a sequence
 * number, all base 36 or hex. Unique within the process (fewer than 36^4 ids per millisecond), and across processes
 * unless two share a tag and make an id in the same millisecond with the same sequence number.
 */
export function freshControlId(): string {
  sequence = (sequence + 1) % 1_679_616; // 36^4
  return `GW${Date.now().toString(36).toUpperCase()}${PROCESS_TAG}${sequence.toString(36).toUpperCase().padStart(4, '0')}`;
}

function versionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map((x) => Number(x) || 0);
  const b = min.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

export interface AckInput {
  /** Header of the message answered; undefined when its MSH could not be read. */
  header?: MshHeader;
  code: AckCode;
  errors?: AckError[];
  /** MSH-3 when the incoming MSH-5 is empty. */
  receivingApplication?: string;
  now?: Date;
  controlId?: string;
}

/** Builds one ACK message (segments separated by CR, ending with CR). */
export function buildAck(input: AckInput): string {
  const h = input.header;
  const d = h?.delimiters ?? DEFAULT_DELIMITERS;
  const raw = (n: number) => h?.raw[n] ?? '';
  const version = h && /^\d+(\.\d+)*$/.test(h.version) ? h.version : '2.5';
  const esc = (t: string) => escapeText(t, d);
  const msh: string[] = [];
  msh[1] = d.field; // placeholder, MSH is assembled below
  msh[3] = raw(5) || esc(input.receivingApplication ?? 'IOMT-GATEWAY');
  msh[4] = raw(6);
  msh[5] = raw(3);
  msh[6] = raw(4);
  msh[7] = nowHl7(input.now);
  msh[8] = '';
  const trigger = h?.triggerEvent ? esc(h.triggerEvent) : '';
  msh[9] = versionAtLeast(version, '2.3.1')
    ? `ACK${d.component}${trigger}${d.component}ACK`
    : trigger
      ? `ACK${d.component}${trigger}`
      : 'ACK';
  msh[10] = esc(input.controlId ?? freshControlId());
  msh[11] = raw(11) || 'P';
  msh[12] = esc(version);
  if (h?.charset) msh[18] = raw(18).split(d.repetition)[0];
  const fields: string[] = [];
  for (let i = 3; i < msh.length; i++) fields.push(msh[i] ?? '');
  const enc = `${d.component}${d.repetition}${d.escape}${d.subComponent}`;
  const segments = [`MSH${d.field}${enc}${d.field}${fields.join(d.field)}`];
  const errors = input.errors ?? [];
  const summary = errors.map((e) => e.text).join('; ');
  const msaText = summary.length > 80 ? summary.slice(0, 77) + '...' : summary;
  segments.push(['MSA', input.code, esc(h?.controlId ?? ''), ...(msaText ? [esc(msaText)] : [])].join(d.field));
  const c = d.component;
  if (versionAtLeast(version, '2.5')) {
    for (const e of errors) {
      const loc = e.location
        ? [e.location.segment, e.location.sequence ?? '', e.location.field ?? '', '', e.location.component ?? '']
            .join(c)
            .replace(new RegExp(`\\${c}+$`), '')
        : '';
      const code = `${e.code}${c}${esc(HL7_ERROR_TEXT[e.code])}${c}HL70357`;
      segments.push(['ERR', '', loc, code, e.severity ?? 'E', '', '', '', esc(e.text.slice(0, 250))].join(d.field));
    }
  } else if (errors.length) {
    const s = d.subComponent;
    const reps = errors.map((e) => {
      const l = e.location;
      return [
        l?.segment ?? '',
        l?.sequence ?? '',
        l?.field ?? '',
        `${e.code}${s}${esc(e.text.slice(0, 200)).replaceAll(s, ' ')}${s}HL70357`,
      ].join(c);
    });
    segments.push(['ERR', reps.join(d.repetition)].join(d.field));
  }
  return segments.join('\r') + '\r';
}

const LOCATION = /^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\.(\d+))?)?$/;

/** OperationOutcome issues (from translation or validation) → ACK errors with HL7 codes and locations. */
export function issuesToErrors(issues: readonly OperationOutcomeIssue[], max = 10): AckError[] {
  const out: AckError[] = [];
  for (const i of issues) {
    if (i.severity !== 'error' && i.severity !== 'fatal') continue;
    const expr = i.expression?.[0];
    const m = expr ? LOCATION.exec(expr) : null;
    const location: ErrLocation | undefined = m
      ? {
          segment: m[1],
          sequence: m[2] ? Number(m[2]) : 1,
          field: m[3] ? Number(m[3]) : undefined,
          component: m[4] ? Number(m[4]) : undefined,
        }
      : undefined;
    let code: Hl7ErrorCode;
    switch (i.code) {
      case 'required':
        code = location?.field
          ? Hl7ErrorCode.requiredFieldMissing
          : location
            ? Hl7ErrorCode.segmentSequence
            : Hl7ErrorCode.requiredFieldMissing;
        break;
      case 'value':
      case 'structure':
      case 'invalid':
        code = Hl7ErrorCode.dataType;
        break;
      case 'code-invalid':
        code = Hl7ErrorCode.tableValueNotFound;
        break;
      case 'not-supported':
        code = Hl7ErrorCode.unsupportedMessageType;
        break;
      default:
        code = Hl7ErrorCode.applicationInternalError;
    }
    const where = expr && !m ? `${expr}: ` : '';
    out.push({ code, text: `${where}${i.diagnostics ?? i.code}`, location });
    if (out.length >= max) break;
  }
  if (!out.length) out.push({ code: Hl7ErrorCode.applicationInternalError, text: 'the message was refused' });
  return out;
}

export interface ParsedAck {
  code: string;
  controlId: string;
  text?: string;
  errors: { code?: string; text?: string; location?: string }[];
  ackControlId: string;
  messageType: string;
}

/** Reads an ACK (for the CLI and tests). */
export function readAck(text: string): ParsedAck {
  const msg = parseMessage(text);
  const msa = segment(msg, 'MSA');
  const errors = msg.segments
    .filter((s) => s.name === 'ERR')
    .map((s) => {
      if (get(s, 3))
        return {
          code: get(s, 3),
          text: get(s, 8) ?? get(s, 3, 2),
          location: [get(s, 2, 1), get(s, 2, 2), get(s, 2, 3)].filter(Boolean).join('-'),
        };
      return {
        code: get(s, 1, 4, 1),
        text: get(s, 1, 4, 2),
        location: [get(s, 1, 1), get(s, 1, 2), get(s, 1, 3)].filter(Boolean).join('-'),
      };
    });
  return {
    code: get(msa, 1) ?? '',
    controlId: get(msa, 2) ?? '',
    text: get(msa, 3),
    errors,
    ackControlId: msg.header.controlId,
    messageType: [msg.header.messageCode, msg.header.triggerEvent, msg.header.messageStructure].filter(Boolean).join('^'),
  };
}

/** Wraps ACK messages answering a batch in a batch envelope (BHS…BTS, plus FHS…FTS when the input had one). */
export function batchAck(acks: string[], input: { fhs?: string; bhs?: string }, d: Delimiters = DEFAULT_DELIMITERS): string {
  const enc = `${d.component}${d.repetition}${d.escape}${d.subComponent}`;
  const lines: string[] = [];
  const now = nowHl7();
  if (input.fhs) lines.push(`FHS${d.field}${enc}${d.field}${d.field}${d.field}${d.field}${d.field}${now}`);
  lines.push(`BHS${d.field}${enc}${d.field}${d.field}${d.field}${d.field}${d.field}${now}`);
  for (const a of acks) lines.push(a.replace(/\r$/, ''));
  lines.push(`BTS${d.field}${acks.length}`);
  if (input.fhs) lines.push(`FTS${d.field}1`);
  return lines.join('\r') + '\r';
}
