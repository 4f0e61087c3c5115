/**
 * One attempt of a delivery job: which transaction each reading goes in, under which locks, after which reads (the
 * patient, the observations to merge, the device versions); the worker settles the job from the result per reading.
 * The last-attempt policy: a first attempt of plain creates shares a transaction with the jobs that arrive with it
 * (coalescer.ts); a retry goes in a transaction of its own, so that a reading that keeps failing costs no other job
 * its attempts; readings that may not share (merges, device lifecycle updates, ADT patients) go one by one, in
 * order, and a retryable failure ends that pass (the EHR is likely down: the job is retried). On the last attempt, a
 * job whose transaction failed for a retryable reason is written reading by reading, so that only the readings that
 * still fail are given up; that pass goes on past a failing reading and stops only after three retryable failures in
 * a row (an EHR that is down is not sent every reading); the readings not tried share the fate of the last failure.
 * What an earlier attempt wrote is not written twice: conditional creates.
 */
import type { Bundle, Observation } from 'fhir/r4';
import type { Reading } from '../core/contract.js';
import { hashKey } from '../core/ids.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { QueuedJob } from '../queue/queue.js';
import {
  buildBatchTransaction,
  buildTransaction,
  mergeSampledObservation,
  type MergedObservations,
  type PatientTarget,
  type TransactionUnit,
} from '../fhir/transaction.js';
import { Coalescer } from './coalescer.js';
import { DeviceIds } from './device-ids.js';
import type { DeviceVersions } from './device-versions.js';
import { EhrError, type EhrClient } from './ehr-client.js';
import { asError, isPermanent, PermanentError } from './errors.js';
import { type KeyLocks, LockBusyError, type Release } from './locks.js';
import type { PatientLookup } from './patients.js';
import type { DestinationWriter, Written, WrittenObservations } from './writer.js';

export interface AttemptSettings {
  unknownPatientPolicy: 'reject' | 'create';
  keyLockWaitMs: number;
  fhirTimeoutMs: number;
  /** Most jobs written in one transaction (1: one transaction per job). */
  batchMax: number;
  /** Most transactions one worker process has in flight. */
  transactionsInFlight: number;
  /** How long a Device id learnt from a transaction's answer is used instead of its conditional create (ms; 0: never). */
  deviceIdCacheMs?: number;
}

export interface DeliveryOutcome {
  transactionEntries: number;
  observations: number;
  /** Readings written in the same transaction (1 when the reading went alone). */
  batchSize?: number;
  /** Where the Observations of the transaction are on the destination (for the subscribers that follow it). */
  written?: WrittenObservations;
}

/** What became of one reading of a job: written, or the error that stopped it. */
export type ReadingResult = DeliveryOutcome | Error;

/** A failure that a later attempt may fix. */
export const isRetryableFailure = (r: ReadingResult): r is Error => r instanceof Error && !isPermanent(r);

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

/** What a transaction took from this destination's caches: Device ids (device-ids.ts), patient ids (patients.ts). */
interface FromCache {
  devices: Set<string>;
  patients: Set<string>;
}
const fromCache = (): FromCache => ({ devices: new Set(), patients: new Set() });

export class DeliveryAttempts {
  private readonly coalescer?: Coalescer<QueuedJob, ReadingResult[]>;
  /** Where the Devices are on this destination (device-ids.ts). */
  readonly deviceIds: DeviceIds;

  constructor(
    private readonly ehr: EhrClient,
    private readonly locks: KeyLocks,
    private readonly patients: PatientLookup,
    private readonly deviceVersions: DeviceVersions,
    private readonly settings: AttemptSettings,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Sends each transaction Bundle the destination's way (its write mode). */
    private readonly writer: DestinationWriter,
    private readonly destination = 'ehr',
  ) {
    this.deviceIds = new DeviceIds(settings.deviceIdCacheMs ?? 0);
    if (settings.batchMax > 1) {
      this.coalescer = new Coalescer({
        maxBatch: settings.batchMax,
        maxInFlight: settings.transactionsInFlight,
        weightOf: (job) => job.data.translations.length,
        // A retry goes in a transaction of its own: a reading that keeps failing must not cost other jobs their attempts.
        solo: (job) => job.attemptsMade > 0,
        keysOf: (job) => job.data.translations.flatMap(lockKeys),
        run: (jobs) => this.deliverTogether(jobs),
      });
    }
  }

  /**
   * Makes one attempt of the job (`last`: its last one; `probe`: the circuit breaker's probe) and answers one result per
   * reading, in order. Rejects when the whole attempt failed before any reading could be judged (a shared
   * transaction's Redis error, say).
   */
  async attempt(job: QueuedJob, last: boolean, probe = false): Promise<ReadingResult[]> {
    const readings = job.data.translations;
    const coalescer = this.coalescer;
    // The circuit breaker's probe goes alone, and stops at its first failure: one job's requests, no other's.
    if (probe) return this.deliverAlone(job, false);
    if (!coalescer || !readings.every(coalescable)) return this.deliverAlone(job, last);
    const results = await coalescer.submit(job);
    if (last && readings.length > 1 && results.some(isRetryableFailure)) return this.deliverAlone(job, true);
    return results;
  }

