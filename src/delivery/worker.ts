/**
 * The delivery worker: takes jobs from the queue and writes each as one transaction to the EHR. It knows nothing of
 * HL7v2 or vendor formats. Failures are classified once (EhrClient): retryable ones go back to bull with exponential
 * backoff (honouring Retry-After), permanent ones and the last failed attempt become dead letters.
 */
import type Bull from 'bull';
import type { Device, Observation, Patient } from 'fhir/r4';
import type { Reading } from '../core/contract.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { hashKey } from '../core/ids.js';
import { type DeliveryJob, type DeliveryQueue, normalizeJob } from '../queue/queue.js';
import { buildBatchTransaction, buildTransaction, mergeSampledObservation, type MergedObservations, type PatientTarget, type TransactionUnit } from '../fhir/transaction.js';
import { Coalescer } from './coalescer.js';
import type { DeadLetterStore } from './dead-letters.js';
import { EhrClient, EhrError } from './ehr-client.js';
import { KeyLocks, LockBusyError, type Release } from './locks.js';

/** The registry version a lifecycle update of a Device carries (see devices/fhir.ts). */
export const REGISTRY_VERSION_EXTENSION = 'urn:iomt-gateway:fhir:StructureDefinition/device-registry-version';
const registryVersion = (d: Device) => d.extension?.find((e) => e.url === REGISTRY_VERSION_EXTENSION)?.valueInteger;
const deviceVersionKey = (system = '', value = '') => `gw:dev:fhirver:${system}|${value}`;

export interface WorkerSettings {
  concurrency: number;
  unknownPatientPolicy: 'reject' | 'create';
  keyLockWaitMs: number;
  fhirTimeoutMs: number;
  retryBaseDelayMs: number;
  retryMaxDelayMs: number;
  /** Most jobs written in one transaction (1: one transaction per job). */
  batchMax: number;
  /** Most transactions one worker process has in flight. */
  transactionsInFlight: number;
}

/** A refusal that no retry can fix (the EHR's 4xx, the unknown-patient policy). */
export class PermanentError extends Error {
  constructor(message: string, readonly kind: 'rejected' | 'policy', readonly ehr?: EhrError) {
    super(message);
    this.name = 'PermanentError';
  }
}

/** Exponential backoff with full jitter and a cap; an EHR's Retry-After wins (capped too). */
export function backoffDelay(attemptsMade: number, err: Error | undefined, baseMs: number, maxMs: number): number {
  if (err instanceof EhrError && err.retryAfterMs !== undefined) return Math.min(Math.max(err.retryAfterMs, baseMs), maxMs);
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

export interface DeliveryOutcome {
  transactionEntries: number;
  observations: number;
  /** Readings written in the same transaction (1 when the reading went alone). */
  batchSize?: number;
}

/** What became of one reading of a job: written, or the error that stopped it. */
type ReadingResult = DeliveryOutcome | Error;

/** The keys a reading locks: its devices and patients. */
function lockKeys(t: Reading): string[] {
  return [
    ...t.devices.map((d) => `dev:${hashKey(d.identifier?.[0]?.system ?? '', d.identifier?.[0]?.value ?? '')}`),
    ...(t.patient ? [`pat:${hashKey(t.patient.system, t.patient.value)}`] : []),
    ...(t.patients ?? []).map((p) => `pat:${hashKey(p.identifier?.[0]?.system ?? '', p.identifier?.[0]?.value ?? '')}`),
  ];
}

/**
 * Readings that may share a transaction: plain creates. Merged SampledData reads the EHR first, device lifecycle
 * updates are ordered by registry version and ADT patient updates replace demographics; each of those goes alone.
 */
function coalescable(t: Reading): boolean {
  return (t.writeMode ?? 'create') === 'create' && t.deviceWriteMode !== 'update' && !t.patients?.length;
}

const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)));
/** Only what is known to be permanent skips the retries; anything unexpected (a Redis error while it restarts, say) is retried. */
const isPermanent = (e: Error) => e instanceof PermanentError || (e instanceof EhrError && !e.retryable);

export class DeliveryWorker {
  private readonly patientCache = new Map<string, { id: string; at: number }>();
  /** Jobs this process has dead-lettered (whole, or some readings), removed from bull once it has recorded them as done. */
  private readonly deadLettered = new Set<string>();
  private started = false;
  private closing?: Promise<void>;
  private coalescer?: Coalescer<Bull.Job<DeliveryJob>, ReadingResult[]>;

