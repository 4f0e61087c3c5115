/**
 * The MQTT channel: subscribes to the configured topic filters at one broker and hands each message to the pipeline
 * (adapter → validate → durable enqueue), like the HTTP and MLLP channels. See docs/mqtt.md.
 *
 * Acknowledgement (principle 1, nothing acknowledged is lost): QoS 1, MQTT 5, and the PUBACK is sent only after the
 * job is in Redis. mqtt.js sends a PUBACK when the `customHandleAcks` callback is called (MQTT 5 only; with 3.1.1 it
 * acknowledges at once), and processes the packets of a connection one at a time until it is called. So:
 *   - accepted (jobs queued)              → PUBACK (reason 0).
 *   - refused for good (4xx, bad JSON, no adapter, adapter failure) → PUBACK as well (redelivery would not help), with
 *     a PUBACK reason code (0x99 payload format invalid, 0x87 not authorized, 0x83 implementation specific error), an
 *     error report (QoS 1) on MQTT_ERROR_TOPIC with the OperationOutcome, a log line, a counter, and the raw message
 *     kept in the refusal store (pipeline/refusals.ts) for inspection and replay.
 *   - cannot take it now (a retryable refusal: Redis or the queue down, a throttle, an internal error) → no PUBACK. An MQTT 5 PUBACK with an error reason code
 *     still ends the QoS 1 exchange (the broker discards the message), and a broker resends unacknowledged messages
 *     only when the session resumes, so the channel disconnects (the session stays: clean start off, session expiry
 *     MQTT_SESSION_EXPIRY_S) and reconnects after a backoff; the broker then redelivers the message (DUP set), which is
 *     queued once Redis is back. Deterministic job ids and conditional creates make a redelivery harmless.
 * A crash before the PUBACK leaves the message unacknowledged in the session: the broker redelivers it at reconnect.
 *
 * Identity: the first `+` level of the matching filter is the device id (attributes.deviceId) and the sender's
 * identity: the message is handed in as that device (principal role device), so a reading naming another device is
 * refused (403) by the device guard. The broker's ACLs must therefore allow each device to publish only under its
 * own id (mosquitto: `pattern write devices/%u/#`).
 */
import { isUtf8 } from 'node:buffer';
import { firstInvalidUtf8 } from '../../core/utf8.js';
import { readFileSync } from 'node:fs';
import express, { type RequestHandler } from 'express';
import mqtt from 'mqtt';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { OperationOutcome } from 'fhir/r4';
import type { InboundMessage, Principal } from '../../core/contract.js';
import { GatewayError, issue, outcome } from '../../core/errors.js';
import type { Refusal, RefusalStore, ReplayResult } from '../../pipeline/refusals.js';
import { withoutCredentials } from '../../observability/redact.js';
import type { Channel } from '../channel.js';
import type { Ingestor } from '../../pipeline/pipeline.js';
import { withTimeout } from '../../queue/queue.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { MqttConfig } from './config.js';

export { MQTT_KEYS, mqttConfig, type MqttConfig } from './config.js';

/** QoS 0 messages handled at once at most; more are dropped and counted (QoS 0 promises no delivery). */
const MAX_QOS0_IN_FLIGHT = 1000;

/** MQTT 5 PUBACK reason codes used here. */
export const PubackReason = { success: 0, notAuthorized: 0x87, implementationError: 0x83, payloadFormatInvalid: 0x99 } as const;

/** Matches a topic against a filter (+ one level, # the rest); returns what each + matched, or undefined. */
export function matchTopic(filter: string, topic: string): string[] | undefined {
  const f = filter.split('/');
  const t = topic.split('/');
  const captures: string[] = [];
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return i === 0 && topic.startsWith('$') ? undefined : captures;
    if (i >= t.length) return undefined;
    if (f[i] === '+') {
      if (i === 0 && t[i].startsWith('$')) return undefined;
      captures.push(t[i]);
    } else if (f[i] !== t[i]) return undefined;
  }
  return f.length === t.length ? captures : undefined;
}

export type Outcome = 'ack' | 'retry';

