/**
 * The HL7v2 channel logic shared by MLLP and POST /hl7v2: bytes in, ACKs out.
 *
 * For each message (a payload may hold several, or a batch): read MSH → check version and type (AR when not
 * acceptable) → parse → answer a resend from the ACK cache → `ingestor.ingest` (translate, validate, durably
 * enqueue) → ACK. Acknowledgement rules:
 *
 * Original mode (MSH-15 and MSH-16 empty):
 *   AA  only after ingest resolved (the resources are in Redis);
 *   AE  + ERR when the message parses but cannot be translated or validated (422), or when the queue is unavailable
 *       (503: ERR 207, the sender must resend — never AA);
 *   AR  + ERR when it is not acceptable: unreadable MSH, unsupported type/event/version, unparseable, frame too large.
 * Enhanced mode (MSH-15 or MSH-16 valued; an empty one counts as AL):
 *   commit ACK per MSH-15 (AL always, ER on CE/CR only, SU on CA only, NE never): CA once the gateway has taken
 *   custody — resources queued, or the refused message kept in the rejected store; CR when not acceptable; CE when
 *   nothing could be stored (queue or Redis down: resend).
 *   application ACK per MSH-16, only after a CA: AA (queued) or AE + ERR (refused, kept for replay). It is sent on the
 *   same connection right after the commit ACK.
 * Refused messages (AE/AR/CR, not 503) are kept in Redis with the reason, for GET /api/rejected and replay.
 */
import type { Redis } from 'ioredis';
import type { InboundMessage, Principal } from '../../core/contract.js';
import { toGatewayError } from '../../core/errors.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Ingestor } from '../../pipeline/pipeline.js';
import { type AckCode, type AckError, batchAck, buildAck, issuesToErrors } from '../../hl7v2/ack.js';
import { unsupportedReason } from '../../hl7v2/adapter.js';
import { type Hl7Config, versionAccepted } from '../../hl7v2/config.js';
import { decodeBytes, Hl7ErrorCode, type Hl7Message, Hl7ParseError, type MshHeader, normaliseSegments, parseMessage, readHeader, splitMessages } from '../../hl7v2/parse.js';
import { AckCache, contentHash, type RejectedEntry, RejectedStore } from './ack-cache.js';
import { senderOf } from '../../hl7v2/translate-common.js';

/** The subset of a pino logger the channel uses. Logs carry no PHI: control ids, types, sender applications. */
export interface Hl7Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
export const noopLogger: Hl7Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

export interface Hl7ServiceDeps {
  ingestor: Ingestor;
  /** Redis for the rejected store and the ACK cache; without it neither is kept. */
  redis?: Redis;
  config: Hl7Config;
  logger?: Hl7Logger;
  /** Counters hl7_messages_total{channel,result} and hl7_acks_total{channel,code} (no PHI in labels). */
  metrics?: Metrics;
  /** May this MLLP peer send for this sending facility (MSH-4)? (the MLLP_ALLOWED_SENDERS allow-list) */
  senderAllowed?: (facility: string, remoteAddress: string, certFingerprint?: string) => { ok: boolean; reason: string };
}

export interface ReceiveMeta {
  channel: string;
  peer?: string;
  receivedAt?: Date;
  /** Set when an operator replays a rejected message (no new rejected entry, no ACK-cache lookup). */
  replayOf?: string;
  /** The peer's address and TLS client-certificate fingerprint (SHA-256), for the sender allow-list. */
  remoteAddress?: string;
  certFingerprint?: string;
  /** The authenticated caller (HTTP): the device policy checks that it may send for the devices named. */
  principal?: Principal;
}

export type MessageResult = 'accepted' | 'duplicate' | 'refused' | 'not-acceptable' | 'unavailable' | 'error';

export interface MessageOutcome {
  controlId?: string;
  messageType?: string;
  result: MessageResult;
  ackCodes: AckCode[];
  acks: string[];
  errors: AckError[];
  rejectedId?: string;
}

export interface HandleResult {
  /** What to send back, one entry per MLLP frame (HTTP joins them). */
  responses: string[];
  /** Character set to encode the responses in (that of the input). */
  charset: string;
  outcomes: MessageOutcome[];
}

type Kind = 'accepted' | 'refused' | 'not-acceptable' | 'failed';

interface Mode {
  enhanced: boolean;
  accept: string;
  app: string;
}

function modeOf(h: MshHeader | undefined): Mode {
  const accept = h?.acceptAckType ?? '';
  const app = h?.appAckType ?? '';
  return { enhanced: !!(accept || app), accept: accept || 'AL', app: app || 'AL' };
}

function wanted(type: string, positive: boolean): boolean {
  switch (type) {
    case 'AL':
      return true;
    case 'NE':
      return false;
    case 'ER':
      return !positive;
    case 'SU':
      return positive;
    default:
      return true; // an unknown value: acknowledge rather than leave the sender waiting
  }
}

