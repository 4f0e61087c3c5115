/**
 * Failed authentications (401) per source address: counted in Redis, so that every gateway process shares the counts,
 * for two purposes.
 *
 * 1. The limit: after AUTH_FAILURE_LIMIT failures from one address within a window of AUTH_FAILURE_WINDOW_S, further
 *    requests from that address are answered 429 (Retry-After: the rest of the window) before any key is looked at,
 *    so a guesser pays no scrypt and writes no AuditEvent per request. A window starts at the address's first failure
 *    (after the previous window ended) and lasts AUTH_FAILURE_WINDOW_S.
 * 2. The audit: instead of one AuditEvent per failure, one per source and window. A source is the address plus the key
 *    id presented (a well-formed `gw_<keyId>_…` bearer key or an X-Gateway-Key-Id), so that failures of a real key are
 *    told apart from guessing. The first failure of a source in a window is recorded at once (an alert needs no
 *    waiting); when the window closes, a summary with the count, the first and last time, the reasons and the paths
 *    is recorded for each source that failed more than once, and one for the requests refused by the limit. At most
 *    AUTH_FAILURE_SOURCES_PER_ADDRESS (10) key ids get a source of their own per address and window; the rest share one
 *    ("*"), so varying the key id does not bring back one event per request. An IPv6 address counts by its /64 prefix
 *    (one host usually holds a whole /64).
 *
 * Redis: one hash per address for its current window, `gw:authfail:<address>`, and `gw:authfail:due`, a sorted set of
 * those hashes by the end of their window. Whichever process first sees a window end takes its hash (atomically:
 * ZREM decides) and records its summaries; a failure that arrives after the end but before that sets the ended
 * window aside under its own name first. The hashes expire on their own (ten windows, at least an hour) if no gateway
 * runs to summarise them. The scripts touch a window's hash and the due set together: on a Redis Cluster the keys are
 * under the hash tag `{gw:authfail}` (core/keys.ts), so that they share a slot. If Redis cannot answer, requests are
 * let through to the key check (which needs Redis too and then answers 503) and failures go uncounted: this protects
 * capacity and the audit trail, it is not an access check.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { keyGroup } from '../core/keys.js';
import type { RedisClient } from '../queue/connection.js';
import type { AuditTrail } from '../audit/store.js';
import type { AuditEntityInput } from '../audit/event.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

export const AUTH_FAILURE_SOURCES_PER_ADDRESS = 10;
/** Distinct reasons and request paths kept per address and window (for the summary). */
const DISTINCT_MAX = 10;
/**
 * The keys under their group (`gw:authfail`, or `{gw:authfail}` on a cluster): the due set, and the current window of
 * an address (a window ended but not summarised yet is renamed `…:ended:<time>:<random>`).
 */
export function authFailureKeys(group = 'gw:authfail') {
  return { due: `${group}:due`, bucket: (address: string) => `${group}:${address}` };
}

const FAIL = `
local now = tonumber(ARGV[1])
local due = tonumber(redis.call('HGET', KEYS[1], 'due') or '0')
if due > 0 and now >= due then
  -- The window ended and was not summarised yet: set it aside under its own name for the summary.
  redis.call('RENAME', KEYS[1], KEYS[3])
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZADD', KEYS[2], due, KEYS[3])
end
local total = redis.call('HINCRBY', KEYS[1], 'count', 1)
if total == 1 then
  redis.call('HSET', KEYS[1], 'first', ARGV[1], 'address', ARGV[4], 'due', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
end
redis.call('HSET', KEYS[1], 'last', ARGV[1])
local src = ARGV[5]
if redis.call('HEXISTS', KEYS[1], 's:' .. src) == 0 and src ~= '-' then
  if redis.call('HINCRBY', KEYS[1], 'sources', 1) > tonumber(ARGV[8]) then src = '*' end
end
local n = redis.call('HINCRBY', KEYS[1], 's:' .. src, 1)
if n == 1 then redis.call('HSET', KEYS[1], 'f:' .. src, ARGV[1]) end
redis.call('HSET', KEYS[1], 'l:' .. src, ARGV[1])
local function tally(prefix, v)
  local f = prefix .. v
  if redis.call('HEXISTS', KEYS[1], f) == 1 then redis.call('HINCRBY', KEYS[1], f, 1)
  elseif redis.call('HINCRBY', KEYS[1], prefix .. '#', 1) <= tonumber(ARGV[9]) then redis.call('HSET', KEYS[1], f, 1) end
end
tally('r:', ARGV[6])
tally('q:', ARGV[7])
return {total, n, src}`;

