/**
 * The device registry's records and identifier index in memory, kept true by Redis itself (server-assisted client-side
 * caching, `CLIENT TRACKING ... BCAST`): ingest reads every message's devices before it decides on the message, and
 * without this that read is a Redis round trip per message, in front of the enqueue.
 *
 * One connection of its own enables tracking in broadcast mode for the key prefixes given, redirected to itself, and
 * subscribes to `__redis__:invalidate`: Redis then announces every change of such a key, by any client (every gateway
 * process, the API, a script, an expiry, FLUSHALL), and the entry is dropped. Nothing is served from memory unless
 * that connection is subscribed: while it is down, reconnecting, or not yet set up, every read goes to Redis and the
 * memory is empty; it is emptied again each time the connection is lost, since announcements may have been missed.
 *
 * Changes this process makes through the registry drop their entries at once as well (forget), not only when the
 * announcement arrives. A read that was in flight when an announcement arrived is not kept (an epoch counts announcements): its answer may
 * predate the change. What remains is the window any read has: a change made while a message is being decided. Values
 * are kept as Redis returned them (strings, or null for a key that does not exist), never as shared objects. Entries
 * also expire after `ttlMs`, a bound should an announcement be lost in a way the connection does not show, and the
 * memory holds at most `max` keys (the oldest go first).
 *
 * Not on a Redis Cluster (tracking is per node): there `createRecordCache` answers undefined and reads go to Redis.
 */
import type { Redis } from 'ioredis';
import { duplicateConnection, isCluster, type RedisClient } from '../queue/connection.js';
import type { Logger } from '../observability/logger.js';

const INVALIDATE = '__redis__:invalidate';

/** How long an entry is served at most without a new read: a bound should an announcement be lost unseen. */
export const DEVICE_CACHE_TTL_MS = 60_000;

/**
 * How often the tracking connection is asked for a PONG, and how long it may take: a connection that only listens
 * would not notice a Redis host that went away without closing it (a failover after a crash), and would hear nothing
 * of the changes made on the new master. One that does not answer in time is dropped and opened again.
 */
const PING_EVERY_MS = 1000;
const PING_TIMEOUT_MS = 2000;

export interface RecordCacheOptions {
  /** Most keys held. */
  max: number;
  /** Longest an entry is served without a new read. */
  ttlMs: number;
}

