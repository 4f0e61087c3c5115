/**
 * The HL7v2 session logic shared by MLLP and POST /hl7v2: bytes in, ACKs out.
 *
 * For each message (a payload may hold several, or a batch): read MSH → sender allow-list, version and type (AR when
 * not acceptable) → parse → answer a resend from the ACK cache → `ingestor.ingest` (translate, validate, durably
 * enqueue) → ACK. AA/CA only after ingest resolved. A refusal that is not retryable (core/errors.ts) is AE (or AR when
 * the message is not acceptable) with ERR segments and is kept in the refusal store for replay; a retryable one (queue
 * or Redis down, the device's held-reading cap, an internal error) is AE/CE "resend later" and is not kept: the sender
 * must resend. The acknowledgement rules of original and enhanced mode are in docs/hl7v2.md.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { RedisClient } from '../../queue/connection.js';
import type { OperationOutcome } from 'fhir/r4';
import type { InboundMessage, Principal } from '../../core/contract.js';
import { GatewayError, issue, outcome, toGatewayError } from '../../core/errors.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Ingestor } from '../../pipeline/pipeline.js';
import { type AckCode, type AckError, batchAck, buildAck, issuesToErrors } from '../../hl7v2/ack.js';
import { unsupportedReason } from '../../hl7v2/adapter.js';
import { type Hl7Config, versionAccepted } from '../../hl7v2/config.js';
import {
  decodeBytes,
  Hl7ErrorCode,
  type Hl7Message,
  Hl7ParseError,
  type MshHeader,
  parseMessageAsync,
  readHeader,
  splitMessages,
} from '../../hl7v2/parse.js';
import { AckCache, contentHash } from './ack-cache.js';
import { withTimeout } from '../../queue/queue.js';
import type { PayloadInfo, Refusal, RefusalStore, ReplayResult } from '../../pipeline/refusals.js';
import { senderOf } from '../../hl7v2/translate-common.js';

/**
 * A control id as logs carry it. MSH-10 is whatever the sender put there, and some senders put an MRN or an accession
 * number: logs carry an HMAC-SHA256 of it (16 hex digits) under a key made when the process starts. Lines of one
 * process about one message share it; it cannot be turned back into the id, nor matched against guessed ids. The
 * refusal store (operator role) keeps the id itself, searchable with ?controlId=.
 */
export function logRef(controlId: string | undefined): string | undefined {
  if (controlId === undefined || controlId === '') return undefined;
  return createHmac('sha256', LOG_KEY).update(controlId).digest('hex').slice(0, 16);
}
const LOG_KEY = randomBytes(32);

/** A header field as logs carry it: at most 64 characters (a hostile MSH-3 can be a megabyte). */
const logText = (s: string | undefined) => (s && s.length > 64 ? `${s.slice(0, 64)}…` : s);

/** The subset of a pino logger the channel uses. Logs carry no PHI: hashed control ids, types, sender applications. */
export interface Hl7Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  /** Each accepted message (LOG_LEVEL=debug). */
  debug?(obj: object, msg?: string): void;
  isLevelEnabled?(level: string): boolean;
}
export const noopLogger: Hl7Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

export interface Hl7SessionDeps {
  ingestor: Ingestor;
  /** Redis for the ACK cache; without it resends are not recognised. */
  redis?: RedisClient;
  /** Where refused messages are kept (the one refusal store); without it they are not kept. */
  refusals?: RefusalStore;
  /**
   * Every message is answered within this time (ENQUEUE_TIMEOUT_MS): when Redis does not answer, AE/CE "resend later"
   * rather than silence past the sender's own timeout. A message queued after its AE is recognised when resent.
   */
  answerWithinMs?: number;
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
  /** Set when an operator replays a refused message (no new refusal entry, no ACK-cache lookup). */
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
  /** The refusal store entry, when the message was kept. */
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

export class Hl7Session {
  readonly refusals?: RefusalStore;
  readonly ackCache?: AckCache;
  private readonly logger: Hl7Logger;

