/**
 * The one registry of device adapters. Built-ins are listed here; adapters loaded from mappings/, plugins and the
 * registration API are added through `register`, so a grep for `registry.register` finds them all.
 */
import type { DeviceAdapter } from '../core/contract.js';
import { measurementsAdapter } from './measurements.js';

export const BUILT_IN_ADAPTERS: readonly DeviceAdapter[] = [measurementsAdapter];

const ADAPTER_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export class AdapterRegistry {
  private readonly adapters = new Map<string, DeviceAdapter>();
  /** Why an id takes no data although it is known (disabled, or its mapping does not compile): said at ingest. */
  private readonly inactive = new Map<string, string>();

  constructor(initial: readonly DeviceAdapter[] = BUILT_IN_ADAPTERS) {
    for (const a of initial) this.register(a);
  }

  register(adapter: DeviceAdapter): void {
    if (!ADAPTER_ID.test(adapter.id)) throw new Error(`adapter id '${adapter.id}' must match ${ADAPTER_ID}`);
    this.adapters.set(adapter.id, adapter);
    this.inactive.delete(adapter.id);
  }

  /** Removes an adapter; with `reason`, the id stays known as inactive (a disabled registered adapter, say). */
  unregister(id: string, reason?: string): boolean {
    if (reason) this.inactive.set(id, reason);
    else this.inactive.delete(id);
    return this.adapters.delete(id);
  }

  /** Why a known id takes no data, when it does not. */
  inactiveReason(id: string): string | undefined {
    return this.inactive.get(id);
  }

  get(id: string): DeviceAdapter | undefined {
    return this.adapters.get(id);
  }

  list(): DeviceAdapter[] {
    return [...this.adapters.values()];
  }
}