  constructor(
    private readonly queue: DeliveryQueue,
    private readonly ehr: EhrClient,
    private readonly deadLetters: DeadLetterStore,
    private readonly settings: WorkerSettings,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  private locks(): KeyLocks {
    return new KeyLocks(this.queue.redis);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const locks = this.locks();
    if (this.settings.batchMax > 1) {
      this.coalescer = new Coalescer({
        maxBatch: this.settings.batchMax,
        maxInFlight: this.settings.transactionsInFlight,
        weightOf: (job) => job.data.translations.length,
        // A retry goes in a transaction of its own: a reading that keeps failing must not cost other jobs their attempts.
        solo: (job) => job.attemptsMade > 0,
        keysOf: (job) => job.data.translations.flatMap(lockKeys),
        run: (jobs) => this.deliverTogether(jobs, locks),
      });
    }
    void this.queue.bull.process(this.settings.concurrency, (job) => this.handle(job, locks)).catch((err: unknown) => {
      this.log.error({ err: String(err) }, 'delivery worker stopped');
    });
    this.queue.bull.on('failed', (job, err) => void this.onFailed(job, err));
    // A job completed with readings given up (dead letters) leaves bull, as a failed one does: see onFailed.
    this.queue.bull.on('completed', (job) => {
      if (this.deadLettered.delete(String(job.id))) void job.remove().catch(() => undefined);
    });
  }

  /**
   * After bull has moved a job to failed. A dead-lettered job is removed from bull: the dead-letter list is its record,
   * and a resend of the same content must become a new job rather than match the failed one. A job that failed for good
   * without a dead letter (bull's stalled limit: a worker died on it repeatedly; or the dead-letter write failed) gets
   * one here.
   */
  private async onFailed(job: Bull.Job<DeliveryJob>, err: Error): Promise<void> {
    const id = String(job.id);
    try {
      if (this.deadLettered.delete(id)) {
        await job.remove();
        return;
      }
      const final = job.attemptsMade >= (job.opts.attempts ?? 1) || /stalled more than allowable limit/.test(err.message);
      if (!final) {
        this.log.warn({ jobId: id, attempt: job.attemptsMade, error: err.message }, 'delivery attempt failed; will retry');
        return;
      }
      await this.writeDeadLetter(job, err, job.attemptsMade);
      this.metrics.inc('delivery_jobs_total', { outcome: 'dead-letter' });
      await job.remove();
    } catch (e) {
      this.log.error({ jobId: id, error: (e as Error).message }, 'could not record the failed job as a dead letter; it stays in the failed jobs of the queue');
    }
  }

  /** Records the job, or one reading of it (`reading`: its index), as a dead letter. */
  private async writeDeadLetter(job: Bull.Job<DeliveryJob>, e: Error, attempts: number, reading?: number): Promise<void> {
    const ehr = e instanceof PermanentError ? e.ehr : e instanceof EhrError ? e : undefined;
    const kind = e instanceof PermanentError ? e.kind : isPermanent(e) ? 'rejected' : 'exhausted';
    const data = reading === undefined ? job.data : { ...job.data, translations: [job.data.translations[reading]] };
    await this.deadLetters.put({
      id: reading === undefined ? String(job.id) : `${job.id}.${reading}`,
      jobId: String(job.id),
      reason: e.message,
      kind,
      httpStatus: ehr?.status,
      outcome: ehr?.outcome,
      attempts,
      deadAt: new Date().toISOString(),
      job: data,
    });
    this.metrics.inc('delivery_dead_letters_total', { kind });
    this.log.warn({ jobId: job.id, reading, adapter: job.data.adapterId, attempt: attempts, status: ehr?.status, reason: e.message }, 'dead letter');
  }

  /** Stops taking jobs and waits for the ones in flight (bull's close does both). */
  stop(): Promise<void> {
    this.closing ??= this.started ? this.queue.close() : Promise.resolve();
    return this.closing;
  }

  /**
   * Delivers a job's readings and settles the job. A first attempt shares a transaction with the jobs that arrive with
   * it; a retry goes in a transaction of its own (one failing reading must not cost other jobs their attempts); when
   * that fails on the last attempt, the readings are written one by one, so that only those that still fail are given
   * up. Any retryable failure before the last attempt retries the job (what was written is not written twice:
   * conditional creates). A reading given up in a job of several is its own dead letter and the job completes with
   * the rest; a job of which nothing could be written is the dead letter.
   */
  private async handle(job: Bull.Job<DeliveryJob>, locks: KeyLocks): Promise<DeliveryOutcome> {
    const attempt = job.attemptsMade + 1;
    const maxAttempts = job.opts.attempts ?? 1;
    const last = attempt >= maxAttempts;
    job.data = normalizeJob(job.data);
    try {
      const readings = job.data.translations;
      const shareable = this.coalescer !== undefined && readings.every(coalescable);
      let results = shareable ? await this.coalescer!.submit(job) : await this.deliverAlone(job, locks, last);
      const retryable = (rs: ReadingResult[]) => rs.find((r): r is Error => r instanceof Error && !isPermanent(r));
      if (last && shareable && readings.length > 1 && retryable(results)) results = await this.deliverAlone(job, locks, true);
      const failed = retryable(results);
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
      this.log.debug({ jobId: job.id, adapter: job.data.adapterId, attempt, readings: readings.length, given, entries: outcome.transactionEntries, batch: outcome.batchSize }, 'delivered');
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
      }
      throw e;
    }
  }

