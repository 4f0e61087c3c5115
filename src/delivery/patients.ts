/**
 * The subject patient of a reading, as the transaction writes it. Under UNKNOWN_PATIENT_POLICY=create the patient is
 * a conditional create in the transaction itself (no lookup). Under 'reject' it must already exist in the EHR: it is
 * searched by identifier, and a patient the EHR does not know, or an identifier that matches several, is a permanent
 * refusal ('policy'): retrying cannot make the patient appear. Found ids are cached for a minute (the cache is emptied
 * when it passes 10,000 patients), so that a busy device does not cost the EHR one search per reading; lookups of one
 * patient at the same moment (the readings of a shared transaction) share one search.
 *
 * A cached id can be stale: the patient merged into another, or deleted and registered again, within that minute. A
 * transaction the EHR refuses for good that referred to a cached id is therefore not the last word: the attempt
 * forgets the ids it took from the cache (`resolve`'s `fromCache`) and writes once more after a fresh search
 * (attempt.ts), which finds the patient's current id, or none (the policy's refusal).
 */
import type { Patient } from 'fhir/r4';
import type { Reading } from '../core/contract.js';
import type { PatientTarget } from '../fhir/transaction.js';
import type { EhrClient } from './ehr-client.js';
import { PermanentError } from './errors.js';

const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 10_000;

export class PatientLookup {
  private readonly cache = new Map<string, { id: string; at: number }>();
  /** Searches under way: lookups of the same patient at the same moment share one. */
  private readonly searching = new Map<string, Promise<string>>();

  constructor(
    private readonly ehr: EhrClient,
    private readonly policy: 'reject' | 'create',
  ) {}

  /**
   * The reading's patient as the transaction writes it. Its key is added to `fromCache` when its id came from the
   * cache, to `searched` when it was searched (or its search joined).
   */
  async resolve(t: Reading, fromCache?: Set<string>, searched?: Set<string>): Promise<PatientTarget> {
    const p = t.patient;
    if (!p) return { kind: 'none' };
    if (this.policy === 'create') return { kind: 'create', system: p.system, value: p.value };
    const key = `${p.system}|${p.value}`;
    const cached = this.cache.get(key);
    if (cached && Date.now() - cached.at < CACHE_TTL_MS) {
      fromCache?.add(key);
      return { kind: 'existing', id: cached.id };
    }
    searched?.add(key);
    let search = this.searching.get(key);
    if (!search) {
      search = this.search(key).finally(() => this.searching.delete(key));
      this.searching.set(key, search);
    }
    return { kind: 'existing', id: await search };
  }

  private async search(key: string): Promise<string> {
    const found = await this.ehr.search<Patient>('Patient', { identifier: key });
    if (found.length === 0) {
      throw new PermanentError('the EHR knows no patient with the identifier given (UNKNOWN_PATIENT_POLICY=reject)', 'policy');
    }
    if (found.length > 1) throw new PermanentError(`the patient identifier matches ${found.length} patients in the EHR`, 'policy');
    const id = found[0].id as string;
    if (this.cache.size > CACHE_MAX) this.cache.clear();
    this.cache.set(key, { id, at: Date.now() });
    return id;
  }

  /** Drops these patients' cached ids (keys from `resolve`'s `fromCache`): their next lookup searches the EHR. */
  forget(keys: Iterable<string>): void {
    for (const k of keys) this.cache.delete(k);
  }
}
