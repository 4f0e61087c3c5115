/**
 * Registered adapters in Redis, shared by every gateway instance.
 *
 *   gw:adapter:ids             set of registered adapter ids
 *   gw:adapter:<id>            hash: vendor, enabled ('1' | '0'), current (version number), seq (last version number),
 *                              createdAt, updatedAt, v1, v2, … (each version as JSON: RegisteredVersion)
 *   gw:adapters:version        counter, incremented on every change (instances poll it as a safety net)
 *   gw:adapters:changed        pub/sub channel: the id of the adapter that changed
 *
 * Versions are never rewritten: registering an id again adds version n+1 and makes it current.
 * On a Redis Cluster `gw:adapter` is the hash tag `{gw:adapter}` (core/keys.ts): an adapter's hash and the id set are
 * written in one MULTI, which a cluster serves only for keys of one slot.
 */
import { keyGroup } from '../core/keys.js';
import type { RedisClient } from '../queue/connection.js';

export const ADAPTERS_VERSION_KEY = 'gw:adapters:version';
export const ADAPTERS_CHANNEL = 'gw:adapters:changed';

/** The keys of registered adapters under their group (`gw:adapter`, or `{gw:adapter}` on a cluster). */
export function adapterKeys(group = 'gw:adapter') {
  return { ids: `${group}:ids`, adapter: (id: string) => `${group}:${id}` };
}

export interface RegisteredVersion {
  version: number;
  description: string;
  deviceMapping: unknown;
  fhirMapping: unknown;
  samples: unknown[];
  registeredAt: string;
  /** role:id of the caller. */
  registeredBy: string;
}

export interface RegisteredAdapter {
  id: string;
  vendor: string;
  enabled: boolean;
  current: number;
  createdAt: string;
  updatedAt: string;
  /** Version numbers, ascending. */
  versions: number[];
}

export class RegistrationStore {
  private readonly k: ReturnType<typeof adapterKeys>;

  constructor(private readonly redis: RedisClient) {
    this.k = adapterKeys(keyGroup('gw:adapter', redis));
  }

  async ids(): Promise<string[]> {
    return (await this.redis.smembers(this.k.ids)).sort();
  }

  async get(id: string): Promise<RegisteredAdapter | undefined> {
    const h = await this.redis.hgetall(this.k.adapter(id));
    if (!h.vendor || !h.current) return undefined;
    const versions = Object.keys(h)
      .filter((k) => /^v\d+$/.test(k))
      .map((k) => Number(k.slice(1)))
      .sort((a, b) => a - b);
    return {
      id,
      vendor: h.vendor,
      enabled: h.enabled !== '0',
      current: Number(h.current),
      createdAt: h.createdAt ?? '',
      updatedAt: h.updatedAt ?? '',
      versions,
    };
  }

  async version(id: string, version: number): Promise<RegisteredVersion | undefined> {
    const v = await this.redis.hget(this.k.adapter(id), `v${version}`);
    return v ? (JSON.parse(v) as RegisteredVersion) : undefined;
  }

  /**
   * Adds a version (version 1 creates the adapter for `vendor`). Returns the version number, or `{ owner }` when the
   * id belongs to another vendor. The owner is claimed with HSETNX, so two vendors racing for a new id cannot both win.
   */
  async addVersion(
    id: string,
    vendor: string,
    v: Omit<RegisteredVersion, 'version'>,
    enabledOnCreate: boolean,
  ): Promise<{ version: number; created: boolean } | { owner: string }> {
    const key = this.k.adapter(id);
    const now = v.registeredAt;
    const claimed = await this.redis.hsetnx(key, 'vendor', vendor);
    if (!claimed) {
      const owner = await this.redis.hget(key, 'vendor');
      if (owner !== vendor) return { owner: owner ?? '' };
    }
    const version = await this.redis.hincrby(key, 'seq', 1);
    const fields: Record<string, string> = { [`v${version}`]: JSON.stringify({ ...v, version }), current: String(version), updatedAt: now };
    if (claimed) Object.assign(fields, { createdAt: now, enabled: enabledOnCreate ? '1' : '0' });
    await this.redis.multi().hset(key, fields).sadd(this.k.ids, id).exec();
    await this.changed(id);
    return { version, created: version === 1 || claimed === 1 };
  }

  async setEnabled(id: string, enabled: boolean): Promise<void> {
    await this.redis.hset(this.k.adapter(id), { enabled: enabled ? '1' : '0', updatedAt: new Date().toISOString() });
    await this.changed(id);
  }

  async delete(id: string): Promise<void> {
    await this.redis.multi().del(this.k.adapter(id)).srem(this.k.ids, id).exec();
    await this.changed(id);
  }

  /** The change counter (for polling). */
  async changeCounter(): Promise<string> {
    return (await this.redis.get(ADAPTERS_VERSION_KEY)) ?? '0';
  }

  private async changed(id: string): Promise<void> {
    await this.redis.incr(ADAPTERS_VERSION_KEY);
    await this.redis.publish(ADAPTERS_CHANNEL, id);
  }
}
