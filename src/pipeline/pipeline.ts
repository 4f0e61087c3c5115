/**
 * The path every channel shares: adapter → validate → enqueue. Channels know nothing of FHIR; they hand a message in
 * and get either the job ids (the data is durably queued: acknowledge the sender; one job per message, or several for a
 * large one) or an GatewayError
 * (422: the data cannot be mapped or is invalid, nothing queued; 503: the queue cannot take it now).
 */
import type { OperationOutcomeIssue } from 'fhir/r4';
import type { AdapterRegistry } from '../adapters/registry.js';
import { type InboundMessage, type Reading, type TranslationContext, TranslationError } from '../core/contract.js';
import { issue, notFound, GatewayError, outcome, unprocessable } from '../core/errors.js';
import { validate } from '../fhir/validate.js';
import { DEFAULT_READINGS_PER_JOB, type DeliveryQueue, jobsFor } from '../queue/queue.js';
import type { Metrics } from '../observability/metrics.js';

export interface IngestResult {
  jobIds: string[];
  translations: Reading[];
  observations: number;
}

/** What channels depend on: the HTTP, MLLP and MQTT listeners all call `ingest`. */
export interface Ingestor {
  /** Translates, validates and durably enqueues. Throws GatewayError when it refuses. */
  ingest(adapterId: string, message: InboundMessage): Promise<IngestResult>;
  /** Translates and validates only (dry run): nothing is queued. */
  translate(adapterId: string, message: InboundMessage): Reading[];
}

/**
 * Device policy at the door, after translation and before validation (device management plugs in here): refuses data
 * of devices that may not send (throw GatewayError 403), holds data of unknown devices for review, fills in
 * the assigned patient, records monitoring. Returns the translations to validate and queue.
 */
export interface IngestGuard {
  admit(adapterId: string, message: InboundMessage, translations: Reading[]): Promise<Reading[]>;
}

export class Pipeline implements Ingestor {
  guard?: IngestGuard;

  constructor(
    private readonly registry: AdapterRegistry,
    private readonly queue: Pick<DeliveryQueue, 'enqueue'>,
    private readonly context: TranslationContext,
    private readonly metrics?: Metrics,
    private readonly readingsPerJob = DEFAULT_READINGS_PER_JOB,
  ) {}

  translate(adapterId: string, message: InboundMessage): Reading[] {
    return this.validateAll(this.translateOnly(adapterId, message));
  }

  private translateOnly(adapterId: string, message: InboundMessage): Reading[] {
    const adapter = this.registry.get(adapterId);
    if (!adapter) throw notFound(`no adapter '${adapterId}' is registered`);
    try {
      return adapter.translate(message, this.context);
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      // An adapter that throws something else met input it did not expect: the sender gets a 422, not a 500.
      // Only the error's type is reported: its message may quote the payload.
      throw new TranslationError([issue('processing', `adapter '${adapterId}' could not translate this payload (${(err as Error)?.name ?? 'error'})`)]);
    }
  }

  private validateAll(translations: Reading[]): Reading[] {
    const issues: OperationOutcomeIssue[] = [];
    translations.forEach((t, i) => {
      const where = translations.length > 1 ? `reading[${i}]` : undefined;
      for (const d of t.devices) issues.push(...validate(d, where));
      for (const p of t.patients ?? []) issues.push(...validate(p, where));
      t.observations.forEach((o, j) => {
        const code = Array.isArray(o.code?.coding) ? o.code.coding.map((c) => c?.code).join('/') : o.code?.text;
        issues.push(...validate(o, `${where ? where + '.' : ''}observation[${j}] (${code})`));
      });
    });
    if (issues.length) throw unprocessable(issues);
    return translations;
  }

  async ingest(adapterId: string, message: InboundMessage): Promise<IngestResult> {
    let translations: Reading[];
    try {
      translations = this.translateOnly(adapterId, message);
      if (this.guard) translations = await this.guard.admit(adapterId, message, translations).catch((err: unknown) => {
        if (err instanceof GatewayError) throw err;
        // The guard reads the device registry in Redis: when Redis is unreachable the sender must retry, not be told
        // its data is wrong.
        throw new GatewayError(503, outcome([issue('transient', 'the device registry (Redis) is not reachable; nothing was accepted, retry later')]), { cause: err, headers: { 'Retry-After': '5' } });
      });
      translations = this.validateAll(translations);
    } catch (err) {
      // Label with a registered id only: ids from URLs would grow the metrics without bound.
      this.metrics?.inc('ingest_refused_total', { adapter: this.registry.get(adapterId) ? adapterId : 'unknown', channel: message.channel });
      throw err;
    }
    const deliverable = translations.filter((t) => t.observations.length || t.devices.length || t.patients?.length);
    const jobs = jobsFor({ adapterId, channel: message.channel, receivedAt: message.receivedAt }, deliverable, this.readingsPerJob);
    const jobIds = jobs.length ? await this.queue.enqueue(jobs) : [];
    const observations = translations.reduce((n, t) => n + t.observations.length, 0);
    this.metrics?.inc('ingest_accepted_total', { adapter: adapterId, channel: message.channel }, jobs.length);
    this.metrics?.inc('ingest_observations_total', { adapter: adapterId, channel: message.channel }, observations);
    return { jobIds, translations, observations };
  }
}
