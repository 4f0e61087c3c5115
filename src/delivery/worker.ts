/**
 * The delivery worker: bull's side of delivery. It takes jobs from the queue, has attempt.ts make one attempt of each,
 * and settles the job from what became of each reading: retried with backoff (honouring Retry-After), completed, or
 * given up as dead letters (the job, or each reading given up). It knows nothing of HL7v2 or vendor formats. Whether
 * a failure may be retried is read from the error (`retryable`, decided in ehr-client.ts and errors.ts), never from an
 * HTTP status here. Every job ends delivered or as a dead letter; none is dropped without a record.
 */
import { setMaxListeners } from 'node:events';
import type { OperationOutcome } from 'fhir/r4';
import type { Logger } from '../observability/logger.js';
import { type Metrics, recordDelivered } from '../observability/metrics.js';
import { type DeliveryJob, type DeliveryQueue, isStalledFailure, normalizeJob, type QueuedJob } from '../queue/queue.js';
import type { Reading } from '../core/contract.js';
import { type AttemptSettings, DeliveryAttempts, type DeliveryOutcome, isRetryableFailure, type ReadingResult } from './attempt.js';
import { BreakerOpenError, type CircuitBreaker, type Permit, PermitAbortedError } from './breaker.js';
import type { DeadLetterStore } from './dead-letters.js';
import { DeviceVersions } from './device-versions.js';
import { type EhrClient, EhrError } from './ehr-client.js';
import { asError, isPermanent, PermanentError } from './errors.js';
import { KeyLocks } from './locks.js';
import { PatientLookup } from './patients.js';
import { DestinationWriter, observationKey } from './writer.js';
import { destinationGroupPrefix, destinationPrefix } from '../core/keys.js';
import type { WriteMode } from '../config/destinations.js';

export interface WorkerSettings extends AttemptSettings {
  concurrency: number;
  /** The destination this worker delivers to (its metrics label, its keys; default ehr). */
  destination?: string;
  /** Its write mode (undefined: chosen from its CapabilityStatement) and, for individual, conditional create. */
  writeMode?: WriteMode;
  conditionalCreate?: boolean;
  retryBaseDelayMs: number;
  retryMaxDelayMs: number;
  /**
   * Called with what a job wrote (each Observation with the id the destination gave it) before the job completes: the
   * subscribers that follow this destination are queued there. A failure fails the job, which is retried.
   */
  onDelivered?: (job: DeliveryJob) => Promise<void>;
}

/** How the worker makes one attempt of a job; by default, writing it to a FHIR destination (attempt.ts). */
export interface JobAttempts {
  attempt(job: QueuedJob, last: boolean, probe?: boolean): Promise<ReadingResult[]>;
  start?(): void;
  stop?(): void;
}

/**
 * A job handed back to the queue without using an attempt: it was waiting for the destination's circuit breaker when
 * the worker stopped. It returns after `delayMs` (bull's backoff reads it: backoffDelay).
 */
export class DeferredError extends Error {
  constructor(readonly delayMs: number) {
    super("deferred: the destination's circuit breaker is open; the job keeps its attempts");
    this.name = 'DeferredError';
    // bull keeps the stack of every failure in the job: a job deferred at every restart of a long outage would grow.
    this.stack = '';
  }
}

