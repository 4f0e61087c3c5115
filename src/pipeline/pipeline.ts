/**
 * The path every channel shares: translate → guard.decide → validate → guard.commit → enqueue. Channels know nothing
 * of FHIR; they hand a message in and get either the job ids (the data is durably queued: acknowledge the sender; one
 * job per message, or several for a large one) or a GatewayError (422: the data cannot be mapped or is invalid; 403:
 * the device may not send; 503: the queue cannot take it now; its `retryable` flag tells the channel what to do).
 *
 * The device guard runs in two phases so that a refused message writes nothing: `decide` only reads (the registry,
 * the assigned patient), validation runs on what it decided, and only then `commit` writes (auto-registration, held
 * readings, last seen). A message refused by validation leaves no device registered and no "last seen" moved.
 */
import { checkMessageLimits } from '../adapters/limits.js';
import { isOffThread } from '../adapters/off-thread.js';
import type { AdapterRegistry } from '../adapters/registry.js';
import { type DeviceAdapter, type InboundMessage, type Reading, type TranslationContext, TranslationError } from '../core/contract.js';
import { GatewayError, issue, notFound, outcome, unprocessable } from '../core/errors.js';
import type { ReadingChecks } from '../fhir/plausibility.js';
import { validateReadings } from '../fhir/validate.js';
import { DEFAULT_READINGS_PER_JOB, jobsFor } from '../queue/queue.js';
import type { JobQueue } from '../queue/routing.js';
import type { Metrics } from '../observability/metrics.js';

export interface IngestResult {
  jobIds: string[];
  /** The readings queued for delivery. */
  translations: Reading[];
  observations: number;
  /** Readings kept in Redis for review instead (a device waiting for activation); acknowledged like queued ones. */
  held: number;
}

/** What channels depend on: the HTTP, MLLP and MQTT listeners all call `ingest`. */
export interface Ingestor {
  /** Translates, validates and durably enqueues. Throws GatewayError when it refuses. */
  ingest(adapterId: string, message: InboundMessage): Promise<IngestResult>;
  /** Translates and validates only (dry run): nothing is queued. */
  translate(adapterId: string, message: InboundMessage): Reading[];
}

/**
 * Device policy at the door (device management plugs in here), in two phases. `decide` reads only: it refuses data of
 * devices that may not send (throws GatewayError 403), fills in the assigned patient, and says which readings would be
 * held for review. Nothing is written until the pipeline has validated every reading; then `commit` registers unknown
 * devices, holds readings, records monitoring, and returns the readings to queue.
 */
export interface GuardDecision {
  /** Every reading of the message, patients filled in: all of them are validated (held ones too). */
  readings: Reading[];
  /** Writes what was decided; returns the readings to queue (held ones are left out: they are in Redis already). */
  commit(): Promise<Reading[]>;
  /**
   * Set by `commit`: its best-effort writes (monitoring: last seen) still in flight. The pipeline waits for them with
   * the enqueue, not before it, and answers the sender after both.
   */
  pending?: Promise<unknown>;
}

/** One message through the pipeline: queued (acknowledged) or refused. For in-process statistics (the console). */
export interface IngestEvent {
  adapterId: string;
  channel: string;
  outcome: 'queued' | 'refused';
  /** Readings queued (held ones not counted). */
  readings: number;
}

export interface IngestObserver {
  ingested(e: IngestEvent): void;
}

export interface IngestGuard {
  decide(adapterId: string, message: InboundMessage, readings: Reading[]): Promise<GuardDecision>;
}

/**
 * Runs one adapter. An adapter that throws something other than a GatewayError met input it did not expect: the
 * sender gets a 422, not a 500. Only the error's type is reported: its message may quote the payload.
 */
export function translateWith(adapter: DeviceAdapter, message: InboundMessage, context: TranslationContext): Reading[] {
  try {
    return adapter.translate(message, context);
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw new TranslationError([
      issue('processing', `adapter '${adapter.id}' could not translate this payload (${(err as Error)?.name ?? 'error'})`),
    ]);
  }
}

/**
 * Runs one adapter within the bounds on work per message (adapters/limits.ts): an adapter that can evaluate off the
 * event loop (a declarative mapping: worker threads and a time budget) does so; every adapter's result is held to the
 * readings and Observations per message limits.
 */
export async function translateBounded(adapter: DeviceAdapter, message: InboundMessage, context: TranslationContext): Promise<Reading[]> {
  let readings: Reading[];
  if (isOffThread(adapter)) {
    try {
      readings = await adapter.translateAsync(message, context);
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      throw new TranslationError([
        issue('processing', `adapter '${adapter.id}' could not translate this payload (${(err as Error)?.name ?? 'error'})`),
      ]);
    }
  } else readings = translateWith(adapter, message, context);
  checkMessageLimits(readings);
  return readings;
}