  /**
   * A job written reading by reading, in order: readings that may not share a transaction, and the last attempt of a
   * job whose transaction failed. A retryable failure stops the pass, except when it is `exhaustive` (the last
   * attempt), which stops only after three in a row.
   */
  private async deliverAlone(job: QueuedJob, exhaustive: boolean): Promise<ReadingResult[]> {
    const readings = job.data.translations;
    const results: ReadingResult[] = [];
    let inARow = 0;
    for (const t of readings) {
      const r = await this.deliverOne(String(job.id), t).catch(asError);
      results.push(r);
      inARow = isRetryableFailure(r) ? inARow + 1 : 0;
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
  private async deliverTogether(jobs: QueuedJob[]): Promise<ReadingResult[][]> {
    const readings = jobs.flatMap((job, j) => job.data.translations.map((t, i) => ({ job, j, i, t })));
    // Every reading's result is set below; the one placeholder is made once, not once per reading (an Error captures
    // its stack when made: about 3 µs, a few per cent of the delivery thread's time per reading).
    const notWritten = new Error('not written');
    const results: ReadingResult[][] = jobs.map((job) => job.data.translations.map(() => notWritten));
    const set = (k: number, r: ReadingResult) => (results[readings[k].j][readings[k].i] = r);
    // The patients this attempt searched: written one by one, their ids are not taken for stale when refused.
    const searched = new Set<string>();
    const oneByOne = async (which: number[]) => {
      for (const k of which) set(k, await this.deliverOne(String(readings[k].job.id), readings[k].t, searched).catch(asError));
      return results;
    };
    if (readings.length === 1) return oneByOne([0]);
    // The lock must outlive every EHR request made while holding it and one timeout more: a round of patient searches
    // (run at once) and the transaction, and when that referred to cached ids and was refused, another round and another
    // transaction (writeBundle).
    const patientLookups = this.settings.unknownPatientPolicy === 'reject' ? this.transactionsPerWrite() : 0;
    const ttlMs = this.settings.fhirTimeoutMs * (patientLookups + this.transactionsPerWrite() + 1) + 5000;
    let release: Release;
    try {
      // Held briefly by another worker process: rather than hold up the whole batch, each reading waits for its own keys.
      release = await this.locks.acquire(
        readings.flatMap((r) => lockKeys(r.t)),
        ttlMs,
        Math.min(50, this.settings.keyLockWaitMs),
      );
    } catch (err) {
      if (err instanceof LockBusyError) return oneByOne(readings.map((_, k) => k));
      throw err;
    }
    let released = false;
    let hold: number | undefined;
    try {
      const cached = fromCache();
      const patients = await Promise.all(readings.map((r) => this.patients.resolve(r.t, cached.patients, searched).catch(asError)));
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
      const first = buildBatchTransaction(units, this.deviceIds.lookup(cached.devices));
      // Written again: each patient looked up afresh (those the cache no longer has are searched), no Device by id.
      // The searches run at once, as the first ones did (the locks' time counts two rounds); all end before a failure
      // is passed on, so that none runs on while the readings are written one by one.
      const rebuild = async () => {
        const again = await Promise.allSettled(
          units.map((u) => (u.patient.kind === 'existing' ? this.patients.resolve(u.translation, undefined, searched) : u.patient)),
        );
        const failed = again.find((r) => r.status === 'rejected');
        if (failed) throw failed.reason;
        units.forEach((u, i) => {
          u.patient = (again[i] as PromiseFulfilledResult<PatientTarget>).value;
        });
        return buildBatchTransaction(units);
      };
      try {
        const { bundle, written: where } = await this.writeBundle(first, cached, rebuild);
        this.countTransaction(units.length);
        const transactionEntries = bundle.entry?.length ?? 0;
        for (const k of written)
          set(k, { transactionEntries, observations: readings[k].t.observations.length, batchSize: units.length, written: where });
      } catch (err) {
        hold = this.holdAfter(err);
        const permanent = err instanceof EhrError && !err.retryable;
        // A refusal, or a patient the fresh lookup no longer finds: which reading it concerns is found one by one.
        if ((permanent || err instanceof PermanentError) && units.length > 1) {
          const message = permanent
            ? 'the EHR refused a shared transaction; writing its readings one by one'
            : 'a patient of a shared transaction was not found afresh; writing its readings one by one';
          this.log.warn({ readings: units.length, status: permanent ? err.status : undefined }, message);
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
   * Writes one reading to the EHR in its own transaction; holds its device and patient locks while it does. `searched`:
   * the patients searched earlier in this attempt (a shared transaction's), whose ids are fresh, not stale.
   */
  private async deliverOne(jobId: string, t: Reading, searched?: ReadonlySet<string>): Promise<DeliveryOutcome> {
    // The lock must outlive every EHR request the job makes while holding it: a patient search, one search per merged
    // observation, the transaction.
    const requests = 1 + this.transactionsPerWrite() + (t.writeMode === 'merge' ? t.observations.length : 0);
    const release = await this.locks.acquire(lockKeys(t), this.settings.fhirTimeoutMs * (requests + 1) + 5000, this.settings.keyLockWaitMs);
    let hold: number | undefined;
    try {
      const fresh = await this.deviceVersions.withoutStaleUpdates(t);
      if (!fresh) return { transactionEntries: 0, observations: 0 };
      const cached = fromCache();
      const patient = await this.patients.resolve(t, cached.patients);
      for (const k of searched ?? []) cached.patients.delete(k);
      const merged = fresh.writeMode === 'merge' ? await this.existingForMerge(fresh.observations) : undefined;
      let bundle = buildTransaction(jobId, fresh, patient, merged, this.deviceIds.lookup(cached.devices));
      let where: WrittenObservations;
      try {
        const rebuild = async () => buildTransaction(jobId, fresh, await this.patients.resolve(t), merged);
        ({ bundle, written: where } = await this.writeBundle(bundle, cached, rebuild));
        this.countTransaction(1);
      } catch (err) {
        hold = this.holdAfter(err);
        if (err instanceof EhrError && !err.retryable) throw new PermanentError(err.message, 'rejected', err);
        throw err;
      }
      // Best effort: the data is in the EHR; a failure here must not turn a delivered job into a retry or a dead letter.
      await this.deviceVersions.record(fresh).catch((err: Error) => {
        this.log.warn({ jobId, error: err.message }, 'could not record the written device version');
      });
      return { transactionEntries: bundle.entry?.length ?? 0, observations: fresh.observations.length, written: where };
    } finally {
      await release(hold);
    }
  }

  /**
   * Transactions one write may send: two when a refused one that used cached ids may be sent again (writeBundle), which
   * Device ids (when on) and patient ids (UNKNOWN_PATIENT_POLICY=reject) may be.
   */
  private transactionsPerWrite(): number {
    return this.deviceIds.enabled || this.settings.unknownPatientPolicy === 'reject' ? 2 : 1;
  }

  /**
   * Writes `bundle`, built with ids from this destination's caches (`cached`: the Device ids of device-ids.ts and the
   * patient ids of patients.ts it referred to), and learns the ids of the Devices it wrote. When the EHR refuses it for
   * good and it referred to cached ids, one of them may be stale (a Device deleted or lost in a restore, a patient
   * merged into another or registered again): those ids are forgotten, and the bundle `rebuild` makes, with the
   * Devices' conditional creates and the patients found by a fresh search, is written once more; its answer stands. A
   * retryable failure keeps them: it says nothing about the ids.
   */
  private async writeBundle(
    first: Bundle,
    cached: FromCache,
    rebuild: () => Promise<Bundle>,
  ): Promise<{ bundle: Bundle; written: WrittenObservations }> {
    let bundle = first;
    let w: Written;
    try {
      w = await this.writer.write(bundle);
    } catch (err) {
      if (!(err instanceof EhrError) || err.retryable || (cached.devices.size === 0 && cached.patients.size === 0)) throw err;
      this.deviceIds.forget(cached.devices);
      this.patients.forget(cached.patients);
      this.log.info(
        { destination: this.destination, devices: cached.devices.size, patients: cached.patients.size, status: err.status },
        'the EHR refused a transaction that referred to cached Device or patient ids; writing it again after looking them up afresh',
      );
      bundle = await rebuild();
      w = await this.writer.write(bundle);
    }
    this.deviceIds.learn(bundle, w.ids);
    return { bundle, written: w.observations };
  }

  /**
   * How long to keep the locks after a failed transaction. A transaction that timed out may still be running in the
   * EHR: its keys stay locked one more timeout, so that a retry's conditional creates do not race it.
   */
  private holdAfter(err: unknown): number | undefined {
    return err instanceof EhrError && err.timedOut ? this.settings.fhirTimeoutMs : undefined;
  }

  private countTransaction(readings: number): void {
    this.metrics.inc('delivery_transactions_total', { destination: this.destination });
    this.metrics.inc('delivery_transaction_readings_total', { destination: this.destination }, readings);
  }

  /** The Observations a 'merge' reading updates: each found by identifier, merged with the incoming samples. */
  private async existingForMerge(observations: Observation[]): Promise<MergedObservations> {
    const merged: MergedObservations = new Map();
    for (const o of observations) {
      const id = o.identifier?.[0];
      if (!id?.value) continue;
      const identifier = `${id.system ?? ''}|${id.value}`;
      const [existing] = await this.ehr.search<Observation>('Observation', { identifier });
      if (existing?.id) {
        merged.set(identifier, { id: existing.id, versionId: existing.meta?.versionId, resource: mergeSampledObservation(existing, o) });
      }
    }
    return merged;
  }
}