const CHECK = `
local h = redis.call('HMGET', KEYS[1], 'count', 'due')
local n = tonumber(h[1] or '0')
local wait = tonumber(h[2] or '0') - tonumber(ARGV[2])
if n >= tonumber(ARGV[1]) and wait > 0 then
  redis.call('HINCRBY', KEYS[1], 'blocked', 1)
  return wait
end
return 0`;

const TAKE = `
if redis.call('ZREM', KEYS[2], KEYS[1]) == 1 then
  local h = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  return h
end
return false`;

/** IPv4-mapped IPv6 as IPv4; IPv6 as its /64 prefix; anything else as given ('unknown' when absent). */
export function sourceAddress(remote: string | undefined): string {
  const a = (remote ?? '').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');
  if (isIP(a) !== 6) return a || 'unknown';
  let s = a.split('%')[0];
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number);
    s = `${s.slice(0, v4.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = s.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = s.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

export interface AuthFailureOptions {
  /** Failures per address and window before 429; 0 = no limit (failures are still aggregated in the audit). */
  limit: number;
  windowS: number;
}

export interface FailureInput {
  /** The client's address (the TCP peer, or what a trusted proxy forwarded: http/client.ts). */
  address: string | undefined;
  /** The key id presented, when the credential named one. */
  keyId?: string;
  reason: string;
  /** "METHOD /path" */
  request: string;
}

const clip = (s: string, n = 200) => (s.length > n ? `${s.slice(0, n)}…` : s);

export class AuthFailures {
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private readonly k: ReturnType<typeof authFailureKeys>;

  constructor(
    private readonly redis: RedisClient,
    readonly opts: AuthFailureOptions,
    private readonly audit: Pick<AuditTrail, 'record'>,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.k = authFailureKeys(keyGroup('gw:authfail', redis));
  }

  private get windowMs(): number {
    return this.opts.windowS * 1000;
  }

  /** Milliseconds the address must wait (its limit is reached in this window), else 0. Counts a refused request. */
  async blockedFor(remote: string | undefined): Promise<number> {
    if (this.opts.limit <= 0) return 0;
    try {
      return (
        Number(await this.redis.eval(CHECK, 1, this.k.bucket(sourceAddress(remote)), String(this.opts.limit), String(Date.now()))) || 0
      );
    } catch {
      return 0;
    }
  }

  /** Counts a failed authentication; the first of its source in the window is recorded at once. Never rejects. */
  async note(f: FailureInput): Promise<void> {
    const now = Date.now();
    const address = sourceAddress(f.address);
    const key = this.k.bucket(address);
    const src = f.keyId && /^[0-9a-f]{16}$/.test(f.keyId) ? f.keyId : '-';
    let first = false;
    let shared = false;
    try {
      const r = (await this.redis.eval(
        FAIL,
        3,
        key,
        this.k.due,
        `${key}:ended:${now}:${randomBytes(4).toString('hex')}`,
        String(now),
        String(now + this.windowMs),
        String(Math.max(this.windowMs * 10, 3_600_000)),
        address,
        src,
        clip(f.reason),
        clip(f.request),
        String(AUTH_FAILURE_SOURCES_PER_ADDRESS),
        String(DISTINCT_MAX),
      )) as [number, number, string];
      first = Number(r[1]) === 1;
      shared = r[2] === '*';
    } catch (err) {
      this.metrics.inc('audit_failures_total', {});
      this.log.warn({ error: (err as Error).message }, 'a failed authentication could not be counted');
      first = true;
    }
    this.metrics.inc('auth_failures_total', {});
    if (!first) return;
    const entities: AuditEntityInput[] = [{ kind: 'Request', id: clip(f.request) }];
    if (src !== '-' && !shared) entities.push({ kind: 'Credential', id: src });
    await this.audit.record({
      kind: 'access-refused',
      address: f.address,
      outcome: '4',
      description: `401: ${clip(f.reason)} (first failed authentication of this source in this ${this.opts.windowS} s window; further ones are summarised when it ends)`,
      entities,
    });
  }

  /** Records the summaries of every window that ended by `until` (tests pass a later time to end windows early). */
  flush(until = Date.now()): Promise<void> {
    this.flushing ??= this.flushDue(until).finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async flushDue(until: number): Promise<void> {
    for (;;) {
      const keys = await this.redis.zrangebyscore(this.k.due, '-inf', until, 'LIMIT', 0, 100);
      for (const key of keys) {
        const flat = (await this.redis.eval(TAKE, 2, key, this.k.due)) as string[] | null;
        if (!flat?.length) continue;
        const h = new Map<string, string>();
        for (let i = 0; i + 1 < flat.length; i += 2) h.set(flat[i], flat[i + 1]);
        await this.summarise(h);
      }
      if (keys.length < 100) return;
    }
  }

  private async summarise(h: Map<string, string>): Promise<void> {
    const address = h.get('address') ?? 'unknown';
    const iso = (ms: string | undefined) => new Date(Number(ms)).toISOString();
    const tallies = (prefix: string) =>
      [...h]
        .filter(([k]) => k.startsWith(prefix) && k !== `${prefix}#`)
        .map(([k, v]) => ({ value: k.slice(prefix.length), count: Number(v) }))
        .sort((a, b) => b.count - a.count);
    const reasons = tallies('r:');
    const requests = tallies('q:');
    const said = (t: { value: string; count: number }[]) => t.map((x) => `${x.value} ×${x.count}`).join('; ');
    const requestEntities = requests.slice(0, 5).map((r) => ({ kind: 'Request' as const, id: r.value, description: `${r.count} times` }));
    for (const { value: src, count } of tallies('s:')) {
      if (count < 2) continue;
      const start = iso(h.get(`f:${src}`));
      const end = iso(h.get(`l:${src}`));
      const from =
        src === '-' ? 'no key id' : src === '*' ? `more than ${AUTH_FAILURE_SOURCES_PER_ADDRESS} other key ids` : `key id ${src}`;
      await this.audit.record({
        kind: 'access-refused',
        address,
        outcome: '4',
        period: { start, end },
        description: `401: ${count} failed authentications from ${address} (${from}) between ${start} and ${end}; reasons from this address: ${said(reasons)}`,
        entities: [
          {
            kind: 'Request',
            id: 'failed-authentications',
            description: `failed authentications of one source in one ${this.opts.windowS} s window`,
            detail: [
              { type: 'count', value: String(count) },
              { type: 'window-s', value: String(this.opts.windowS) },
            ],
          },
          ...(src !== '-' && src !== '*' ? [{ kind: 'Credential' as const, id: src }] : []),
          ...requestEntities,
        ],
      });
    }
    const blocked = Number(h.get('blocked') ?? 0);
    if (blocked > 0) {
      const start = iso(h.get('first'));
      const end = iso(h.get('last'));
      await this.audit.record({
        kind: 'access-refused',
        address,
        outcome: '4',
        period: { start, end },
        description: `429: ${blocked} requests from ${address} refused without a key check after ${h.get('count')} failed authentications in one ${this.opts.windowS} s window (AUTH_FAILURE_LIMIT=${this.opts.limit})`,
        entities: [
          {
            kind: 'Request',
            id: 'auth-failure-limit',
            description: 'requests refused by the limit on failed authentications',
            detail: [
              { type: 'count', value: String(blocked) },
              { type: 'failures', value: String(h.get('count') ?? 0) },
              { type: 'window-s', value: String(this.opts.windowS) },
            ],
          },
        ],
      });
    }
  }

  /** Summarises ended windows every quarter window (at most every 5 s). */
  start(): void {
    if (this.timer) return;
    const every = Math.min(5000, Math.max(250, this.windowMs / 4));
    this.timer = setInterval(() => {
      void this.flush().catch((err: Error) => this.log.warn({ error: err.message }, 'failed authentications could not be summarised yet'));
    }, every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flushing?.catch(() => undefined);
  }
}
