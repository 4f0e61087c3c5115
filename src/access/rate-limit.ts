/**
 * Rate limit per credential: a token bucket in Redis, updated atomically by a Lua script using Redis' own clock.
 * In Redis rather than in memory because a load balancer spreads one credential's requests over every gateway
 * instance: a per-process bucket would allow N times the limit. The cost is one round trip per request, on the
 * connection Redis already serves for the queue. If Redis cannot answer, the request is let through (the queue itself
 * then refuses with 503): the limiter protects capacity, it is not an access check.
 */
import type { RedisClient } from '../queue/connection.js';
import { withTimeout } from '../queue/queue.js';

const TAKE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or cap
local at = tonumber(b[2]) or now
tokens = math.min(cap, tokens + (now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
return wait`;

export class RateLimiter {
  constructor(
    private readonly redis: RedisClient,
    private readonly perMinute: number,
    private readonly burst: number,
    /** How long to wait for Redis before letting the request through (ENQUEUE_TIMEOUT_MS; 0: the client's own retries). */
    private readonly timeoutMs = 0,
  ) {}

  get enabled(): boolean {
    return this.perMinute > 0;
  }

  /**
   * 0 when the request may go ahead, else the milliseconds until a token is available. `timeoutMs`: how long to wait
   * for Redis this time (the constructor's by default); past it the request goes ahead.
   */
  async take(id: string, timeoutMs = this.timeoutMs): Promise<number> {
    if (!this.enabled) return 0;
    try {
      const take = this.redis.eval(TAKE, 1, `gw:rl:${id}`, String(this.burst), String(this.perMinute / 60_000));
      const wait = await withTimeout(take, timeoutMs, 'the rate limit (Redis) did not answer');
      return Number(wait) || 0;
    } catch {
      return 0;
    }
  }
}
