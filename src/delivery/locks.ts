/**
 * Per-key locks in Redis. Conditional creates race on real FHIR servers when two requests for the same identifier run
 * at once, so jobs of the same device or patient are serialised, across every worker process, by holding a lock on
 * each key for the duration of the EHR write. All keys of a job are taken in one atomic step (no deadlock).
 */
import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../queue/connection.js';

const ACQUIRE = `
for i, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then return 0 end
end
for i, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
end
return 1`;

const RELEASE = `
local n = 0
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then n = n + redis.call('DEL', k) end
end
return n`;

const HOLD = `
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 1`;

/** Releases the keys; with `holdMs`, keeps them that much longer instead (they then expire on their own). */
export type Release = (holdMs?: number) => Promise<void>;

export class LockBusyError extends Error {
  constructor(keys: string[], waitedMs: number) {
    super(`another job holds the lock of the same device or patient (${keys.length} keys) after ${waitedMs} ms`);
    this.name = 'LockBusyError';
  }
}

export class KeyLocks {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix = 'gw:lock:',
  ) {}

  /** Takes every key or none; waits up to `waitMs`, then throws LockBusyError (retryable). */
  async acquire(keys: string[], ttlMs: number, waitMs: number): Promise<Release> {
    const full = [...new Set(keys)].sort().map((k) => this.prefix + k);
    if (!full.length) return async () => undefined;
    const token = randomUUID();
    const start = Date.now();
    let delay = 2;
    for (;;) {
      const ok = await this.redis.eval(ACQUIRE, full.length, ...full, token, String(ttlMs));
      if (ok === 1) {
        return async (holdMs) => {
          const args =
            holdMs === undefined
              ? [RELEASE, full.length, ...full, token]
              : [HOLD, full.length, ...full, token, String(Math.max(1, Math.round(holdMs)))];
          await this.redis.eval(...(args as [string, number, ...string[]])).catch(() => undefined);
        };
      }
      const waited = Date.now() - start;
      if (waited >= waitMs) throw new LockBusyError(full, waited);
      await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
      delay = Math.min(delay * 2, 100);
    }
  }
}