export class Hl7Service {
  readonly rejected?: RejectedStore;
  readonly ackCache?: AckCache;
  private readonly logger: Hl7Logger;

  constructor(private readonly deps: Hl7ServiceDeps) {
    this.logger = deps.logger ?? noopLogger;
    if (deps.redis) {
      this.rejected = new RejectedStore(deps.redis, deps.config.rejectedMax);
      this.ackCache = new AckCache(deps.redis, deps.config.duplicateTtlS);
    }
  }

  get config(): Hl7Config {
    return this.deps.config;
  }

  /** One MLLP frame or HTTP body. Never throws: every path ends in ACKs. */
  async handleBytes(bytes: Buffer, meta: ReceiveMeta): Promise<HandleResult> {
    let decoded: { text: string; charset: string };
    try {
      decoded = decodeBytes(bytes, this.deps.config.defaultCharset);
    } catch {
      decoded = { text: bytes.toString('latin1'), charset: '8859/1' };
    }
    return this.handleText(decoded.text, decoded.charset, meta);
  }

  async handleText(text: string, charset: string, meta: ReceiveMeta): Promise<HandleResult> {
    const split = splitMessages(text);
    if (!split.messages.length) {
      const o = await this.refuse(undefined, 'not-acceptable', [{ code: Hl7ErrorCode.segmentSequence, text: 'the payload holds no HL7 message', location: { segment: 'MSH', sequence: 1 } }], text, charset, meta);
      this.count(meta, o);
      return { responses: o.acks, charset, outcomes: [o] };
    }
    if (split.skippedLines) this.logger.warn({ channel: meta.channel, peer: meta.peer, lines: split.skippedLines }, 'hl7: lines before the first MSH were skipped');
    const outcomes: MessageOutcome[] = [];
    for (const m of split.messages) {
      const o = await this.processOne(m, charset, meta);
      this.count(meta, o);
      outcomes.push(o);
    }
    const acks = outcomes.flatMap((o) => o.acks);
    let responses = acks;
    if (split.batch) {
      let d;
      try {
        d = readHeader(split.messages[0]).delimiters;
      } catch {
        d = undefined;
      }
      responses = [batchAck(acks, split.batch, d)];
    }
    return { responses, charset, outcomes };
  }

  private count(meta: ReceiveMeta, o: MessageOutcome): void {
    const m = this.deps.metrics;
    if (!m) return;
    m.inc('hl7_messages_total', { channel: meta.channel, result: o.result });
    for (const code of o.ackCodes) m.inc('hl7_acks_total', { channel: meta.channel, code });
  }

  /** An MLLP frame larger than MLLP_MAX_FRAME_BYTES: AR (or CR) from what its head says; the head is kept. */
  async refuseOversized(head: Buffer, size: number, meta: ReceiveMeta): Promise<HandleResult> {
    const { text, charset } = decodeBytes(head, this.deps.config.defaultCharset);
    const first = splitMessages(text).messages[0] ?? '';
    let header: MshHeader | undefined;
    try {
      header = readHeader(first);
    } catch {
      header = undefined;
    }
    const err: AckError = { code: Hl7ErrorCode.applicationInternalError, text: `the frame (${size} bytes) exceeds the maximum of ${this.deps.config.maxFrameBytes} bytes; it was not processed` };
    const o = await this.refuse(header, 'not-acceptable', [err], `${first}[truncated: frame of ${size} bytes]`, charset, meta);
    this.count(meta, o);
    return { responses: o.acks, charset, outcomes: [o] };
  }

  private acksFor(header: MshHeader | undefined, kind: Kind, errors: AckError[]): { codes: AckCode[]; acks: string[] } {
    const mode = modeOf(header);
    const codes: AckCode[] = [];
    const recv = this.deps.config.receivingApplication;
    const out: string[] = [];
    const push = (code: AckCode, errs: AckError[]) => {
      codes.push(code);
      out.push(buildAck({ header, code, errors: errs, receivingApplication: recv }));
    };
    if (!mode.enhanced) {
      switch (kind) {
        case 'accepted':
          push('AA', []);
          break;
        case 'refused':
        case 'failed':
          push('AE', errors);
          break;
        case 'not-acceptable':
          push('AR', errors);
          break;
        default:
          kind satisfies never;
      }
      return { codes, acks: out };
    }
    const commit: AckCode = kind === 'not-acceptable' ? 'CR' : kind === 'failed' ? 'CE' : 'CA';
    if (wanted(mode.accept, commit === 'CA')) push(commit, commit === 'CA' ? [] : errors);
    if (commit === 'CA') {
      const app: AckCode = kind === 'accepted' ? 'AA' : 'AE';
      if (wanted(mode.app, app === 'AA')) push(app, app === 'AA' ? [] : errors);
    }
    return { codes, acks: out };
  }

