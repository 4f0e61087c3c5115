/**
 * One access token per destination and process, shared by every request: fetched once, used until shortly before it
 * expires, renewed ahead of expiry in the background while the current one is still handed out, and never fetched by
 * more than one request at a time (concurrent callers wait for the same fetch: no thundering herd). A failed fetch
 * fails every caller waiting for it; the next caller starts a new one, so a refusing token endpoint sees one request
 * at a time, paced by the jobs' own retry backoff.
 */

export interface AccessToken {
  value: string;
  /** Lifetime in seconds, as the server said (expires_in). */
  expiresInS: number;
}

interface Held {
  value: string;
  /** Handed out until then (a margin before the server's expiry, for the request's own travel time). */
  usableUntil: number;
  /** From then on, a renewal starts in the background. */
  renewFrom: number;
}

export interface TokenCacheOptions {
  now?: () => number;
}

export class TokenCache {
  private held?: Held;
  private inflight?: Promise<Held>;
  private readonly now: () => number;

  constructor(
    private readonly fetchToken: () => Promise<AccessToken>,
    options: TokenCacheOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  /** A token to send now: the held one while usable (renewed ahead in the background), else a fresh one. */
  async get(): Promise<string> {
    const held = this.held;
    const now = this.now();
    if (held && now < held.usableUntil) {
      if (now >= held.renewFrom && !this.inflight) void this.renew().catch(() => undefined);
      return held.value;
    }
    return (await this.renew()).value;
  }

  /** The server refused `value` (a 401): forget it, so that the next get() fetches a new one (once, for every caller). */
  invalidate(value: string): void {
    if (this.held?.value === value) this.held = undefined;
  }

  private renew(): Promise<Held> {
    if (this.inflight) return this.inflight;
    const started = this.now();
    this.inflight = this.fetchToken()
      .then((t) => {
        const lifetimeMs = Math.max(0, t.expiresInS) * 1000;
        // Used until 90% of its life (at most 30 s early); renewed from 75% (at most a minute early).
        this.held = {
          value: t.value,
          usableUntil: started + lifetimeMs - Math.min(30_000, lifetimeMs * 0.1),
          renewFrom: started + lifetimeMs - Math.min(60_000, lifetimeMs * 0.25),
        };
        return this.held;
      })
      .finally(() => {
        this.inflight = undefined;
      });
    return this.inflight;
  }
}
