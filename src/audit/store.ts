/**
 * The audit trail in Redis, in two streams, each a sorted set scored by the time recorded (every gateway instance
 * writes to the same ones) with its own cap (oldest dropped first):
 *
 *   gw:audit           lifecycle and data events: administrative actions, device lifecycle, assignments,
 *                      configuration, credentials issued/rotated/revoked, adapters (AUDIT_MAX_EVENTS)
 *   gw:audit:security  refusals: refused access (401/403, failed authentications aggregated per source and window by
 *                      access/auth-failures.ts) and refused data (AUDIT_SECURITY_MAX_EVENTS)
 *
 * Separate so that a flood of refusals, which anyone who can reach the gateway can cause, can never evict lifecycle
 * history: it only rolls over the security stream. `query` reads both, merged newest first. With AUDIT_FORWARD=true every event is also queued for the EHR
 * as a delivery job whose translation holds only `auditEvents` (the worker POSTs each inside its transaction).
 * Recording never throws to its caller: an audit write that fails is logged (without PHI) and counted. A forwarded
 * event is validated first, like every resource the gateway queues.
 */
import type { RedisClient } from '../queue/connection.js';
import type { AuditEvent } from 'fhir/r4';
import type { JobQueue } from '../queue/routing.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { validateReadings } from '../fhir/validate.js';
import { type AuditKind, auditKindOf, buildAuditEvent, PRINCIPAL_SYSTEM, type AuditInput } from './event.js';

export const AuditStreams = { lifecycle: 'lifecycle', security: 'security' } as const;
export type AuditStream = (typeof AuditStreams)[keyof typeof AuditStreams];
export const AUDIT_KEYS: Readonly<Record<AuditStream, string>> = { lifecycle: 'gw:audit', security: 'gw:audit:security' };

/** The stream an event kind is kept in: refusals (what an outsider can cause at will) in the security stream. */
export function streamOf(kind: AuditKind | string): AuditStream {
  return kind === 'access-refused' || kind === 'data-refused' ? 'security' : 'lifecycle';
}

/** Events read from each stream for one query before filtering (a filter that matches little scans this many). */
const SCAN_MAX = 20000;

export interface AuditQuery {
  action?: string;
  kind?: string;
  agent?: string;
  entity?: string;
  outcome?: string;
  since?: string;
  until?: string;
  limit?: number;
  /** One stream only (both when absent). */
  stream?: AuditStream;
}

export class AuditTrail {
  constructor(
    private readonly redis: RedisClient,
    private readonly opts: { deviceSystem: string; maxEvents: number; securityMaxEvents?: number; forward: boolean },
    private readonly queue: Pick<JobQueue, 'enqueue'> | undefined,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** Builds, stores and (optionally) forwards an AuditEvent. Resolves once stored; never rejects. */
  async record(input: AuditInput): Promise<AuditEvent> {
    const event = buildAuditEvent(input, this.opts.deviceSystem);
    try {
      const score = Date.parse(event.recorded);
      const stream = streamOf(input.kind);
      const key = AUDIT_KEYS[stream];
      const max = stream === 'security' ? (this.opts.securityMaxEvents ?? this.opts.maxEvents) : this.opts.maxEvents;
      await this.redis
        .multi()
        .zadd(key, score, JSON.stringify(event))
        .zremrangebyrank(key, 0, -(max + 1))
        .exec();
      this.metrics.inc('audit_events_total', { kind: input.kind, stream });
    } catch (err) {
      this.metrics.inc('audit_failures_total', {});
      this.log.error({ kind: input.kind, error: (err as Error).message }, 'audit event could not be stored');
    }
    if (this.opts.forward && this.queue) {
      const q = this.queue;
      const reading = { devices: [], observations: [], auditEvents: [event] };
      // Validated like everything else before it is queued: the EHR must never be sent a malformed AuditEvent.
      const issues = validateReadings([reading]);
      if (issues.length) {
        this.metrics.inc('audit_forward_failures_total', {});
        this.log.error(
          { kind: input.kind, issues: issues.map((i) => i.expression?.[0] ?? i.code) },
          'audit event is not a valid FHIR AuditEvent; kept here, not forwarded',
        );
        return event;
      }
      q.enqueue([{ adapterId: 'audit', channel: 'audit', receivedAt: event.recorded, translations: [reading] }]).catch((err: Error) => {
        this.metrics.inc('audit_forward_failures_total', {});
        this.log.warn({ kind: input.kind, error: err.message }, 'audit event could not be queued for the EHR');
      });
    }
    return event;
  }

  async query(q: AuditQuery): Promise<AuditEvent[]> {
    const min = q.since ? Date.parse(q.since) : -Infinity;
    const max = q.until ? Date.parse(q.until) : Infinity;
    const limit = Math.min(Math.max(q.limit ?? 100, 1), 1000);
    // Both streams even for a kind that is kept in one: refusals recorded by earlier versions are in gw:audit.
    const streams = (Object.keys(AUDIT_KEYS) as AuditStream[]).filter((s) => (q.stream ?? s) === s);
    const read = (stream: AuditStream) =>
      this.redis.zrevrangebyscore(
        AUDIT_KEYS[stream],
        Number.isFinite(max) ? max : '+inf',
        Number.isFinite(min) ? min : '-inf',
        'WITHSCORES',
        'LIMIT',
        0,
        SCAN_MAX,
      );
    const lists = await Promise.all(streams.map(read));
    // Each list is newest first (member, score, member, score…): merge them, newest first.
    const at = lists.map(() => 0);
    const out: AuditEvent[] = [];
    for (;;) {
      let best = -1;
      for (let i = 0; i < lists.length; i++) {
        if (at[i] >= lists[i].length) continue;
        if (best < 0 || Number(lists[i][at[i] + 1]) > Number(lists[best][at[best] + 1])) best = i;
      }
      if (best < 0) break;
      const e = JSON.parse(lists[best][at[best]]) as AuditEvent;
      at[best] += 2;
      if (q.action && e.action !== q.action) continue;
      if (q.kind && auditKindOf(e) !== q.kind) continue;
      if (q.outcome && e.outcome !== q.outcome) continue;
      if (q.agent) {
        const who = e.agent.find((a) => a.requestor)?.who?.identifier;
        if (!(who?.system === PRINCIPAL_SYSTEM && (who.value === q.agent || who.value?.endsWith(`:${q.agent}`)))) continue;
      }
      if (q.entity && !(e.entity ?? []).some((en) => en.what?.identifier?.value === q.entity)) continue;
      out.push(e);
      if (out.length >= limit) break;
    }
    return out;
  }
}