/** A guard failure that is not a GatewayError is Redis being unreachable: the sender must retry. */
function guardFailure(err: unknown): never {
  if (err instanceof GatewayError) throw err;
  throw new GatewayError(
    503,
    outcome([issue('transient', 'the device registry (Redis) is not reachable; nothing was accepted, retry later')]),
    {
      cause: err,
      headers: { 'Retry-After': '5' },
    },
  );
}

export class Pipeline implements Ingestor {
  guard?: IngestGuard;
  /** Plausible ranges and the time window of effective times (fhir/plausibility.ts); the built-in defaults when unset. */
  checks?: ReadingChecks;
  observer?: IngestObserver;

  constructor(
    private readonly registry: AdapterRegistry,
    private readonly queue: Pick<JobQueue, 'enqueue'>,
    private readonly context: TranslationContext,
    private readonly metrics?: Metrics,
    private readonly readingsPerJob = DEFAULT_READINGS_PER_JOB,
  ) {}

  translate(adapterId: string, message: InboundMessage): Reading[] {
    return this.validateAll(this.translateOnly(adapterId, message), message, this.registry.get(adapterId));
  }

  private translateOnly(adapterId: string, message: InboundMessage): Reading[] {
    const readings = translateWith(this.adapter(adapterId), message, this.context);
    checkMessageLimits(readings);
    return readings;
  }

  private adapter(adapterId: string): DeviceAdapter {
    const adapter = this.registry.get(adapterId);
    if (!adapter) throw notFound(this.registry.inactiveReason(adapterId) ?? `no adapter '${adapterId}' is registered`);
    return adapter;
  }

  private validateAll(readings: Reading[], message: InboundMessage, adapter?: DeviceAdapter): Reading[] {
    // Effective times are compared with the gateway's clock: the receive time, or now for a replay of an older message.
    const now = new Date().toISOString();
    const issues = validateReadings(readings, {
      locate: adapter?.locate?.bind(adapter),
      checks: this.checks,
      receivedAt: Date.parse(message.receivedAt) > Date.parse(now) ? message.receivedAt : now,
    });
    if (issues.length) throw unprocessable(issues);
    return readings;
  }

  async ingest(adapterId: string, message: InboundMessage): Promise<IngestResult> {
    let translations: Reading[];
    let held = 0;
    let pending: Promise<unknown> | undefined;
    try {
      translations = await translateBounded(this.adapter(adapterId), message, this.context);
      if (this.guard) {
        const decision = await this.guard.decide(adapterId, message, translations).catch(guardFailure);
        this.validateAll(decision.readings, message, this.registry.get(adapterId));
        translations = await decision.commit().catch(guardFailure);
        pending = decision.pending;
        held = decision.readings.length - translations.length;
      } else this.validateAll(translations, message, this.registry.get(adapterId));
    } catch (err) {
      // Label with a registered id only: ids from URLs would grow the metrics without bound.
      const adapter = this.registry.get(adapterId) ? adapterId : 'unknown';
      this.metrics?.inc('ingest_refused_total', { adapter, channel: message.channel });
      this.observer?.ingested({ adapterId: adapter, channel: message.channel, outcome: 'refused', readings: 0 });
      throw err;
    }
    const deliverable = translations.filter((t) => t.observations.length || t.devices.length || t.patients?.length);
    const jobs = jobsFor({ adapterId, channel: message.channel, receivedAt: message.receivedAt }, deliverable, this.readingsPerJob);
    // One job per destination whose filter matches, all in Redis before the sender is acknowledged (queue/routing.ts).
    const sendingFacility = message.attributes?.sendingFacility;
    const jobIds = jobs.length ? await this.queue.enqueue(jobs, sendingFacility ? { sendingFacility } : {}) : [];
    await pending;
    const observations = translations.reduce((n, t) => n + t.observations.length, 0);
    this.metrics?.inc('ingest_accepted_total', { adapter: adapterId, channel: message.channel }, jobs.length);
    this.metrics?.inc('ingest_observations_total', { adapter: adapterId, channel: message.channel }, observations);
    this.observer?.ingested({ adapterId, channel: message.channel, outcome: 'queued', readings: deliverable.length });
    this.metrics?.inc('ingest_readings_total', { adapter: adapterId, channel: message.channel }, deliverable.length);
    return { jobIds, translations, observations, held };
  }
}
