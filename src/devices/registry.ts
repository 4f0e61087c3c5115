/**
 * The device registry in Redis, shared by every gateway instance:
 *   gw:dev:ids            set of device ids
 *   gw:dev:rec:<id>       the DeviceRecord (JSON), changed only by compare-and-set (two instances changing the same
 *                         device at once cannot lose an update or make an illegal transition)
 *   gw:dev:tel:<id>       telemetry hash (last seen, counters, battery, signal), written on every message
 *   gw:dev:held:<id>      readings held under UNKNOWN_DEVICE_POLICY=hold (list of DeliveryJob JSON)
 *   gw:dev:cfg:<id>       remote configuration (JSON: version, settings, who/when, last fetched)
 *   gw:dev:report:<id>    the decommissioning report
 *   gw:dev:alias:<kind>:<value>  another identifier of a device (its EUI-64) → the device id
 * On a Redis Cluster `gw:dev` is the hash tag `{gw:dev}` (`{gw:dev}:rec:<id>`, core/keys.ts): ingest reads and writes
 * several devices' keys in one MGET, MULTI or pipeline, which a cluster serves only for keys of one slot.
 */
import type { RecordCache } from './record-cache.js';
import type { RedisClient } from '../queue/connection.js';
import { keyGroup } from '../core/keys.js';
import { canonicalEui64 } from '../fhir/identifiers.js';
import { takeBatch } from '../queue/group-commit.js';
import { type DeliveryJob, normalizeJob } from '../queue/queue.js';
import type { DeviceRecord, DeviceTelemetry } from './model.js';

/**
 * seenMany: KEYS the devices' telemetry hashes (a device may come more than once, from several messages); ARGV five
 * per key: the message's time, its channel, the device's readings in it, battery, signal ('' when the message had none).
 */
const SEEN = `
for i, key in ipairs(KEYS) do
  local d = (i - 1) * 5
  redis.call('HSET', key, 'lastSeen', ARGV[d + 1], 'lastChannel', ARGV[d + 2])
  redis.call('HINCRBY', key, 'messages', ARGV[d + 3])
  if ARGV[d + 4] ~= '' then redis.call('HSET', key, 'battery', ARGV[d + 4], 'batteryAt', ARGV[d + 1]) end
  if ARGV[d + 5] ~= '' then redis.call('HSET', key, 'signal', ARGV[d + 5], 'signalAt', ARGV[d + 1]) end
end
return #KEYS`;

/** Most devices' telemetry written in one script: a bound on one round trip's size (the rest go in the next). */
export const SEEN_MAX_DEVICES = 1000;

/** What seenMany writes of one device of one message. */
export interface SeenDevice {
  id: string;
  readings: number;
  telemetry: { battery?: number; signal?: number };
}

interface SeenWaiting {
  devices: SeenDevice[];
  at: string;
  channel: string;
  resolve(): void;
  reject(err: unknown): void;
}

const CAS = `
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1`;

export interface DeviceConfigDoc {
  version: number;
  settings: Record<string, unknown>;
  updatedAt: string;
  updatedBy: string;
  lastFetchedAt?: string;
  lastFetchedBy?: string;
}

export interface DecommissionReport {
  deviceId: string;
  decommissionedAt: string;
  by: { role: string; id: string; keyId: string };
  previousState: string;
  wiped: {
    credentials: string[];
    patientAssignment: boolean;
    locationAssignment: boolean;
    heldReadings: number;
    configuration: boolean;
    telemetry: boolean;
    cachedVerifications: string;
  };
  fhirDevice: { status: 'inactive'; jobId?: string };
}

/** The registry's keys under its group (`gw:dev`, or `{gw:dev}` on a cluster). */
export function deviceKeys(group = 'gw:dev') {
  return {
    ids: `${group}:ids`,
    /** The prefixes of the records and of the identifier index: what ingest reads per message (record-cache.ts). */
    readPrefixes: [`${group}:rec:`, `${group}:alias:`],
    rec: (id: string) => `${group}:rec:${id}`,
    tel: (id: string) => `${group}:tel:${id}`,
    held: (id: string) => `${group}:held:${id}`,
    cfg: (id: string) => `${group}:cfg:${id}`,
    report: (id: string) => `${group}:report:${id}`,
    /** Another identifier of a registered device (its EUI-64) → the device id, so data that names it that way finds it. */
    alias: (kind: string, value: string) => `${group}:alias:${kind}:${value}`,
  };
}