  constructor(private readonly deps: Hl7SessionDeps) {
    this.logger = deps.logger ?? noopLogger;
    this.refusals = deps.refusals;
    if (deps.redis) this.ackCache = new AckCache(deps.redis, deps.config.duplicateTtlS);
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
      const o = await this.refuse(
        undefined,
        'not-acceptable',
        [{ code: Hl7ErrorCode.segmentSequence, text: 'the payload holds no HL7 message', location: { segment: 'MSH', sequence: 1 } }],
        text,
        charset,
        meta,
      );
      this.count(meta, o);
      return { responses: o.acks, charset, outcomes: [o] };
    }
    if (split.skippedLines)
      this.logger.warn(
        { channel: meta.channel, peer: meta.peer, lines: split.skippedLines },
        'hl7: lines before the first MSH were skipped',
      );
    const outcomes: MessageOutcome[] = [];
    for (const m of split.messages) {
      const o = await this.processOne(m, charset, meta);
      this.count(meta, o);
      outcomes.push(o);
    }
    const acks = outcomes.flatMap((o) => o.acks);
    let responses = acks;
    if (split.batch) {
      let d: ReturnType<typeof readHeader>['delimiters'] | undefined;
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
  async refuseOversized(head: Buffer, size: number, meta: ReceiveMeta, sha256 = ''): Promise<HandleResult> {
    const { text, charset } = decodeBytes(head, this.deps.config.defaultCharset);
    const first = splitMessages(text).messages[0] ?? '';
    let header: MshHeader | undefined;
    try {
      header = readHeader(first);
    } catch {
      header = undefined;
    }
    const err: AckError = {
      code: Hl7ErrorCode.applicationInternalError,
      text: `the frame (${size} bytes) exceeds the maximum of ${this.deps.config.maxFrameBytes} bytes; it was not processed`,
    };
    const o = await this.refuse(header, 'not-acceptable', [err], first, charset, meta, 422, undefined, {
      bytes: size,
      sha256,
      truncated: true,
      keptBytes: 0,
    });
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

  private async refuse(
    header: MshHeader | undefined,
    kind: 'refused' | 'not-acceptable',
    errors: AckError[],
    raw: string,
    charset: string,
    meta: ReceiveMeta,
    status = 422,
    oo?: OperationOutcome,
    payloadInfo?: PayloadInfo,
  ): Promise<MessageOutcome> {
    // In enhanced mode a refused message counts as committed only once it is kept (CA + AE); otherwise CE (resend).
    const keep = !!this.refusals && !meta.replayOf;
    const messageType = header ? [header.messageCode, header.triggerEvent].filter(Boolean).join('^') : undefined;
    let rejectedId: string | undefined;
    let codes: AckCode[] = [];
    let acks: string[] = [];
    const answer = (stored: boolean) => {
      const ackKind: Kind = kind === 'refused' && !stored && modeOf(header).enhanced ? 'failed' : kind;
      ({ codes, acks } = this.acksFor(header, ackKind, errors));
    };
    if (keep) {
      answer(true);
      try {
        // Bounded like the queue's write (ENQUEUE_TIMEOUT_MS): with Redis down the sender is answered (AE, or CE: resend)
        // before it gives up, not after the client's retries.
        const deadline = this.deps.answerWithinMs ? Date.now() + this.deps.answerWithinMs : undefined;
        rejectedId = await this.within(
          deadline,
          this.refusals!.add({
            channel: meta.channel,
            format: 'hl7v2',
            adapterId: this.deps.config.adapterId,
            receivedAt: (meta.receivedAt ?? new Date()).toISOString(),
            status: kind === 'not-acceptable' && status === 422 ? 400 : status,
            reason: errors.map((e) => e.text).join('; '),
            outcome: oo ?? errorsToOutcome(errors),
            hl7: {
              controlId: header?.controlId,
              messageType,
              sender: header ? `${header.sendingApplication}|${header.sendingFacility}` : undefined,
              peer: meta.peer,
              ackCode: codes.join('/') || '(none)',
              errors,
            },
            ...(meta.principal ? { principal: meta.principal } : {}),
            raw,
            charset,
            ...(payloadInfo ? { payloadInfo } : {}),
          }),
          'the refusal store (Redis) did not answer',
        );
      } catch (err) {
        this.logger.error(
          { err: (err as Error).message, controlIdHash: logRef(header?.controlId) },
          'hl7: the refused message could not be kept in Redis',
        );
        answer(false);
      }
    } else answer(!!meta.replayOf);
    this.logger.warn(
      {
        channel: meta.channel,
        controlIdHash: logRef(header?.controlId),
        type: messageType,
        app: logText(header?.sendingApplication),
        ack: codes.join('/'),
        errors: errors.map((e) => e.code),
        rejectedId,
      },
      'hl7: message refused',
    );
    return { controlId: header?.controlId, messageType, result: kind, ackCodes: codes, acks, errors, rejectedId };
  }

  /** `p`, or a retryable 503 once the message's deadline has passed (no deadline: `p`). */
  private within<T>(deadline: number | undefined, p: Promise<T>, what: string): Promise<T> {
    if (deadline === undefined) return p;
    return withTimeout(p, Math.max(1, deadline - Date.now()), what);
  }

  /** One message's text. Never throws. */
  async processOne(text: string, charset: string, meta: ReceiveMeta): Promise<MessageOutcome> {
    const deadline = this.deps.answerWithinMs ? Date.now() + this.deps.answerWithinMs : undefined;
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
        return this.refuse(
          header,
          'not-acceptable',
          [
            {
              code: Hl7ErrorCode.applicationInternalError,
              text: `sender not allowed: ${check.reason}`,
              location: { segment: 'MSH', sequence: 1, field: 4 },
            },
          ],
          text,
          charset,
          meta,
        );
      }
    }
    if (!versionAccepted(header.version, this.deps.config.acceptVersions)) {
      return this.refuse(
        header,
        'not-acceptable',
        [
          {
            code: Hl7ErrorCode.unsupportedVersion,
            text: `HL7 version '${header.version}' is not supported (accepted: ${this.deps.config.acceptVersions.join(', ')})`,
            location: { segment: 'MSH', sequence: 1, field: 12 },
          },
        ],
        text,
        charset,
        meta,
      );
    }
    const unsupported = unsupportedReason(header.messageCode, header.triggerEvent);
    if (unsupported) {
      return this.refuse(
        header,
        'not-acceptable',
        [{ code: unsupported.code, text: unsupported.text, location: { segment: 'MSH', sequence: 1, field: 9 } }],
        text,
        charset,
        meta,
      );
    }
    let msg: Hl7Message;
    try {
      // Asynchronous only the first time a message needs the hl7v2 package (loaded on demand, hl7v2/parse.ts).
      msg = await parseMessageAsync(text, { charset, limits: this.deps.config.parseLimits, header });
    } catch (e) {
      // The parser could not be loaded: the gateway's own failure, so the sender resends later (never AR).
      if (e instanceof GatewayError) return this.resendLater(header, type, meta, e, e.cause ?? e);
      const pe =
        e instanceof Hl7ParseError ? e : new Hl7ParseError(`the message cannot be parsed: ${(e as Error).message}`, Hl7ErrorCode.dataType);
      return this.refuse(header, 'not-acceptable', [{ code: pe.code, text: pe.message, location: pe.location }], text, charset, meta);
    }
    // The parsed text is the message's segments joined by CR, each ended by one (normaliseSegments).
    const hash = contentHash(msg.text.slice(0, -1));
    const ackKey = this.ackCache?.enabled ? this.ackCache.key(senderOf(msg), header.controlId) : undefined;
    if (this.ackCache && ackKey && !meta.replayOf) {
      const cached = await this.within(deadline, this.ackCache.get(ackKey), 'the ACK cache (Redis) did not answer').catch(() => undefined);
      if (cached?.h === hash) {
        this.logger.info(
          { channel: meta.channel, controlIdHash: logRef(header.controlId), type, app: logText(header.sendingApplication) },
          'hl7: resend of an accepted message; answered with the original ACK, not queued again',
        );
        return {
          controlId: header.controlId,
          messageType: type,
          result: 'duplicate',
          ackCodes: cached.acks.map(ackCodeOf),
          acks: cached.acks,
          errors: [],
        };
      }
      if (cached)
        this.logger.warn(
          { controlIdHash: logRef(header.controlId), app: logText(header.sendingApplication) },
          'hl7: control id reused with different content; processed as a new message',
        );
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
      const result = await this.within(
        deadline,
        this.deps.ingestor.ingest(this.deps.config.adapterId, message),
        'the message could not be queued',
      );
      if (type === 'ADT^A40')
        this.logger.info(
          { controlIdHash: logRef(header.controlId), app: logText(header.sendingApplication) },
          'hl7: ADT^A40 (merge) acknowledged and logged; patient merges are not applied by the gateway',
        );
      const { codes, acks } = this.acksFor(header, 'accepted', []);
      // The ACK is not held back for this write (a Redis round trip). A resend comes only after the sender has waited
      // for an ACK; in this process its lookup goes over the same Redis connection, after the write. A write that
      // failed, or a resend that reaches another process within the round trip, costs only that the resend is queued
      // again, and the EHR still gets it once: delivery's writes are conditional.
      if (this.ackCache && ackKey) void this.ackCache.put(ackKey, { h: hash, acks, charset }).catch(() => undefined);
      // Accepted messages are counted (hl7_messages_total, the console), not logged one line each at info, as on the
      // other channels: at info a busy feed's every message cost a line, a keyed hash and a write to the log.
      if (this.logger.debug && (this.logger.isLevelEnabled?.('debug') ?? true))
        this.logger.debug(
          {
            channel: meta.channel,
            controlIdHash: logRef(header.controlId),
            type,
            app: logText(header.sendingApplication),
            jobs: result.jobIds.length,
            observations: result.observations,
            ack: codes.join('/'),
          },
          'hl7: message accepted',
        );
      return { controlId: header.controlId, messageType: type, result: 'accepted', ackCodes: codes, acks, errors: [] };
    } catch (err) {
      const e = toGatewayError(err);
      if (e.retryable) return this.resendLater(header, type, meta, e, err);
      return this.refuse(header, 'refused', issuesToErrors(e.outcome.issue), text, charset, meta, e.status, e.outcome);
    }
  }

