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

  constructor(initial: readonly DeviceAdapter[] = BUILT_IN_ADAPTERS) {
    for (const a of initial) this.register(a);
  }

  register(adapter: DeviceAdapter): void {
    if (!ADAPTER_ID.test(adapter.id)) throw new Error(`adapter id '${adapter.id}' must match ${ADAPTER_ID}`);
    this.adapters.set(adapter.id, adapter);
  }

  unregister(id: string): boolean {
    return this.adapters.delete(id);
  }

  get(id: string): DeviceAdapter | undefined {
    return this.adapters.get(id);
  }

  list(): DeviceAdapter[] {
    return [...this.adapters.values()];
  }
}