/** The identifiers a device is found by besides its id (values in canonical form). */
function aliasesOf(r: DeviceRecord): [string, string][] {
  return r.identifiers?.eui64 ? [['eui64', r.identifiers.eui64]] : [];
}

export class DeviceRegistry {
  private readonly k: ReturnType<typeof deviceKeys>;
  /** Where ingest's reads (getMany, resolveAliases) are served from when it can be: see record-cache.ts. */
  cache?: RecordCache;
  /** Messages whose telemetry waits for the write in flight (seenMany). */
  private seenWaiting: SeenWaiting[] = [];
  private seenBusy = false;
  /** Writes of telemetry made and messages they carried (for tests and the bench: how much grouping happens). */
  readonly seenStats = { writes: 0, messages: 0 };

  constructor(readonly redis: RedisClient) {
    this.k = deviceKeys(keyGroup('gw:dev', redis));
  }

  /** The key prefixes ingest reads per message, for a RecordCache. */
  get readPrefixes(): readonly string[] {
    return this.k.readPrefixes;
  }

  private mgetForIngest(keys: string[]): Promise<(string | null)[]> {
    return this.cache ? this.cache.mget(keys) : this.redis.mget(keys);
  }

  async get(id: string): Promise<DeviceRecord | undefined> {
    const s = await this.redis.get(this.k.rec(id));
    return s ? (JSON.parse(s) as DeviceRecord) : undefined;
  }

  /**
   * Several records in one round trip (ingest looks up every device of a message at once); with a cache, those it
   * holds from memory and only the others from Redis.
   */
  async getMany(ids: string[]): Promise<Map<string, DeviceRecord>> {
    const out = new Map<string, DeviceRecord>();
    if (!ids.length) return out;
    const found = await this.mgetForIngest(ids.map(this.k.rec));
    ids.forEach((id, i) => {
      const s = found[i];
      if (s) out.set(id, JSON.parse(s) as DeviceRecord);
    });
    return out;
  }

  /**
   * Creates the record; false when the id is taken, or the device that holds one of its other identifiers (an EUI-64
   * names one device) when that is.
   */
  async create(r: DeviceRecord): Promise<boolean | { identifierOf: string }> {
    for (const [kind, value] of aliasesOf(r)) {
      const owner = await this.redis.get(this.k.alias(kind, value));
      if (owner && owner !== r.id) return { identifierOf: owner };
    }
    const ok = await this.redis.set(this.k.rec(r.id), JSON.stringify(r), 'NX');
    this.cache?.forget([this.k.rec(r.id)]);
    if (ok !== 'OK') return false;
    const m = this.redis.multi().sadd(this.k.ids, r.id);
    for (const [kind, value] of aliasesOf(r)) m.set(this.k.alias(kind, value), r.id, 'NX');
    await m.exec();
    this.cache?.forget(aliasesOf(r).map(([kind, value]) => this.k.alias(kind, value)));
    return true;
  }

  /** The device ids that other identifiers name (an EUI-64 value → the registered device that carries it). */
  async resolveAliases(values: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const candidates = values.filter((v) => /^[0-9A-F]{2}(-[0-9A-F]{2}){7}$/.test(v));
    if (!candidates.length) return out;
    const ids = await this.mgetForIngest(candidates.map((v) => this.k.alias('eui64', v)));
    candidates.forEach((v, i) => {
      if (ids[i]) out.set(v, ids[i] as string);
    });
    return out;
  }

  /** Indexes the other identifiers of records written before the index existed (start-up; idempotent). */
  async indexAliases(): Promise<number> {
    let n = 0;
    for (const r of await this.all()) {
      for (const [kind, value] of aliasesOf(r)) {
        const canon = kind === 'eui64' ? (canonicalEui64(value) ?? value) : value;
        if ((await this.redis.set(this.k.alias(kind, canon), r.id, 'NX')) === 'OK') n++;
        this.cache?.forget([this.k.alias(kind, canon)]);
      }
    }
    return n;
  }