  /**
   * A job written reading by reading, in order: readings that may not share a transaction, and the last attempt of a
   * job whose transaction failed. A retryable failure stops the attempt (the EHR is likely down), except on the last
   * attempt (`exhaustive`), which goes on past a reading that fails until three in a row have: an EHR that is down
   * is not sent every reading of the job.
   */
  private async deliverAlone(job: Bull.Job<DeliveryJob>, locks: KeyLocks, exhaustive: boolean): Promise<ReadingResult[]> {
    const readings = job.data.translations;
    const results: ReadingResult[] = [];
    let inARow = 0;
    for (const t of readings) {
      const r = await this.deliverOne(String(job.id), t, locks).catch(asError);
      results.push(r);
      inARow = r instanceof Error && !isPermanent(r) ? inARow + 1 : 0;
      if (inARow > 0 && (!exhaustive || inARow >= 3)) break;
    }
    // The readings not tried share the fate of the last failure.
    while (results.length < readings.length) results.push(results[results.length - 1]);
    return results;
  }

  /**
   * Writes the readings of several jobs in one transaction, under the locks of all their devices and patients. A
   * reading whose patient the policy refuses fails alone. When the EHR refuses the transaction for good, which reading
   * it objected to is unknown: each is then written on its own, so that only the culprit becomes a dead letter. A
   * retryable failure fails every job of the batch; bull retries each on its own schedule, in a transaction of its own.
   */
  private async deliverTogether(jobs: Bull.Job<DeliveryJob>[], locks: KeyLocks): Promise<ReadingResult[][]> {
    const readings = jobs.flatMap((job, j) => job.data.translations.map((t, i) => ({ job, j, i, t })));
    const results: ReadingResult[][] = jobs.map((job) => job.data.translations.map(() => new Error('not written')));
    const set = (k: number, r: ReadingResult) => (results[readings[k].j][readings[k].i] = r);
    const oneByOne = async (which: number[]) => {
      for (const k of which) set(k, await this.deliverOne(String(readings[k].job.id), readings[k].t, locks).catch(asError));
      return results;
    };
    if (readings.length === 1) return oneByOne([0]);
    const patientLookups = this.settings.unknownPatientPolicy === 'reject' ? 1 : 0;
    let release: Release;
    try {
      // Held briefly by another worker process: rather than hold up the whole batch, each reading waits for its own keys.
      release = await locks.acquire(readings.flatMap((r) => lockKeys(r.t)), this.settings.fhirTimeoutMs * (patientLookups + 2) + 5000, Math.min(50, this.settings.keyLockWaitMs));
    } catch (err) {
      if (err instanceof LockBusyError) return oneByOne(readings.map((_, k) => k));
      throw err;
    }
    let released = false;
    let hold: number | undefined;
    try {
      const patients = await Promise.all(readings.map((r) => this.resolvePatient(r.t).catch(asError)));
      const units: TransactionUnit[] = [];
      const written: number[] = [];
      readings.forEach((r, k) => {
        const p = patients[k];
        if (p instanceof Error) set(k, p);
        else {
          units.push({ jobId: String(r.job.id), translation: r.t, patient: p });
          written.push(k);
        }
      });
      if (!units.length) return results;
      const bundle = buildBatchTransaction(units);
      try {
        await this.ehr.transaction(bundle);
        this.countTransaction(units.length);
        for (const k of written) set(k, { transactionEntries: bundle.entry?.length ?? 0, observations: readings[k].t.observations.length, batchSize: units.length });
      } catch (err) {
        hold = this.holdAfter(err);
        const permanent = err instanceof EhrError && !err.retryable;
        if (permanent && units.length > 1) {
          this.log.warn({ readings: units.length, status: err.status }, 'the EHR refused a shared transaction; writing its readings one by one');
          released = true;
          await release();
          return await oneByOne(written);
        }
        const e = permanent ? new PermanentError(err.message, 'rejected', err) : asError(err);
        for (const k of written) set(k, e);
      }
      return results;
    } finally {
      if (!released) await release(hold);
    }
  }

  /**
   * How long to keep the locks after a failed transaction. A transaction that timed out may still be running in the
   * EHR: its keys stay locked one more timeout, so that a retry's conditional creates do not race it.
   */
  private holdAfter(err: unknown): number | undefined {
    return err instanceof EhrError && err.timedOut ? this.settings.fhirTimeoutMs : undefined;
  }