export class RecordCache {
  private readonly entries = new Map<string, { value: string | null; until: number }>();
  /** Counts announcements and losses of the connection: a read that saw it change is not kept. */
  private epoch = 0;
  private conn?: Redis;
  private subscribed = false;
  private stopped = false;
  hits = 0;
  misses = 0;
  invalidations = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefixes: readonly string[],
    private readonly opts: RecordCacheOptions,
    private readonly log: Logger,
  ) {}

  /** Whether reads are being served from memory (the tracking connection is subscribed). */
  get active(): boolean {
    return this.subscribed;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Opens the tracking connection; resolves once it is set up, or once it failed (reads then go to Redis). */
  async start(): Promise<void> {
    if (this.conn || this.stopped) return;
    // Its own subscriptions are made again by setUp on each connection, after tracking is on (not by ioredis first).
    const conn = duplicateConnection(this.redis, { enableAutoPipelining: false, autoResubscribe: false }) as Redis;
    this.conn = conn;
    conn.on('messageBuffer', (channel: Buffer, keys: Buffer[] | Buffer | null) => {
      if (channel.toString() !== INVALIDATE) return;
      this.invalidate(keys);
    });
    for (const e of ['close', 'end', 'reconnecting', 'error'] as const) conn.on(e, () => this.lost());
    conn.on('ready', () => void this.setUp(conn));
    this.pinger = setInterval(() => this.ping(conn), PING_EVERY_MS);
    this.pinger.unref();
    if (conn.status === 'ready') await this.setUp(conn);
    else
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          conn.off('ready', done);
          resolve();
        };
        const timer = setTimeout(done, 5000);
        timer.unref();
        conn.on('ready', done);
      });
    if (this.ready) await this.ready;
  }

  private ready?: Promise<void>;

  private setUp(conn: Redis): Promise<void> {
    this.ready = (async () => {
      try {
        const id = await conn.client('ID');
        const args = ['TRACKING', 'ON', 'REDIRECT', String(id), 'BCAST'];
        for (const p of this.prefixes) args.push('PREFIX', p);
        await conn.call('CLIENT', ...args);
        await conn.subscribe(INVALIDATE);
        if (this.conn !== conn || conn.status !== 'ready') return;
        this.entries.clear();
        this.epoch++;
        this.subscribed = true;
      } catch (err) {
        this.lost();
        this.log.warn(
          { error: (err as Error).message },
          'device records are read from Redis for every message: tracking could not be set up',
        );
      }
    })();
    return this.ready;
  }

  private pinger?: NodeJS.Timeout;
  private pinging = false;

  private ping(conn: Redis): void {
    if (!this.subscribed || this.pinging) return;
    this.pinging = true;
    let answered = false;
    const timer = setTimeout(() => {
      if (answered || this.conn !== conn) return;
      this.log.warn({}, 'the connection that hears of device record changes did not answer: reading devices from Redis until it is back');
      this.lost();
      conn.disconnect(true);
    }, PING_TIMEOUT_MS);
    timer.unref();
    conn
      .ping()
      .catch(() => undefined)
      .finally(() => {
        answered = true;
        this.pinging = false;
        clearTimeout(timer);
      });
  }

  private lost(): void {
    this.subscribed = false;
    this.epoch++;
    this.entries.clear();
  }

  private invalidate(keys: Buffer[] | Buffer | null): void {
    this.epoch++;
    this.invalidations++;
    // null: the whole database was flushed.
    if (keys === null) this.entries.clear();
    else for (const k of Array.isArray(keys) ? keys : [keys]) this.entries.delete(k.toString());
  }

  /**
   * Drops keys this process has just written: Redis announces the change too, but its announcement may arrive after
   * the caller's next message (an API call that suspends a device, then data from it).
   */
  forget(keys: string[]): void {
    this.epoch++;
    for (const k of keys) this.entries.delete(k);
  }

  /** MGET through the memory: the keys held and fresh from it, the others from Redis (and kept, when nothing changed meanwhile). */
  async mget(keys: string[]): Promise<(string | null)[]> {
    if (!this.subscribed) return this.redis.mget(keys);
    const now = Date.now();
    const out: (string | null)[] = new Array(keys.length);
    const missing: number[] = [];
    keys.forEach((k, i) => {
      const e = this.entries.get(k);
      if (e && e.until > now) out[i] = e.value;
      else missing.push(i);
    });
    this.hits += keys.length - missing.length;
    if (!missing.length) return out;
    this.misses += missing.length;
    const epoch = this.epoch;
    const got = await this.redis.mget(missing.map((i) => keys[i]));
    const keep = this.subscribed && this.epoch === epoch;
    missing.forEach((i, j) => {
      out[i] = got[j];
      if (keep) this.keep(keys[i], got[j], now);
    });
    return out;
  }

  private keep(key: string, value: string | null, now: number): void {
    this.entries.delete(key);
    if (this.entries.size >= this.opts.max) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { value, until: now + this.opts.ttlMs });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pinger);
    this.lost();
    const conn = this.conn;
    this.conn = undefined;
    conn?.disconnect();
  }
}

/** A cache for `redis`, or undefined where there is none: `max` 0, or a Redis Cluster. */
export function createRecordCache(
  redis: RedisClient,
  prefixes: readonly string[],
  opts: RecordCacheOptions,
  log: Logger,
): RecordCache | undefined {
  if (opts.max <= 0 || isCluster(redis)) return undefined;
  return new RecordCache(redis, prefixes, opts, log);
}