interface Report {
  topic: string;
  adapter?: string;
  deviceId?: string;
  receivedAt: string;
  status: number;
  outcome: OperationOutcome;
}

/** A deliberate "no PUBACK" (passed to mqtt.js as the error of customHandleAcks, which then skips the PUBACK). */
class NoAck extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'NoAck';
  }
}

export interface MqttChannelDeps {
  ingestor: Ingestor;
  log: Logger;
  metrics: Metrics;
  /** Where refused messages are kept (optional). */
  refusals?: RefusalStore;
  /**
   * ENQUEUE_TIMEOUT_MS: the most a message waits on Redis, for its ingest and, refused, for being kept. Past it the
   * message is left unacknowledged (the broker redelivers it) or, refused, acknowledged without being kept. mqtt.js
   * takes a connection's next QoS 1 message only once this one is settled, so an unbounded wait held up them all.
   */
  answerWithinMs?: number;
}

export class MqttChannel {
  private client?: MqttClient;
  private stopped = false;
  private paused = false;
  private pauseTimer?: NodeJS.Timeout;
  private transientStreak = 0;
  private inflight = new Set<Promise<unknown>>();
  private readonly errorPrefix: string;
  readonly counts = { accepted: 0, refused: 0, malformed: 0, deferred: 0, connects: 0 };
  lastError?: string;

  constructor(
    readonly config: MqttConfig,
    private readonly deps: MqttChannelDeps,
  ) {
    this.errorPrefix = config.errorTopic.split('{')[0];
  }

  get connected(): boolean {
    return !!this.client?.connected;
  }

  private options(): IClientOptions {
    const c = this.config;
    const o: IClientOptions = {
      protocolVersion: 5,
      clientId: c.clientId,
      clean: false,
      properties: { sessionExpiryInterval: c.sessionExpiryS },
      keepalive: c.keepaliveS,
      reconnectPeriod: c.reconnectMinMs,
      connectTimeout: 10_000,
      resubscribe: false,
      customHandleAcks: (topic, payload, packet, done) => this.onQos1(topic, payload, packet as { dup?: boolean }, done),
    };
    if (c.username !== undefined) o.username = c.username;
    if (c.password !== undefined) o.password = c.password;
    if (c.caFile) o.ca = readFileSync(c.caFile);
    if (c.certFile) o.cert = readFileSync(c.certFile);
    if (c.keyFile) o.key = readFileSync(c.keyFile);
    return o;
  }