  private countTransaction(readings: number): void {
    this.metrics.inc('delivery_transactions_total');
    this.metrics.inc('delivery_transaction_readings_total', {}, readings);
  }

  /** Writes one reading to the EHR in its own transaction; holds its device and patient locks while it does. */
  private async deliverOne(jobId: string, t: Reading, locks: KeyLocks): Promise<DeliveryOutcome> {
    const keys = lockKeys(t);
    // The lock must outlive every EHR request the job makes while holding it: a patient search, one search per merged
    // observation, the transaction.
    const requests = 2 + (t.writeMode === 'merge' ? t.observations.length : 0);
    const release = await locks.acquire(keys, this.settings.fhirTimeoutMs * (requests + 1) + 5000, this.settings.keyLockWaitMs);
    let hold: number | undefined;
    try {
      const fresh = await this.withoutStaleDeviceUpdates(t);
      if (!fresh) return { transactionEntries: 0, observations: 0 };
      const patient = await this.resolvePatient(t);
      const merged = fresh.writeMode === 'merge' ? await this.existingForMerge(fresh.observations) : undefined;
      const bundle = buildTransaction(jobId, fresh, patient, merged);
      try {
        await this.ehr.transaction(bundle);
        this.countTransaction(1);
      } catch (err) {
        hold = this.holdAfter(err);
        if (err instanceof EhrError && !err.retryable) throw new PermanentError(err.message, 'rejected', err);
        throw err;
      }
      // Best effort: the data is in the EHR; a failure here must not turn a delivered job into a retry or a dead letter.
      await this.recordDeviceVersions(fresh).catch((err: Error) => this.log.warn({ jobId, error: err.message }, 'could not record the written device version'));
      return { transactionEntries: bundle.entry?.length ?? 0, observations: fresh.observations.length };
    } finally {
      await release(hold);
    }
  }

  /**
   * Lifecycle updates of a device (deviceWriteMode 'update') carry the registry version; two quick changes may be
   * delivered out of order, so an update older than the last one written is dropped (under the device lock).
   * Returns undefined when nothing is left to write.
   */
  private async withoutStaleDeviceUpdates(t: Reading): Promise<Reading | undefined> {
    if (t.deviceWriteMode !== 'update') return t;
    const devices = [];
    for (const d of t.devices) {
      const v = registryVersion(d);
      const id = d.identifier?.[0];
      if (v === undefined || !id) {
        devices.push(d);
        continue;
      }
      const last = Number((await this.queue.redis.get(deviceVersionKey(id.system, id.value))) ?? -1);
      if (v > last) devices.push(d);
      else this.log.info({ version: v, written: last }, 'device update skipped: a newer one was already written');
    }
    if (!devices.length && !t.observations.length && !t.patients?.length && !t.auditEvents?.length) return undefined;
    return { ...t, devices };
  }

  private async recordDeviceVersions(t: Reading): Promise<void> {
    if (t.deviceWriteMode !== 'update') return;
    for (const d of t.devices) {
      const v = registryVersion(d);
      const id = d.identifier?.[0];
      if (v !== undefined && id) await this.queue.redis.set(deviceVersionKey(id.system, id.value), String(v));
    }
  }

  private async resolvePatient(t: Reading): Promise<PatientTarget> {
    const p = t.patient;
    if (!p) return { kind: 'none' };
    if (this.settings.unknownPatientPolicy === 'create') return { kind: 'create', system: p.system, value: p.value };
    const key = `${p.system}|${p.value}`;
    const cached = this.patientCache.get(key);
    if (cached && Date.now() - cached.at < 60_000) return { kind: 'existing', id: cached.id };
    const found = await this.ehr.search<Patient>('Patient', { identifier: key });
    if (found.length === 0) {
      throw new PermanentError('the EHR knows no patient with the identifier given (UNKNOWN_PATIENT_POLICY=reject)', 'policy');
    }
    if (found.length > 1) throw new PermanentError(`the patient identifier matches ${found.length} patients in the EHR`, 'policy');
    const id = found[0].id as string;
    if (this.patientCache.size > 10_000) this.patientCache.clear();
    this.patientCache.set(key, { id, at: Date.now() });
    return { kind: 'existing', id };
  }

  private async existingForMerge(observations: Observation[]): Promise<MergedObservations> {
    const merged: MergedObservations = new Map();
    for (const o of observations) {
      const id = o.identifier?.[0];
      if (!id?.value) continue;
      const [existing] = await this.ehr.search<Observation>('Observation', { identifier: `${id.system ?? ''}|${id.value}` });
      if (existing?.id) {
        merged.set(`${id.system ?? ''}|${id.value}`, { id: existing.id, versionId: existing.meta?.versionId, resource: mergeSampledObservation(existing, o) });
      }
    }
    return merged;
  }
}
