/**
 * The one place the gateway opens a Redis connection (its own client and each of bull's connections), so that every
 * connection follows the same target: one Redis at a URL, or the master a set of Redis Sentinels names, followed
 * across a failover (docs/scaling.md).
 */
import type { Redis, RedisOptions } from 'ioredis';
import IORedis from 'ioredis';

/** Where Redis is: a URL, or Sentinels that name the master (the URL then gives only the password and the database). */
export interface RedisTarget {
  url?: string;
  /** host:port of each Sentinel; set: the master is asked of them, and followed when they fail over. */
  sentinels?: readonly string[];
  /** The master's name in the Sentinels' configuration (`sentinel monitor <name> ...`). */
  sentinelName?: string;
}

/** Redis options for every connection: no endless offline queue, so a Redis outage is an error, not a hang. */
export function redisOptions(extra: RedisOptions = {}): RedisOptions {
  return {
    maxRetriesPerRequest: null,
    enableReadyCheck: false,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    ...extra,
  };
}

/** Parses `host:port` (a bracketed IPv6 address too); undefined when it is not one. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2], port };
}

/** The options that make ioredis ask the Sentinels for the master and follow it (none without Sentinels). */
function sentinelOptions(target: RedisTarget): RedisOptions {
  if (!target.sentinels?.length) return {};
  const sentinels = target.sentinels.map((s) => {
    const hp = parseHostPort(s);
    if (!hp) throw new Error(`not a Sentinel address (host:port): ${s}`);
    return hp;
  });
  return {
    sentinels,
    name: target.sentinelName ?? 'mymaster',
    // No failoverDetector: its disconnect on +switch-master can land while the connection is being re-established
    // (after the master died) and end it for good (status 'end', never retried). It is not needed: Sentinel itself
    // kills the clients of a master it demotes (CLIENT KILL TYPE normal), and they reconnect through the Sentinels.
    // A command that still reaches a demoted master gets READONLY: reconnect (through the Sentinels) and resend it.
    reconnectOnError: (err) => (/^READONLY/.test(err.message) ? 2 : false),
    sentinelRetryStrategy: (times) => Math.min(times * 200, 2000),
  };
}

/**
 * A new connection to `target` with redisOptions() and `extra`, with an error listener (errors are seen through
 * `status` and reported by callers, not thrown as unhandled 'error' events).
 */
export function createRedis(target: RedisTarget | string, extra: RedisOptions = {}): Redis {
  const t = typeof target === 'string' ? { url: target } : target;
  const options = { ...redisOptions(extra), ...sentinelOptions(t) };
  const r = t.url ? new IORedis.default(t.url, options) : new IORedis.default(options);
  r.on('error', () => undefined);
  return r;
}

/** A target's description for logs and errors (no password). */
export function describeTarget(target: RedisTarget): string {
  if (target.sentinels?.length) return `sentinels ${target.sentinels.join(',')} (master ${target.sentinelName ?? 'mymaster'})`;
  if (!target.url) return 'none';
  const u = new URL(target.url);
  u.password = '';
  u.username = '';
  return u.toString();
}

/**
 * Reopens `c` whenever it ends while its owner is not closing it. ioredis ends a connection for good (status `end`,
 * no more retries) when a connect fails outright, as when its Sentinel failover detection races a reconnect; a
 * gateway left with such a connection would refuse every message until restarted.
 */
export function reopenWhenEnded(c: Redis, closing: () => boolean, onReopen?: () => void): void {
  c.on('end', () => {
    if (closing()) return;
    const timer = setTimeout(() => {
      if (closing() || c.status !== 'end') return;
      onReopen?.();
      c.connect().catch(() => undefined);
    }, 500);
    timer.unref();
  });
}