  private async refuse(header: MshHeader | undefined, kind: 'refused' | 'not-acceptable', errors: AckError[], raw: string, charset: string, meta: ReceiveMeta, keep = true): Promise<MessageOutcome> {
    let rejectedId: string | undefined;
    let stored = false;
    if (keep && this.rejected && !meta.replayOf) {
      try {
        rejectedId = await this.rejected.add({
          receivedAt: (meta.receivedAt ?? new Date()).toISOString(),
          channel: meta.channel,
          peer: meta.peer,
          sender: header ? `${header.sendingApplication}|${header.sendingFacility}` : undefined,
          controlId: header?.controlId,
          messageType: header ? [header.messageCode, header.triggerEvent].filter(Boolean).join('^') : undefined,
          ackCode: '',
          ...(meta.principal ? { principal: meta.principal } : {}),
          reason: errors.map((e) => e.text).join('; '),
          errors,
          raw,
          charset,
        });
        stored = true;
      } catch (err) {
        this.logger.error({ err: (err as Error).message, controlId: header?.controlId }, 'hl7: the refused message could not be kept in Redis');
      }
    } else stored = !!meta.replayOf;
    // In enhanced mode a refused message counts as committed only once it is kept (CA + AE); otherwise CE (resend).
    const ackKind: Kind = kind === 'refused' && !stored && modeOf(header).enhanced ? 'failed' : kind;
    const { codes, acks } = this.acksFor(header, ackKind, errors);
    if (rejectedId && this.rejected) {
      const entry = await this.rejected.get(rejectedId).catch(() => undefined);
      if (entry) await this.rejected.update({ ...entry, ackCode: codes.join('/') || '(none)' }).catch(() => undefined);
    }
    this.logger.warn(
      { channel: meta.channel, controlId: header?.controlId, type: header ? `${header.messageCode}^${header.triggerEvent}` : undefined, app: header?.sendingApplication, ack: codes.join('/'), errors: errors.map((e) => e.code), rejectedId },
      'hl7: message refused',
    );
    return { controlId: header?.controlId, messageType: header ? `${header.messageCode}^${header.triggerEvent}` : undefined, result: kind, ackCodes: codes, acks, errors, rejectedId };
  }