/** Exponential backoff with full jitter and a cap; an EHR's Retry-After wins (capped too); a deferred job its own delay. */
export function backoffDelay(attemptsMade: number, err: Error | undefined, baseMs: number, maxMs: number): number {
  if (err instanceof DeferredError) return err.delayMs;
  if (err instanceof EhrError && err.retryAfterMs !== undefined) return Math.min(Math.max(err.retryAfterMs, baseMs), maxMs);
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/**
 * The readings written, each Observation with the id the destination gave it (`Observation/<id>` from the writer);
 * Observations whose id is not known are left out, and readings left without Observations.
 */
function writtenReadings(readings: Reading[], results: ReadingResult[]): Reading[] {
  const out: Reading[] = [];
  readings.forEach((t, i) => {
    const r = results[i];
    if (r instanceof Error || !r.written) return;
    const observations = t.observations.flatMap((o) => {
      const at = r.written?.get(observationKey(o));
      return at ? [{ ...o, id: at.slice('Observation/'.length) }] : [];
    });
    if (observations.length) out.push({ ...t, observations });
  });
  return out;
}

const where = (job: QueuedJob) => ({ adapterId: job.data.adapterId, channel: job.data.channel, receivedAt: job.data.receivedAt });

/** What the EHR answered, for a dead letter: nothing when it did not answer or the gateway refused on its own. */
function ehrAnswer(e: Error): { httpStatus?: number; outcome?: OperationOutcome } {
  const ehr = e instanceof PermanentError ? e.ehr : e instanceof EhrError ? e : undefined;
  return ehr?.ehrStatus === undefined ? {} : { httpStatus: ehr.ehrStatus, outcome: ehr.outcome };
}

/** How a job (or one of its readings) was settled. For in-process statistics (the console). */
export interface DeliveryEvent {
  adapterId: string;
  channel: string;
  /** When the message was received at the door: ingest→EHR latency. */
  receivedAt: string;
  outcome: 'delivered' | 'retry' | 'dead-letter';
  error?: string;
}

export interface DeliveryObserver {
  settled(e: DeliveryEvent): void;
}

export class DeliveryWorker {
  observer?: DeliveryObserver;
  /** Jobs this process has dead-lettered (whole, or some readings), removed from bull once it has recorded them as done. */
  private readonly deadLettered = new Set<string>();
  private readonly patients: PatientLookup;
  readonly destination: string;
  readonly writer: DestinationWriter;
  private started = false;
  private closing?: Promise<void>;
  /** Aborted when the worker stops: jobs waiting for the circuit breaker go back to the queue. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly queue: DeliveryQueue,
    private readonly ehr: EhrClient,
    private readonly deadLetters: DeadLetterStore,
    private readonly settings: WorkerSettings,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Another way to attempt a job (a subscriber's notification: notifier.ts); the default writes to the FHIR server. */
    private readonly custom?: JobAttempts,
  ) {
    this.patients = new PatientLookup(ehr, settings.unknownPatientPolicy);
    this.destination = settings.destination ?? 'ehr';
    this.writer = new DestinationWriter(ehr, settings, log, this.destination);
    // One listener per job waiting for the circuit breaker: up to DELIVERY_CONCURRENCY.
    setMaxListeners(0, this.stopping.signal);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const redis = this.queue.redis;
    // Each destination has its own locks and device versions: one destination's slow write never holds up another's.
    const d = this.destination;
    const devices = new DeviceVersions(redis, this.log, destinationPrefix('gw:dev:fhirver:', d));
    // A job's locks are taken in one script: on a cluster their keys share the destination's hash tag (`{gw:lock}:`).
    const locks = new KeyLocks(redis, destinationGroupPrefix('gw:lock', d, redis));
    const attempts =
      this.custom ?? new DeliveryAttempts(this.ehr, locks, this.patients, devices, this.settings, this.log, this.metrics, this.writer, d);
    // The write mode is chosen (and logged) now when it comes from the server; a server that does not answer is asked
    // again at the first delivery.
    if (this.custom) this.custom.start?.();
    else
      void this.writer.resolve().catch((err: Error) => this.log.warn({ destination: d, error: err.message }, 'write mode not chosen yet'));
    void this.queue
      .process(this.settings.concurrency, (job) => this.handle(job, attempts))
      .catch((err: unknown) => {
        this.log.error({ err: String(err) }, 'delivery worker stopped');
      });
    this.queue.onFailed((job, err) => void this.onFailed(job, err));
    // A job completed with readings given up (dead letters) leaves bull, as a failed one does: see onFailed.
    this.queue.onCompleted((job) => {
      if (this.deadLettered.delete(String(job.id))) void job.remove().catch(() => undefined);
    });
  }

  /**
   * After bull has moved a job to failed. A dead-lettered job is removed from bull: the dead-letter list is its record,
   * and a resend of the same content must become a new job rather than match the failed one. A job that failed for good
   * without a dead letter (bull's stalled limit: a worker died on it repeatedly; or the dead-letter write failed) gets
   * one here.
   */
  private async onFailed(job: QueuedJob, err: Error): Promise<void> {
    const id = String(job.id);
    if (err instanceof DeferredError) {
      this.log.debug({ jobId: id, attempt: job.attemptsMade }, 'handed back to the queue while the circuit breaker is open');
      return;
    }
    try {
      if (this.deadLettered.delete(id)) {
        await job.remove();
        return;
      }
      const final = job.attemptsMade >= (job.opts.attempts ?? 1) || isStalledFailure(err);
      if (!final) {
        this.log.warn(
          { destination: this.destination, jobId: id, attempt: job.attemptsMade, error: err.message },
          'delivery attempt failed; will retry',
        );
        return;
      }
      await this.writeDeadLetter(job, err, job.attemptsMade);
      this.metrics.inc('delivery_jobs_total', { destination: this.destination, outcome: 'dead-letter' });
      await job.remove();
    } catch (e) {
      const message = 'could not record the failed job as a dead letter; it stays in the failed jobs of the queue';
      this.log.error({ jobId: id, error: (e as Error).message }, message);
    }
  }

  /** Records the job, or one reading of it (`reading`: its index), as a dead letter. */
  private async writeDeadLetter(job: QueuedJob, e: Error, attempts: number, reading?: number): Promise<void> {
    const kind = e instanceof PermanentError ? e.kind : isPermanent(e) ? 'rejected' : 'exhausted';
    const { httpStatus, outcome } = ehrAnswer(e);
    const data = reading === undefined ? job.data : { ...job.data, translations: [job.data.translations[reading]] };
    await this.deadLetters.put({
      // A replayed dead letter that fails again keeps its id: the operator follows one entry, not a new one per retry.
      id: reading === undefined ? (job.data.replayOf ?? String(job.id)) : `${job.data.replayOf ?? job.id}.${reading}`,
      jobId: String(job.id),
      reason: e.message,
      kind,
      httpStatus,
      outcome,
      attempts,
      deadAt: new Date().toISOString(),
      job: data,
      destination: this.destination,
    });
    this.metrics.inc('delivery_dead_letters_total', {
      destination: this.destination,
      kind,
      adapter: job.data.adapterId,
      channel: job.data.channel,
    });
    this.observer?.settled({ ...where(job), outcome: 'dead-letter', error: e.message });
    const adapter = job.data.adapterId;
    this.log.warn(
      { destination: this.destination, jobId: job.id, reading, adapter, attempt: attempts, status: httpStatus, reason: e.message },
      'dead letter',
    );
  }

  /**
   * Stops taking jobs and waits for the ones in flight (bull's close does both). Jobs waiting for the circuit breaker
   * go back to the queue first, with their attempts.
   */
  stop(): Promise<void> {
    this.stopping.abort();
    this.custom?.stop?.();
    this.ehr.breaker?.stop();
    this.closing ??= this.started ? this.queue.close() : Promise.resolve();
    return this.closing;
  }

  /**
   * Hands the job back to bull without using an attempt: bull counts one for every failure (its moveToFailed adds one
   * to the job's attemptsMade and stores that number), so one is taken off first. The job goes to the delayed set
   * until about the next probe, in one Redis transaction: it is never out of Redis.
   */
  private defer(job: QueuedJob, err: unknown): never {
    if (!(err instanceof PermitAbortedError)) throw err;
    job.attemptsMade -= 1;
    this.metrics.inc('delivery_jobs_total', { destination: this.destination, outcome: 'deferred' });
    throw new DeferredError(Math.max(1000, this.ehr.breaker?.msUntilProbe() ?? 0));
  }

  /**
   * Whether an attempt met the destination down: a request the open breaker refused, or a retryable failure while the
   * breaker is not closed (the failure that opened it, a failed probe, a request in flight when it opened). Such an
   * attempt is not counted: the job waits for the breaker and tries again.
   */
  private metOutage(breaker: CircuitBreaker, outcome: ReadingResult[] | Error): boolean {
    const errors = (Array.isArray(outcome) ? outcome : [outcome]).filter((r): r is Error => r instanceof Error);
    if (errors.some((e) => e instanceof BreakerOpenError)) return true;
    return breaker.state !== 'closed' && errors.some((e) => !isPermanent(e));
  }

  /**
   * Makes one attempt of the job (attempt.ts: which transactions, and what the last attempt does) and settles it. Any
   * retryable failure before the last attempt retries the job. A reading given up in a job of several is its own dead
   * letter and the job completes with the rest; a job of which nothing could be written is the dead letter.
   */
  private async handle(job: QueuedJob, attempts: JobAttempts): Promise<DeliveryOutcome> {
    const attempt = job.attemptsMade + 1;
    const maxAttempts = job.opts.attempts ?? 1;
    const last = attempt >= maxAttempts;
    job.data = normalizeJob(job.data);
    const breaker = this.ehr.breaker;
    if (!breaker?.enabled) return this.conclude(job, attempt, last, await attempts.attempt(job, last).catch(asError));
    for (;;) {
      // While the destination is down the job waits here, active in bull (its lock renewed), its attempts untouched.
      const permit: Permit = await breaker.permit(this.stopping.signal).catch((e: unknown) => this.defer(job, e));
      let outcome: ReadingResult[] | Error;
      try {
        outcome = await breaker.runAs(permit, () => attempts.attempt(job, last, permit.probe)).catch(asError);
      } finally {
        breaker.settle(permit);
      }
      if (!this.metOutage(breaker, outcome)) return this.conclude(job, attempt, last, outcome);
      this.metrics.inc('delivery_jobs_total', { destination: this.destination, outcome: 'breaker-wait' });
    }
  }

  /** Settles the job from what became of its attempt (one result per reading, or the error that stopped it). */
  private async conclude(job: QueuedJob, attempt: number, last: boolean, made: ReadingResult[] | Error): Promise<DeliveryOutcome> {
    try {
      if (made instanceof Error) throw made;
      const readings = job.data.translations;
      const results = made;
      const failed = results.find(isRetryableFailure);
      if (failed && !last) throw failed;
      const firstError = results.find((r): r is Error => r instanceof Error);
      if (firstError && results.every((r) => r instanceof Error)) throw firstError;
      const onDelivered = this.settings.onDelivered;
      if (onDelivered) {
        const written = writtenReadings(readings, results);
        if (written.length) await onDelivered({ ...job.data, translations: written });
      }
      const outcome: DeliveryOutcome = { transactionEntries: 0, observations: 0, batchSize: 0 };
      let given = 0;
      for (const [i, r] of results.entries()) {
        if (r instanceof Error) {
          await this.writeDeadLetter(job, r, attempt, i);
          given++;
        } else {
          outcome.transactionEntries += r.transactionEntries;
          outcome.observations += r.observations;
          outcome.batchSize = Math.max(outcome.batchSize ?? 0, r.batchSize ?? 1);
        }
      }
      // A resend of the message must become a new job (the given-up readings are delivered then), not match this one.
      if (given) this.deadLettered.add(String(job.id));
      this.metrics.inc('delivery_jobs_total', { destination: this.destination, outcome: 'delivered' });
      recordDelivered(this.metrics, job.data, readings.length - given, this.destination);
      this.metrics.inc('delivery_observations_total', { destination: this.destination }, outcome.observations);
      if (given < results.length) this.observer?.settled({ ...where(job), outcome: 'delivered' });
      const { transactionEntries: entries, batchSize: batch } = outcome;
      this.log.debug(
        {
          destination: this.destination,
          jobId: job.id,
          adapter: job.data.adapterId,
          attempt,
          readings: readings.length,
          given,
          entries,
          batch,
        },
        'delivered',
      );
      return outcome;
    } catch (err) {
      const e = asError(err);
      if (isPermanent(e) || last) {
        // If the dead letter cannot be written, the job is not discarded: bull retries it, or records it as failed
        // and onFailed tries again.
        await this.writeDeadLetter(job, e, attempt);
        this.metrics.inc('delivery_jobs_total', { destination: this.destination, outcome: 'dead-letter' });
        this.deadLettered.add(String(job.id));
        await job.discard();
      } else {
        this.metrics.inc('delivery_jobs_total', { destination: this.destination, outcome: 'retry' });
        this.observer?.settled({ ...where(job), outcome: 'retry', error: e.message });
      }
      throw e;
    }
  }
}
