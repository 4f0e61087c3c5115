/**
 * Ordering of device lifecycle updates. The registry writes a Device with its record's version (an extension, see
 * fhir/extensions.ts) each time a device changes; two quick changes may be delivered out of order (retries, several
 * workers). Under the device lock, the delivery drops an update older than the last one written for that device, and
 * records the version it wrote in Redis (`gw:dev:fhirver:<system>|<value>`, per destination), so the EHR never goes back to an older state.
 */
import type { Device } from 'fhir/r4';
import type { RedisClient } from '../queue/connection.js';
import type { Reading } from '../core/contract.js';
import type { Logger } from '../observability/logger.js';
import { REGISTRY_VERSION_EXTENSION } from '../fhir/extensions.js';

const registryVersion = (d: Device) => d.extension?.find((e) => e.url === REGISTRY_VERSION_EXTENSION)?.valueInteger;

export class DeviceVersions {
  constructor(
    private readonly redis: RedisClient,
    private readonly log: Logger,
    /** Each destination remembers what it was written (`gw:dev:fhirver:` for ehr; see destinationPrefix). */
    private readonly prefix = 'gw:dev:fhirver:',
  ) {}

  private key(system = '', value = ''): string {
    return `${this.prefix}${system}|${value}`;
  }

  /**
   * The reading without the device updates (deviceWriteMode 'update') older than, or as old as, the last version
   * written. Returns undefined when nothing is left to write. Call it under the device lock.
   */
  async withoutStaleUpdates(t: Reading): Promise<Reading | undefined> {
    if (t.deviceWriteMode !== 'update') return t;
    const devices = [];
    for (const d of t.devices) {
      const v = registryVersion(d);
      const id = d.identifier?.[0];
      if (v === undefined || !id) {
        devices.push(d);
        continue;
      }
      const last = Number((await this.redis.get(this.key(id.system, id.value))) ?? -1);
      if (v > last) devices.push(d);
      else this.log.info({ version: v, written: last }, 'device update skipped: a newer one was already written');
    }
    if (!devices.length && !t.observations.length && !t.patients?.length && !t.auditEvents?.length) return undefined;
    return { ...t, devices };
  }

  /** Remembers the versions of the device updates of a reading the EHR has written (still under the device lock). */
  async record(t: Reading): Promise<void> {
    if (t.deviceWriteMode !== 'update') return;
    for (const d of t.devices) {
      const v = registryVersion(d);
      const id = d.identifier?.[0];
      if (v !== undefined && id) await this.redis.set(this.key(id.system, id.value), String(v));
    }
  }
}
