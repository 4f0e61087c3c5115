/**
 * The audit trail in Redis: a sorted set scored by the time recorded (every gateway instance writes to the same one),
 * capped at AUDIT_MAX_EVENTS (oldest dropped first). With AUDIT_FORWARD=true every event is also queued for the EHR
 * as a delivery job whose translation holds only `auditEvents` (the worker POSTs each inside its transaction).
 * Recording never throws to its caller: an audit write that fails is logged (without PHI) and counted. A forwarded
 * event is validated first, like every resource the gateway queues.
 */
import type { Redis } from 'ioredis';
import type { AuditEvent } from 'fhir/r4';
import type { DeliveryQueue } from '../queue/queue.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { validateReadings } from '../fhir/validate.js';
import { auditKindOf, buildAuditEvent, PRINCIPAL_SYSTEM, type AuditInput } from './event.js';

const KEY = 'gw:audit';

export interface AuditQuery {
  action?: string;
  kind?: string;
  agent?: string;
  entity?: string;
  outcome?: string;
  since?: string;
  until?: string;
  limit?: number;
}

export class AuditTrail {
  constructor(
    private readonly redis: Redis,
    private readonly opts: { deviceSystem: string; maxEvents: number; forward: boolean },
    private readonly queue: Pick<DeliveryQueue, 'enqueue'> | undefined,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  /** Builds, stores and (optionally) forwards an AuditEvent. Resolves once stored; never rejects. */
  async record(input: AuditInput): Promise<AuditEvent> {
    const event = buildAuditEvent(input, this.opts.deviceSystem);
    try {
      const score = Date.parse(event.recorded);
      await this.redis
        .multi()
        .zadd(KEY, score, JSON.stringify(event))
        .zremrangebyrank(KEY, 0, -(this.opts.maxEvents + 1))
        .exec();
      this.metrics.inc('audit_events_total', { kind: input.kind });
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
    const raw = await this.redis.zrevrangebyscore(
      KEY,
      Number.isFinite(max) ? max : '+inf',
      Number.isFinite(min) ? min : '-inf',
      'LIMIT',
      0,
      20000,
    );
    const out: AuditEvent[] = [];
    for (const s of raw) {
      const e = JSON.parse(s) as AuditEvent;
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
