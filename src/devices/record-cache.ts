/**
 * The device registry's records and identifier index in memory, kept true by Redis itself (server-assisted client-side
 * caching, `CLIENT TRACKING ... BCAST`): ingest reads every message's devices before it decides on the message, and
 * without this that read is a Redis round trip per message, in front of the enqueue.
 *
 * One connection of its own enables tracking in broadcast mode for the key prefixes given, redirected to itself, and
 * subscribes to `__redis__:invalidate`: Redis then announces every change of such a key, by any client (every gateway
 * process, the API, a script, an expiry, FLUSHALL), and the entry is dropped. Nothing is served from memory unless
 * that connection is subscribed and answers: while it is down, reconnecting, not yet set up, or has not answered a PING
 * sent within the last second (FRESH_MS; one is sent four times a second), every read goes to Redis; the memory is
 * emptied each time the connection is lost, since announcements may have been missed. A set-up that a reconnect
 * interrupts is not resumed on the new connection: that one's 'ready' starts a set-up of its own.
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
const PING_EVERY_MS = 250;
const PING_TIMEOUT_MS = 2000;
/**
 * Memory answers only while a PING sent less than this long ago has been answered: a connection gone silent stops
 * being trusted within this time, before the PING_TIMEOUT_MS that drops it. Redis sends a connection its messages in
 * order, so once a PING's answer is in, every change Redis made before that PING has been announced and heard.
 */
export const FRESH_MS = 1000;
/**
 * How long after a failed set-up the connection is opened again: RETRY_MS, doubling with each failure in a row up to
 * RETRY_MAX_MS (a Redis that refuses CLIENT TRACKING, for an ACL or its version, is asked again rarely).
 */
const RETRY_MS = 5000;
const RETRY_MAX_MS = 300_000;

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
  /** Numbers each set-up: one that a reconnect or a stop overtook gives up at its next step. */
  private attempt = 0;
  /** When the last PING that was answered was sent: every change Redis made before then has been heard of. */
  private heardUpTo = 0;
  private pinger?: NodeJS.Timeout;
  private pinging = false;
  private retry?: NodeJS.Timeout;
  private started?: () => void;
  hits = 0;
  misses = 0;
  invalidations = 0;
  /** Set-ups that failed in a row (0 once one succeeds). */
  setupFailures = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly prefixes: readonly string[],
    private readonly opts: RecordCacheOptions,
    private readonly log: Logger,
  ) {}

  /**
   * Whether reads are served from memory now: the tracking connection is subscribed, and a PING sent less than
   * FRESH_MS ago has been answered on it (so it is not silently gone).
   */
  get active(): boolean {
    return this.subscribed && Date.now() - this.heardUpTo < FRESH_MS;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Opens the tracking connection; resolves once it is set up, or has failed, or after 5 s (reads then go to Redis). */
  async start(): Promise<void> {
    if (this.conn || this.stopped) return;
    // Its subscription is made by setUp on each connection, after tracking is on (not by ioredis first). Commands do
    // not wait for a connection, nor are they sent again on the next one: a reconnect fails what was in flight, and
    // the next 'ready' starts a set-up of its own.
    const conn = duplicateConnection(this.redis, {
      enableAutoPipelining: false,
      autoResubscribe: false,
      autoResendUnfulfilledCommands: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
    }) as Redis;
    this.conn = conn;
    conn.on('messageBuffer', (channel: Buffer, keys: Buffer[] | Buffer | null) => {
      if (channel.toString() !== INVALIDATE) return;
      this.invalidate(keys);
    });
    for (const e of ['close', 'end', 'reconnecting'] as const) conn.on(e, () => this.lost());
    conn.on('error', () => {
      this.lost();
      // An error that did not close the connection leaves it unsubscribed, or not tracking: start again.
      if (conn.status === 'ready') this.reconnectLater(conn);
    });
    conn.on('ready', () => void this.setUp(conn));
    this.pinger = setInterval(() => this.ping(conn), PING_EVERY_MS);
    this.pinger.unref();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.started?.(), 5000);
      timer.unref();
      this.started = () => {
        clearTimeout(timer);
        this.started = undefined;
        resolve();
      };
      if (conn.status === 'ready') void this.setUp(conn);
    });
  }

  private async setUp(conn: Redis): Promise<void> {
    const mine = ++this.attempt;
    const current = () => !this.stopped && this.conn === conn && this.attempt === mine && conn.status === 'ready';
    try {
      if (!current()) return;
      this.lost();
      const id = await conn.client('ID');
      if (!current()) return;
      const args = ['TRACKING', 'ON', 'REDIRECT', String(id), 'BCAST'];
      for (const p of this.prefixes) args.push('PREFIX', p);
      await conn.call('CLIENT', ...args);
      if (!current()) return;
      const sent = Date.now();
      await conn.subscribe(INVALIDATE);
      if (!current()) return;
      this.entries.clear();
      this.epoch++;
      this.heardUpTo = sent;
      this.subscribed = true;
      if (this.setupFailures)
        this.log.info({ failures: this.setupFailures }, 'device records are read from memory again: tracking is set up');
      this.setupFailures = 0;
    } catch (err) {
      if (!current()) return;
      this.lost();
      // Said once per run of failures: a Redis that refuses tracking for good would otherwise fill the log.
      if (++this.setupFailures === 1)
        this.log.warn(
          { error: (err as Error).message },
          'device records are read from Redis for every message: tracking could not be set up (it is tried again, less and less often)',
        );
      this.reconnectLater(conn, Math.min(RETRY_MS * 2 ** (this.setupFailures - 1), RETRY_MAX_MS));
    } finally {
      if (this.attempt === mine) this.started?.();
    }
  }

  /** Drops the connection in a while (ioredis opens it again, and its 'ready' sets tracking up anew). */
  private reconnectLater(conn: Redis, delayMs = RETRY_MS): void {
    if (this.retry || this.stopped) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      if (!this.stopped && this.conn === conn) conn.disconnect(true);
    }, delayMs);
    this.retry.unref();
  }

  private ping(conn: Redis): void {
    if (!this.subscribed || this.pinging || this.conn !== conn) return;
    this.pinging = true;
    const sent = Date.now();
    let answered = false;
    const timer = setTimeout(() => {
      if (answered || this.conn !== conn || this.stopped) return;
      this.log.warn({}, 'the connection that hears of device record changes did not answer: reading devices from Redis until it is back');
      this.lost();
      conn.disconnect(true);
    }, PING_TIMEOUT_MS);
    timer.unref();
    conn.ping().then(
      () => {
        answered = true;
        this.pinging = false;
        clearTimeout(timer);
        if (this.subscribed && this.conn === conn) this.heardUpTo = Math.max(this.heardUpTo, sent);
      },
      () => {
        answered = true;
        this.pinging = false;
        clearTimeout(timer);
      },
    );
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
    if (!this.active) return this.redis.mget(keys);
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
    const keep = this.active && this.epoch === epoch;
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
    clearTimeout(this.retry);
    this.lost();
    this.started?.();
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