  /**
   * Read-modify-write with compare-and-set, retried on conflict. `change` returns the new record, or throws to refuse
   * (e.g. an illegal transition seen against the current state).
   */
  async update(
    id: string,
    change: (current: DeviceRecord) => DeviceRecord | Promise<DeviceRecord>,
  ): Promise<{ before: DeviceRecord; after: DeviceRecord } | undefined> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const s = await this.redis.get(this.k.rec(id));
      if (!s) return undefined;
      const before = JSON.parse(s) as DeviceRecord;
      const after = await change(structuredClone(before));
      after.updatedAt = new Date().toISOString();
      after.version = (before.version ?? 0) + 1;
      const ok = await this.redis.eval(CAS, 1, this.k.rec(id), s, JSON.stringify(after));
      if (ok === 1) {
        this.cache?.forget([this.k.rec(id)]);
        return { before, after };
      }
    }
    throw new Error(`device ${id}: too many concurrent changes`);
  }

  async all(): Promise<DeviceRecord[]> {
    const ids = (await this.redis.smembers(this.k.ids)).sort();
    if (!ids.length) return [];
    const out: DeviceRecord[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const vals = await this.redis.mget(chunk.map(this.k.rec));
      for (const v of vals) if (v) out.push(JSON.parse(v) as DeviceRecord);
    }
    return out;
  }

  async telemetry(ids: string[]): Promise<Map<string, DeviceTelemetry>> {
    const out = new Map<string, DeviceTelemetry>();
    if (!ids.length) return out;
    const p = this.redis.pipeline();
    for (const id of ids) p.hgetall(this.k.tel(id));
    const res = (await p.exec()) ?? [];
    ids.forEach((id, i) => {
      const h = (res[i]?.[1] ?? {}) as Record<string, string>;
      const num = (k: string) => (h[k] !== undefined ? Number(h[k]) : undefined);
      out.set(id, {
        lastSeen: h.lastSeen,
        lastChannel: h.lastChannel,
        messages: num('messages') ?? 0,
        errors: num('errors') ?? 0,
        battery: num('battery'),
        batteryAt: h.batteryAt,
        signal: num('signal'),
        signalAt: h.signalAt,
      });
    });
    return out;
  }

  async seen(id: string, at: string, channel: string, readings: { battery?: number; signal?: number }): Promise<void> {
    const fields: Record<string, string> = { lastSeen: at, lastChannel: channel };
    if (readings.battery !== undefined) Object.assign(fields, { battery: String(readings.battery), batteryAt: at });
    if (readings.signal !== undefined) Object.assign(fields, { signal: String(readings.signal), signalAt: at });
    await this.redis.multi().hset(this.k.tel(id), fields).hincrby(this.k.tel(id), 'messages', 1).exec();
  }

  /**
   * `seen` for every device of a message; `readings` counts the device's readings in it. Resolves once written.
   *
   * Written as ingest's jobs are (queue/group-commit.ts): a message that finds no write in flight is written at once,
   * alone; the messages that arrive while one is in flight wait for it and are then written together, in one script
   * for all their devices. A quiet gateway pays nothing; a busy one makes one command for many messages instead of one
   * each (bench/path.ts, one reading per request: the script's calls per request are in its Redis command counts).
   */
  seenMany(devices: SeenDevice[], at: string, channel: string): Promise<void> {
    if (!devices.length) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.seenWaiting.push({ devices, at, channel, resolve, reject });
      if (!this.seenBusy) void this.drainSeen();
    });
  }

  /** Writes the waiting messages' telemetry, one script per round trip, until nothing waits. */
  private async drainSeen(): Promise<void> {
    this.seenBusy = true;
    try {
      while (this.seenWaiting.length) {
        const batch = takeBatch(this.seenWaiting, SEEN_MAX_DEVICES, (m) => m.devices.length);
        this.seenStats.writes++;
        this.seenStats.messages += batch.length;
        const keys: string[] = [];
        const argv: (string | number)[] = [];
        for (const m of batch)
          for (const d of m.devices) {
            keys.push(this.k.tel(d.id));
            argv.push(m.at, m.channel, d.readings, d.telemetry.battery ?? '', d.telemetry.signal ?? '');
          }
        try {
          await this.redis.eval(SEEN, keys.length, ...keys, ...argv);
          for (const m of batch) m.resolve();
        } catch (err) {
          for (const m of batch) m.reject(err);
        }
      }
    } finally {
      this.seenBusy = false;
    }
  }

  async error(id: string): Promise<void> {
    await this.redis.hincrby(this.k.tel(id), 'errors', 1);
  }

  /** Marks the offline alert of a silence (keyed by its last-seen time) as sent; true only for the first caller. */
  async claimOfflineAlert(id: string, lastSeen: string): Promise<boolean> {
    const r = await this.redis.eval(
      `if redis.call('HGET', KEYS[1], 'offlineAlertFor') == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'offlineAlertFor', ARGV[1]) return 1`,
      1,
      this.k.tel(id),
      lastSeen,
    );
    return r === 1;
  }

  async hold(id: string, job: DeliveryJob, max: number): Promise<boolean> {
    const n = await this.redis.llen(this.k.held(id));
    if (n >= max) return false;
    await this.redis.rpush(this.k.held(id), JSON.stringify(job));
    return true;
  }

  async listHeld(id: string, offset: number, limit: number): Promise<DeliveryJob[]> {
    return (await this.redis.lrange(this.k.held(id), offset, offset + limit - 1)).map((s) => normalizeJob(JSON.parse(s) as DeliveryJob));
  }

  async heldCount(id: string): Promise<number> {
    return this.redis.llen(this.k.held(id));
  }

  /** Removes and returns the held readings, atomically (two instances activating at once release them once). */
  /**
   * The held readings, left in place: they were acknowledged to their sender, so they are removed (dropHeld) only
   * after they are queued. A crash in between queues them again on the next release, which the content-derived job
   * ids make harmless.
   */
  async peekHeld(id: string): Promise<{ raw: string[]; jobs: DeliveryJob[] }> {
    const raw = await this.redis.lrange(this.k.held(id), 0, -1);
    return { raw, jobs: raw.map((s) => normalizeJob(JSON.parse(s) as DeliveryJob)) };
  }

  /** Removes exactly these held readings (others held meanwhile stay). */
  async dropHeld(id: string, raw: string[]): Promise<void> {
    if (!raw.length) return;
    const m = this.redis.multi();
    for (const r of raw) m.lrem(this.k.held(id), 1, r);
    await m.exec();
  }

  async getConfig(id: string): Promise<DeviceConfigDoc | undefined> {
    const s = await this.redis.get(this.k.cfg(id));
    return s ? (JSON.parse(s) as DeviceConfigDoc) : undefined;
  }

  async setConfig(id: string, settings: Record<string, unknown>, by: string): Promise<DeviceConfigDoc> {
    for (;;) {
      const s = await this.redis.get(this.k.cfg(id));
      const prev = s ? (JSON.parse(s) as DeviceConfigDoc) : undefined;
      const doc: DeviceConfigDoc = {
        version: (prev?.version ?? 0) + 1,
        settings,
        updatedAt: new Date().toISOString(),
        updatedBy: by,
        lastFetchedAt: prev?.lastFetchedAt,
        lastFetchedBy: prev?.lastFetchedBy,
      };
      if ((await this.redis.eval(CAS, 1, this.k.cfg(id), s ?? '', JSON.stringify(doc))) === 1) return doc;
    }
  }

  async fetchedConfig(id: string, by: string): Promise<DeviceConfigDoc | undefined> {
    for (let i = 0; i < 20; i++) {
      const s = await this.redis.get(this.k.cfg(id));
      if (!s) return undefined;
      const doc = { ...(JSON.parse(s) as DeviceConfigDoc), lastFetchedAt: new Date().toISOString(), lastFetchedBy: by };
      if ((await this.redis.eval(CAS, 1, this.k.cfg(id), s, JSON.stringify(doc))) === 1) return doc;
    }
    return undefined;
  }

  /** Deletes held readings, configuration and telemetry; returns what there was. */
  async wipe(id: string): Promise<{ heldReadings: number; configuration: boolean; telemetry: boolean }> {
    const res =
      (await this.redis
        .multi()
        .llen(this.k.held(id))
        .exists(this.k.cfg(id))
        .exists(this.k.tel(id))
        .del(this.k.held(id), this.k.cfg(id), this.k.tel(id))
        .exec()) ?? [];
    return { heldReadings: Number(res[0]?.[1] ?? 0), configuration: Number(res[1]?.[1]) === 1, telemetry: Number(res[2]?.[1]) === 1 };
  }

  async putReport(r: DecommissionReport): Promise<void> {
    await this.redis.set(this.k.report(r.deviceId), JSON.stringify(r));
  }

  async getReport(id: string): Promise<DecommissionReport | undefined> {
    const s = await this.redis.get(this.k.report(id));
    return s ? (JSON.parse(s) as DecommissionReport) : undefined;
  }
}