  /** Not stored (queue or Redis down, a throttle, an internal error): the sender must resend. Never AA, not kept. */
  private resendLater(header: MshHeader, type: string, meta: ReceiveMeta, e: GatewayError, err: unknown): MessageOutcome {
    if (e.status === 500)
      this.logger.error(
        {
          controlIdHash: logRef(header.controlId),
          type,
          err: (err as Error)?.name ?? typeof err,
          frames: (err as Error)?.stack?.split('\n').slice(1, 8).join('\n'),
        },
        'hl7: internal error while ingesting',
      );
    const text = e.status === 500 ? 'internal error, resend later' : `temporarily unavailable, resend later: ${e.message}`;
    const errors: AckError[] = [{ code: Hl7ErrorCode.applicationInternalError, text }];
    const { codes, acks } = this.acksFor(header, 'failed', errors);
    this.logger.warn(
      { channel: meta.channel, controlIdHash: logRef(header.controlId), type, status: e.status, ack: codes.join('/') },
      'hl7: message not accepted now; the sender must resend',
    );
    return {
      controlId: header.controlId,
      messageType: type,
      result: e.status === 500 ? 'error' : 'unavailable',
      ackCodes: codes,
      acks,
      errors,
    };
  }

  /**
   * Replays a kept message through the same path, with the original sender's identity (a replay grants no rights the
   * sender did not have). The refusal store removes an accepted entry and updates a refused one.
   */
  async replay(entry: Refusal): Promise<ReplayResult> {
    const o = await this.processOne(entry.raw ?? '', entry.charset ?? 'UNICODE UTF-8', {
      channel: entry.channel,
      peer: entry.hl7?.peer,
      replayOf: entry.id,
      principal: entry.principal,
    });
    if (o.result === 'unavailable' || o.result === 'error') {
      throw new GatewayError(503, outcome([issue('transient', o.errors.map((e) => e.text).join('; '))]), {
        headers: { 'Retry-After': '5' },
      });
    }
    const accepted = o.result === 'accepted' || o.result === 'duplicate';
    const detail = { ackCodes: o.ackCodes, errors: o.errors, ack: o.acks.join('') };
    if (accepted) return { accepted, result: o.result, detail };
    const reason = o.errors.map((e) => e.text).join('; ');
    return {
      accepted,
      result: o.result,
      detail,
      refusal: {
        status: 422,
        reason,
        outcome: errorsToOutcome(o.errors),
        hl7: { ...entry.hl7, ackCode: o.ackCodes.join('/') || entry.hl7?.ackCode || '', errors: o.errors },
      },
    };
  }
}

/** ERR details as an OperationOutcome, each located as SEG-n (the same expression issuesToErrors reads). */
export function errorsToOutcome(errors: AckError[]): OperationOutcome {
  return outcome(
    errors.map((e) => {
      const l = e.location;
      const where = l ? [[l.segment, l.field].filter((x) => x !== undefined).join('-')] : undefined;
      return issue(
        e.code === Hl7ErrorCode.unsupportedVersion || e.code === Hl7ErrorCode.unsupportedMessageType ? 'not-supported' : 'invalid',
        e.text,
        where,
      );
    }),
  );
}

function ackCodeOf(ack: string): AckCode {
  const m = /\rMSA.(\w\w)/.exec(ack);
  return (m?.[1] ?? 'AA') as AckCode;
}