  /** One message's text. Never throws. */
  async processOne(text: string, charset: string, meta: ReceiveMeta): Promise<MessageOutcome> {
    let header: MshHeader;
    try {
      header = readHeader(text);
    } catch (e) {
      const pe = e instanceof Hl7ParseError ? e : new Hl7ParseError(String(e), Hl7ErrorCode.applicationInternalError);
      return this.refuse(pe.header, 'not-acceptable', [{ code: pe.code, text: pe.message, location: pe.location }], text, charset, meta);
    }
    const type = `${header.messageCode}^${header.triggerEvent}`;
    if (meta.channel === 'mllp' && this.deps.senderAllowed && !meta.replayOf) {
      const check = this.deps.senderAllowed(header.sendingFacility, meta.remoteAddress ?? '', meta.certFingerprint);
      if (!check.ok) {
        return this.refuse(header, 'not-acceptable', [{ code: Hl7ErrorCode.applicationInternalError, text: `sender not allowed: ${check.reason}`, location: { segment: 'MSH', sequence: 1, field: 4 } }], text, charset, meta);
      }
    }
    if (!versionAccepted(header.version, this.deps.config.acceptVersions)) {
      return this.refuse(header, 'not-acceptable', [{ code: Hl7ErrorCode.unsupportedVersion, text: `HL7 version '${header.version}' is not supported (accepted: ${this.deps.config.acceptVersions.join(', ')})`, location: { segment: 'MSH', sequence: 1, field: 12 } }], text, charset, meta);
    }
    const unsupported = unsupportedReason(header.messageCode, header.triggerEvent);
    if (unsupported) {
      return this.refuse(header, 'not-acceptable', [{ code: unsupported.code, text: unsupported.text, location: { segment: 'MSH', sequence: 1, field: 9 } }], text, charset, meta);
    }
    let msg: Hl7Message;
    try {
      msg = parseMessage(text, { charset });
    } catch (e) {
      const pe = e instanceof Hl7ParseError ? e : new Hl7ParseError(`the message cannot be parsed: ${(e as Error).message}`, Hl7ErrorCode.dataType);
      return this.refuse(header, 'not-acceptable', [{ code: pe.code, text: pe.message, location: pe.location }], text, charset, meta);
    }
    const sender = senderOf(msg);
    const hash = contentHash(normaliseSegments(text).join('\r'));
    if (this.ackCache && !meta.replayOf) {
      const cached = await this.ackCache.get(sender, header.controlId).catch(() => undefined);
      if (cached?.h === hash) {
        this.logger.info({ channel: meta.channel, controlId: header.controlId, type, app: header.sendingApplication }, 'hl7: resend of an accepted message; answered with the original ACK, not queued again');
        return { controlId: header.controlId, messageType: type, result: 'duplicate', ackCodes: cached.acks.map(ackCodeOf), acks: cached.acks, errors: [] };
      }
      if (cached) this.logger.warn({ controlId: header.controlId, app: header.sendingApplication }, 'hl7: control id reused with different content; processed as a new message');
    }
    const message: InboundMessage = {
      body: msg,
      channel: meta.channel,
      ...(meta.principal ? { principal: meta.principal } : {}),
      receivedAt: (meta.receivedAt ?? new Date()).toISOString(),
      attributes: {
        controlId: header.controlId,
        messageType: type,
        sendingFacility: header.sendingFacility,
        ...(meta.peer ? { peer: meta.peer } : {}),
        ...(meta.remoteAddress ? { remoteAddress: meta.remoteAddress } : {}),
        ...(meta.replayOf ? { replayOf: meta.replayOf } : {}),
      },
    };
    try {
      const result = await this.deps.ingestor.ingest(this.deps.config.adapterId, message);
      if (type === 'ADT^A40') this.logger.info({ controlId: header.controlId, app: header.sendingApplication }, 'hl7: ADT^A40 (merge) acknowledged and logged; patient merges are not applied by the gateway');
      const { codes, acks } = this.acksFor(header, 'accepted', []);
      if (this.ackCache) await this.ackCache.put(sender, header.controlId, { h: hash, acks, charset }).catch(() => undefined);
      this.logger.info({ channel: meta.channel, controlId: header.controlId, type, app: header.sendingApplication, jobs: result.jobIds.length, observations: result.observations, ack: codes.join('/') }, 'hl7: message accepted');
      return { controlId: header.controlId, messageType: type, result: 'accepted', ackCodes: codes, acks, errors: [] };
    } catch (err) {
      const e = toGatewayError(err);
      if (e.status >= 500 && e.status !== 500) {
        // Queue unavailable: nothing was stored; the sender must resend. Never AA.
        const errors: AckError[] = [{ code: Hl7ErrorCode.applicationInternalError, text: `temporarily unavailable, resend later: ${e.message}` }];
        const { codes, acks } = this.acksFor(header, 'failed', errors);
        this.logger.warn({ channel: meta.channel, controlId: header.controlId, type, status: e.status, ack: codes.join('/') }, 'hl7: queue unavailable; message not accepted');
        return { controlId: header.controlId, messageType: type, result: 'unavailable', ackCodes: codes, acks, errors };
      }
      // The error's name and frames, not its message: a message may quote the HL7 content (PHI).
      if (e.status === 500) this.logger.error({ controlId: header.controlId, type, err: (err as Error)?.name ?? typeof err, frames: (err as Error)?.stack?.split('\n').slice(1, 8).join('\n') }, 'hl7: internal error while ingesting');
      const errors = e.status === 500 ? [{ code: Hl7ErrorCode.applicationInternalError, text: 'internal error; the message is kept for replay' }] : issuesToErrors(e.outcome.issue);
      const o = await this.refuse(header, 'refused', errors, text, charset, meta);
      return { ...o, result: e.status === 500 ? 'error' : 'refused' };
    }
  }

  /**
   * Replays a kept message through the same path. Accepted → the entry is removed; refused again → the entry is
   * updated with the new reason. Returns undefined when there is no such entry.
   */
  async replay(id: string): Promise<{ outcome: MessageOutcome; entry: RejectedEntry } | undefined> {
    if (!this.rejected) return undefined;
    const entry = await this.rejected.get(id);
    if (!entry) return undefined;
    // Replayed with the original sender's identity: a replay grants no rights the sender did not have.
    const outcome = await this.processOne(entry.raw, entry.charset, { channel: entry.channel, peer: entry.peer, replayOf: id, principal: entry.principal });
    if (outcome.result === 'accepted' || outcome.result === 'duplicate') await this.rejected.delete(id);
    else if (outcome.result !== 'unavailable') {
      await this.rejected.update({ ...entry, ackCode: outcome.ackCodes.join('/') || entry.ackCode, reason: outcome.errors.map((e) => e.text).join('; '), errors: outcome.errors, replays: (entry.replays ?? 0) + 1, lastReplayAt: new Date().toISOString() });
    }
    return { outcome, entry };
  }
}

function ackCodeOf(ack: string): AckCode {
  const m = /\rMSA.(\w\w)/.exec(ack);
  return (m?.[1] ?? 'AA') as AckCode;
}

export function createHl7Service(deps: Hl7ServiceDeps): Hl7Service {
  return new Hl7Service(deps);
}