  /** Connects (not waiting for the broker: an unreachable broker is retried with backoff, never fatal). */
  async start(): Promise<void> {
    if (this.client || !this.config.url) return;
    const { log, metrics } = this.deps;
    const client = mqtt.connect(this.config.url, this.options());
    this.client = client;
    client.on('connect', (connack) => {
      this.counts.connects++;
      client.options.reconnectPeriod = this.config.reconnectMinMs;
      log.info(
        { broker: redact(this.config.url!), clientId: this.config.clientId, sessionPresent: connack.sessionPresent },
        'MQTT connected',
      );
      const filters = this.config.topics.map((t) => (this.config.shareGroup ? `$share/${this.config.shareGroup}/${t.filter}` : t.filter));
      client.subscribe(filters, { qos: 1, nl: true }, (err, granted) => {
        if (err) return void log.error({ error: err.message }, 'MQTT subscribe failed');
        const refused = (granted ?? []).filter((g) => g.qos >= 0x80);
        if (refused.length) log.error({ topics: refused.map((g) => g.topic) }, 'MQTT broker refused subscriptions (ACL?)');
      });
    });
    client.on('reconnect', () => {
      // Backoff: mqtt.js reads reconnectPeriod each time it arms its timer.
      const next = Math.min(this.config.reconnectMaxMs, client.options.reconnectPeriod! * 2);
      client.options.reconnectPeriod = Math.round(next * (0.8 + Math.random() * 0.4));
      metrics.inc('mqtt_reconnects_total');
    });
    client.on('close', () => log.debug('MQTT connection closed'));
    client.on('offline', () => log.warn({ broker: redact(this.config.url!) }, 'MQTT broker unreachable; reconnecting with backoff'));
    client.on('error', (err: Error & { code?: unknown }) => {
      if (err instanceof NoAck) return;
      this.lastError = err.message;
      log.warn({ error: err.message, code: err.code }, 'MQTT error');
    });
    // QoS 0 messages carry no acknowledgement: handled, never retried (devices should publish with QoS 1).
    client.on('message', (topic, payload, packet) => {
      if (packet.qos !== 0) return;
      // QoS 0 arrives without flow control: bound what is in flight rather than grow memory with a flood.
      if (this.inflight.size >= MAX_QOS0_IN_FLIGHT) {
        metrics.inc('mqtt_messages_total', { result: 'dropped-qos0', adapter: '' });
        return;
      }
      this.track(this.handle(topic, payload, false));
    });
    metrics.gauge('mqtt_connected', () => (this.connected ? 1 : 0));
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p)).catch(() => undefined);
    return p;
  }

  private onQos1(topic: string, payload: Buffer, packet: { dup?: boolean }, done: (error: Error | number, code?: number) => void): void {
    void this.track(this.handle(topic, payload, !!packet.dup)).then(
      (r) => {
        if (r === 'retry') {
          done(new NoAck('not acknowledged: the gateway cannot queue it now'));
          this.pause();
        } else done(r === 'ack' ? PubackReason.success : r);
      },
      (err: Error) => {
        this.deps.log.error({ error: err.message, topic }, 'MQTT message handling failed; not acknowledged');
        done(new NoAck(err.message));
        this.pause();
      },
    );
  }

  /**
   * Stops reading, lets the session keep the unacknowledged messages, and reconnects after a backoff: the broker then
   * redelivers them. Used when the queue cannot take messages (503).
   */
  private pause(): void {
    const client = this.client;
    if (!client || this.paused || this.stopped) return;
    this.paused = true;
    const delay = Math.min(this.config.reconnectMaxMs, this.config.reconnectMinMs * 2 ** Math.min(this.transientStreak, 16));
    this.transientStreak++;
    this.deps.log.warn(
      { delayMs: delay },
      'MQTT: the queue cannot take messages; disconnecting (the broker keeps them unacknowledged) and reconnecting after a pause',
    );
    client.end(true, () => {
      if (this.stopped) return;
      this.pauseTimer = setTimeout(() => {
        this.paused = false;
        if (!this.stopped) client.reconnect();
      }, delay);
    });
  }

  /** One message: returns 'ack', 'retry' (no PUBACK) or a PUBACK reason code for a message refused for good. */
  async handle(topic: string, payload: Buffer, dup: boolean): Promise<Outcome | number> {
    const { log, metrics } = this.deps;
    const receivedAt = new Date().toISOString();
    if (this.paused) return 'retry';
    if (this.errorPrefix && topic.startsWith(this.errorPrefix)) {
      log.warn({ topic }, 'MQTT: ignoring a message on the error topic (check MQTT_TOPICS)');
      return 'ack';
    }
    const route = this.config.topics.map((t) => ({ t, captures: matchTopic(t.filter, topic) })).find((r) => r.captures);
    const deviceId = route?.captures?.[0] || undefined;
    const refuse = async (status: number, oo: OperationOutcome, reason: string, code: number, adapter?: string) => {
      this.counts[reason === 'malformed' ? 'malformed' : 'refused']++;
      metrics.inc('mqtt_messages_total', { result: reason, adapter: adapter ?? '' });
      log.info(
        { topic, adapter, deviceId, status, reason, issues: oo.issue.length, dup },
        'MQTT message refused; reported on the error topic',
      );
      this.report({ topic, adapter, deviceId, receivedAt, status, outcome: oo });
      await this.keep({ topic, adapter, deviceId, receivedAt, status, outcome: oo }, payload);
      return code;
    };
    if (!route)
      return refuse(
        404,
        outcome([issue('not-found', `no adapter is mapped to topic '${topic}' (MQTT_TOPICS)`)]),
        'unrouted',
        PubackReason.implementationError,
      );
    const adapter = route.t.adapter;
    // The device id comes from the topic and is the sender's identity: an empty level (devices//oximeter) names nobody.
    if (route.t.filter.includes('+') && !deviceId) {
      return refuse(
        403,
        outcome([issue('forbidden', `topic '${topic}' names no device (empty level where the device id belongs)`)]),
        'refused',
        PubackReason.notAuthorized,
        adapter,
      );
    }
    let message: InboundMessage;
    try {
      message = this.messageOf(topic, payload, deviceId, receivedAt);
    } catch (e) {
      return refuse(400, (e as GatewayError).outcome, 'malformed', PubackReason.payloadFormatInvalid, adapter);
    }
    try {
      const ingested = this.deps.ingestor.ingest(adapter, message);
      // A message queued after its bound and redelivered is not written twice (content job ids, conditional writes).
      const r = await withTimeout(ingested, this.deps.answerWithinMs, 'the message could not be queued');
      this.transientStreak = 0;
      this.counts.accepted++;
      metrics.inc('mqtt_messages_total', { result: 'accepted', adapter });
      log.debug({ topic, adapter, deviceId, jobs: r.jobIds.length, dup }, 'MQTT message queued');
      return 'ack';
    } catch (err) {
      const oe = err instanceof GatewayError ? err : undefined;
      // A retryable refusal (or an unexpected error) may mean it is not stored: no PUBACK, the broker redelivers.
      if (!oe || oe.retryable) {
        this.counts.deferred++;
        metrics.inc('mqtt_messages_total', { result: 'deferred', adapter });
        log.warn(
          { topic, adapter, deviceId, status: oe?.status, error: oe ? undefined : (err as Error)?.name },
          'MQTT message not acknowledged: the queue cannot take it now; the broker will redeliver it',
        );
        return 'retry';
      }
      const status = oe.status;
      return refuse(
        status,
        oe.outcome,
        'refused',
        status === 403 || status === 401 ? PubackReason.notAuthorized : PubackReason.implementationError,
        adapter,
      );
    }
  }

  /** The message a payload on a topic makes: parsed JSON, the device id from the topic as the sender. Throws 400. */
  private messageOf(topic: string, payload: Buffer, deviceId: string | undefined, receivedAt: string): InboundMessage {
    let body: unknown;
    // JSON is UTF-8 (RFC 8259): bytes that are not would be replaced by U+FFFD on decoding, and two device or patient
    // ids that differ only there would become one. Refused before decoding.
    if (!isUtf8(payload)) {
      const at = firstInvalidUtf8(payload);
      throw new GatewayError(
        400,
        outcome([issue('structure', `the payload is not valid UTF-8 (first invalid byte at offset ${at}); JSON must be UTF-8`, ['$'])]),
        { retryable: false },
      );
    }
    try {
      body = JSON.parse(payload.toString('utf8').replace(/^\uFEFF/, ''));
    } catch (e) {
      const detail = (e as Error).message.split('\n')[0].slice(0, 120);
      throw new GatewayError(400, outcome([issue('structure', `the payload is not well-formed JSON (${detail})`, ['$'])]), {
        retryable: false,
      });
    }
    const attributes: Record<string, string> = { topic };
    if (deviceId) attributes.deviceId = deviceId;
    const principal: Principal | undefined = deviceId ? { role: 'device', id: deviceId, keyId: 'mqtt-topic' } : undefined;
    return { body, channel: 'mqtt', receivedAt, attributes, ...(principal ? { principal } : {}) };
  }

  /** Replays a kept message as if it had arrived again on its topic (same device identity); no PUBACK involved. */
  async replay(entry: Refusal): Promise<ReplayResult> {
    const topic = entry.mqtt?.topic ?? '';
    const route = this.config.topics.map((t) => ({ t, captures: matchTopic(t.filter, topic) })).find((r) => r.captures);
    const payload = entry.rawBase64 !== undefined ? Buffer.from(entry.rawBase64, 'base64') : Buffer.from(entry.raw ?? '', 'utf8');
    const refused = (e: GatewayError): ReplayResult => ({
      accepted: false,
      result: 'refused',
      refusal: { status: e.status, reason: e.message, outcome: e.outcome },
    });
    if (!route)
      return refused(
        new GatewayError(404, outcome([issue('not-found', `no adapter is mapped to topic '${topic}' (MQTT_TOPICS)`)]), {
          retryable: false,
        }),
      );
    try {
      const message = this.messageOf(topic, payload, route.captures?.[0] || undefined, entry.receivedAt);
      message.attributes = { ...message.attributes, replayOf: entry.id };
      const r = await this.deps.ingestor.ingest(route.t.adapter, message);
      return {
        accepted: true,
        result: 'accepted',
        detail: { jobIds: r.jobIds, readings: r.translations.length, observations: r.observations },
      };
    } catch (err) {
      if (err instanceof GatewayError && !err.retryable) return refused(err);
      throw err;
    }
  }

  private errorTopicFor(topic: string, deviceId?: string): string {
    return this.config.errorTopic.replaceAll('{topic}', topic).replaceAll('{deviceId}', deviceId ?? 'unknown');
  }

  /** Publishes the error report without waiting for its PUBACK: mqtt.js would process that PUBACK only after this
   *  message's callback, so waiting here would deadlock the connection. */
  private report(r: Report): void {
    this.client?.publish(this.errorTopicFor(r.topic, r.deviceId), JSON.stringify(r), { qos: 1 }, (err) => {
      if (err) this.deps.log.warn({ error: err.message }, 'MQTT error report not published');
    });
  }

  /** Keeps the refused message (raw, with the reason) in the refusal store. Best effort. */
  private async keep(r: Report, payload: Buffer): Promise<void> {
    const { refusals } = this.deps;
    if (!refusals) return;
    const raw = payload.toString('utf8');
    const utf8 = Buffer.from(raw, 'utf8').equals(payload);
    await withTimeout(
      refusals.add({
        channel: 'mqtt',
        format: 'text',
        ...(r.adapter ? { adapterId: r.adapter } : {}),
        receivedAt: r.receivedAt,
        status: r.status,
        reason: r.outcome.issue.map((i) => i.diagnostics ?? i.code).join('; '),
        outcome: r.outcome,
        mqtt: { topic: r.topic, ...(r.deviceId ? { deviceId: r.deviceId } : {}) },
        ...(r.deviceId ? { deviceIds: [r.deviceId] } : {}),
        ...(utf8 ? { raw } : { rawBase64: payload.toString('base64') }),
      }),
      this.deps.answerWithinMs,
      'the refusal store did not answer',
      'the refusal was acknowledged without being kept',
    ).catch((err: Error) => this.deps.log.warn({ error: err.message }, 'MQTT: the refused message could not be kept'));
  }

  /** Stops taking messages, lets the message in hand finish (acknowledged or not), disconnects (the session stays). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.pauseTimer) clearTimeout(this.pauseTimer);
    const client = this.client;
    if (!client) return;
    await Promise.race([Promise.allSettled([...this.inflight]), new Promise((r) => setTimeout(r, 10_000).unref())]);
    await Promise.race([
      new Promise<void>((res) => client.end(false, {}, () => res())),
      new Promise<void>((res) => setTimeout(res, 2000).unref()),
    ]);
    if (!client.disconnected) await new Promise<void>((res) => client.end(true, () => res()));
  }
}

const redact = (url: string): string => withoutCredentials(url) || 'mqtt';

/** The MQTT channel (roles that ingest, MQTT_URL set) and GET /api/mqtt/status. */
export function mqttChannel(deps: MqttChannelDeps & { config: MqttConfig; operatorOnly: RequestHandler }): Channel & { mqtt: MqttChannel } {
  const { config } = deps;
  const channel = new MqttChannel(config, deps);
  deps.refusals?.replayWith('mqtt', (entry) => channel.replay(entry));
  const router = express.Router();
  router.get('/api/mqtt/status', deps.operatorOnly, (_req, res) => {
    res.json({
      broker: redact(config.url!),
      clientId: config.clientId,
      connected: channel.connected,
      topics: config.topics,
      errorTopic: config.errorTopic,
      counts: channel.counts,
      lastError: channel.lastError ?? null,
    });
  });
  return { name: 'mqtt', router, mqtt: channel, start: () => channel.start(), stop: () => channel.stop() };
}
