/**
 * Where the Devices are on one destination, learnt from the answers to earlier transactions, so that a device's next
 * readings refer to its Device by id instead of carrying a conditional create (a search on the EHR) in every
 * transaction. Off by default (`DELIVERY_DEVICE_CACHE_S=0`): it is for an EHR that refuses a reference to a resource
 * it does not have (per destination: `deviceCacheS`). A Device's identifier does not move to another Device, so an id
 * stays right until the EHR deletes or loses that Device (a Device merged into another still exists: its old id is used
 * until the time runs out):
 *  - a transaction the EHR refuses for good (a 4xx) that used known ids is written again at once without them, and
 *    those ids are forgotten (attempt.ts): an EHR that checks references refuses one to a Device it does not have;
 *  - an id is used for `DELIVERY_DEVICE_CACHE_S` seconds after it was learnt, then learnt again from a conditional
 *    create, which bounds how long an EHR that does not check references would get Observations that refer to a
 *    Device it no longer has;
 *  - at most 10,000 devices per destination and worker process (the cache is emptied when it passes that).
 * Devices written by update (registry lifecycle) are written every time, as before.
 */
import type { Bundle, Device } from 'fhir/r4';
import type { KnownDevice } from '../fhir/transaction.js';

const MAX = 10_000;

export class DeviceIds {
  private readonly ids = new Map<string, { ref: string; at: number }>();

  constructor(
    /** How long a learnt id is used (ms); 0: never. */
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.ttlMs > 0;
  }

  /** A lookup for one transaction that records which identifiers it answered (to forget them if the EHR refuses). */
  lookup(used: Set<string>): KnownDevice | undefined {
    if (!this.enabled) return undefined;
    return (identifier) => {
      const known = this.ids.get(identifier);
      if (!known) return undefined;
      if (this.now() - known.at >= this.ttlMs) {
        this.ids.delete(identifier);
        return undefined;
      }
      used.add(identifier);
      return known.ref;
    };
  }

  /**
   * Learns the Devices a written bundle created or found: each Device entry written by conditional create, and the
   * id the EHR answered for it (`ids`: the entry's fullUrl to `Device/<id>`).
   */
  learn(bundle: Bundle, ids: ReadonlyMap<string, string>): void {
    if (!this.enabled) return;
    const at = this.now();
    for (const e of bundle.entry ?? []) {
      if (e.resource?.resourceType !== 'Device' || e.request?.method !== 'POST' || !e.fullUrl) continue;
      const ref = ids.get(e.fullUrl);
      const identifier = (e.resource as Device).identifier?.[0];
      if (!ref?.startsWith('Device/') || !identifier?.value) continue;
      if (this.ids.size >= MAX) this.ids.clear();
      this.ids.set(`${identifier.system ?? ''}|${identifier.value}`, { ref, at });
    }
  }

  forget(identifiers: Iterable<string>): void {
    for (const i of identifiers) this.ids.delete(i);
  }

  get size(): number {
    return this.ids.size;
  }
}
