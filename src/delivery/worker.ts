/**
 * The delivery worker: bull's side of delivery. It takes jobs from the queue, has attempt.ts make one attempt of each,
 * and settles the job from what became of each reading: retried with backoff (honouring Retry-After), completed, or
 * given up as dead letters (the job, or each reading given up). It knows nothing of HL7v2 or vendor formats. Whether
 * a failure may be retried is read from the error (`retryable`, decided in ehr-client.ts and errors.ts), never from an
 * HTTP status here. Every job ends delivered or as a dead letter; none is dropped without a record.
 */
import type { OperationOutcome } from 'fhir/r4';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { type DeliveryQueue, isStalledFailure, normalizeJob, type QueuedJob } from '../queue/queue.js';
import { type AttemptSettings, DeliveryAttempts, type DeliveryOutcome, isRetryableFailure } from './attempt.js';
import type { DeadLetterStore } from './dead-letters.js';
import { DeviceVersions } from './device-versions.js';
import { type EhrClient, EhrError } from './ehr-client.js';
import { asError, isPermanent, PermanentError } from './errors.js';
import { KeyLocks } from './locks.js';
import { PatientLookup } from './patients.js';

export interface WorkerSettings extends AttemptSettings {
  concurrency: number;
  retryBaseDelayMs: number;
  retryMaxDelayMs: number;
}

/** Exponential backoff with full jitter and a cap; an EHR's Retry-After wins (capped too). */
export function backoffDelay(attemptsMade: number, err: Error | undefined, baseMs: number, maxMs: number): number {
  if (err instanceof EhrError && err.retryAfterMs !== undefined) return Math.min(Math.max(err.retryAfterMs, baseMs), maxMs);
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
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
  private started = false;
  private closing?: Promise<void>;

  constructor(
    private readonly queue: DeliveryQueue,
    private readonly ehr: EhrClient,
    private readonly deadLetters: DeadLetterStore,
    private readonly settings: WorkerSettings,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.patients = new PatientLookup(ehr, settings.unknownPatientPolicy);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const redis = this.queue.redis;
    const devices = new DeviceVersions(redis, this.log);
    const attempts = new DeliveryAttempts(this.ehr, new KeyLocks(redis), this.patients, devices, this.settings, this.log, this.metrics);
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
    try {
      if (this.deadLettered.delete(id)) {
        await job.remove();
        return;
      }
      const final = job.attemptsMade >= (job.opts.attempts ?? 1) || isStalledFailure(err);
      if (!final) {
        this.log.warn({ jobId: id, attempt: job.attemptsMade, error: err.message }, 'delivery attempt failed; will retry');
        return;
      }
      await this.writeDeadLetter(job, err, job.attemptsMade);
      this.metrics.inc('delivery_jobs_total', { outcome: 'dead-letter' });
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
    });
    this.metrics.inc('delivery_dead_letters_total', { kind });
    this.observer?.settled({ ...where(job), outcome: 'dead-letter', error: e.message });
    const adapter = job.data.adapterId;
    this.log.warn({ jobId: job.id, reading, adapter, attempt: attempts, status: httpStatus, reason: e.message }, 'dead letter');
  }

  /** Stops taking jobs and waits for the ones in flight (bull's close does both). */
  stop(): Promise<void> {
    this.closing ??= this.started ? this.queue.close() : Promise.resolve();
    return this.closing;
  }

  /**
   * Makes one attempt of the job (attempt.ts: which transactions, and what the last attempt does) and settles it. Any
   * retryable failure before the last attempt retries the job. A reading given up in a job of several is its own dead
   * letter and the job completes with the rest; a job of which nothing could be written is the dead letter.
   */
  private async handle(job: QueuedJob, attempts: DeliveryAttempts): Promise<DeliveryOutcome> {
    const attempt = job.attemptsMade + 1;
    const maxAttempts = job.opts.attempts ?? 1;
    const last = attempt >= maxAttempts;
    job.data = normalizeJob(job.data);
    try {
      const readings = job.data.translations;
      const results = await attempts.attempt(job, last);
      const failed = results.find(isRetryableFailure);
      if (failed && !last) throw failed;
      const firstError = results.find((r): r is Error => r instanceof Error);
      if (firstError && results.every((r) => r instanceof Error)) throw firstError;
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
      this.metrics.inc('delivery_jobs_total', { outcome: 'delivered' });
      this.metrics.inc('delivery_observations_total', {}, outcome.observations);
      if (given < results.length) this.observer?.settled({ ...where(job), outcome: 'delivered' });
      const { transactionEntries: entries, batchSize: batch } = outcome;
      this.log.debug(
        { jobId: job.id, adapter: job.data.adapterId, attempt, readings: readings.length, given, entries, batch },
        'delivered',
      );
      return outcome;
    } catch (err) {
      const e = asError(err);
      if (isPermanent(e) || last) {
        // If the dead letter cannot be written, the job is not discarded: bull retries it, or records it as failed
        // and onFailed tries again.
        await this.writeDeadLetter(job, e, attempt);
        this.metrics.inc('delivery_jobs_total', { outcome: 'dead-letter' });
        this.deadLettered.add(String(job.id));
        await job.discard();
      } else {
        this.metrics.inc('delivery_jobs_total', { outcome: 'retry' });
        this.observer?.settled({ ...where(job), outcome: 'retry', error: e.message });
      }
      throw e;
    }
  }
}
