/**
 * The gateway's AccessControl: the bootstrap admin key (ADMIN_API_KEY) plus device, vendor and operator keys issued
 * by the gateway (CredentialStore). Role checks live in the route table (`access.require(...)`) and ownership checks
 * (a vendor's own devices, a device's own data) in `owns` and the ingest guard; this class is the one place that
 * turns a key into a Principal, rate-limits it, and audits every refusal.
 *
 * Order of the checks for a request: (1) the limit on failed authentications of its source address (429 before any key
 * is looked at; auth-failures.ts), (2) the key (the verification cache, else scrypt), (3) the rate limit of the
 * credential (429). A 401 is counted for its address and aggregated in the audit trail; a 403 is recorded at once.
 *
 * The verification cache: scrypt costs tens of milliseconds, so a verified key is remembered in the process for
 * CREDENTIAL_CACHE_TTL_MS (never beyond its expiry) under its key id, with an HMAC-SHA256 of the presented key under a
 * per-process random secret. A later request with that key id is accepted when the HMAC of what it presents equals the
 * cached one (compared in constant time); anything else goes to scrypt. Revocation and rotation drop the key id's entry
 * on every instance (Redis pub/sub). Concurrent first uses of one key share one scrypt.
 *
 * The failed-authentication check (1) costs a Redis round trip, on every request of every device. An address Redis
 * found under its limit is not asked about again for CLEAR_VERDICT_MS (one second) unless a request from it fails here
 * meanwhile: a 401 drops the verdict, so every request after a failure is checked in Redis, and a guesser gets no
 * more tries than before. What the second allows: a source whose last request here passed keeps passing for at most
 * that second after other instances have blocked its address.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import { clientAddress } from '../http/client.js';
import { duplicateConnection, type RedisClient } from '../queue/connection.js';
import { withTimeout } from '../queue/queue.js';
import type { Principal } from '../core/contract.js';
import { BaseAccess, BOOTSTRAP_ADMIN, bearerToken, sameKey } from './auth.js';
import { GatewayError, outcome, issue, unauthorized, unavailable } from '../core/errors.js';
import type { AuditTrail } from '../audit/store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { AuthFailures } from './auth-failures.js';
import { type CredentialStore, REVOCATION_CHANNEL, type Credential, parseKey, scryptVerifications } from './credentials.js';
import { RateLimiter } from './rate-limit.js';
import { firstUse, HMAC_HEADERS, openSecret, readRawBody, setParsedBody, signatureMatches } from './hmac.js';

export function principalOf(c: Credential): Principal {
  switch (c.role) {
    case 'device':
      return { role: 'device', id: c.owner, keyId: c.keyId, ...(c.vendorId ? { vendorId: c.vendorId } : {}) };
    case 'vendor':
      return { role: 'vendor', id: c.owner, keyId: c.keyId, vendorId: c.owner };
    case 'operator':
      return { role: 'operator', id: c.owner, keyId: c.keyId };
    default:
      c.role satisfies never;
      throw new Error('unknown credential role');
  }
}

interface Cached {
  /** HMAC-SHA256 of the verified key under this process's cache secret. */
  mac: Buffer;
  principal: Principal;
  until: number;
}

/** Entries of the verification cache (one per key id); the oldest entry goes first beyond it. */
const CACHE_MAX = 50_000;

export interface ApiKeyAccessOptions {
  adminApiKey?: string;
  cacheTtlMs: number;
  rateLimitPerMinute: number;
  rateLimitBurst: number;
  /** CREDENTIAL_SIGNING_KEY: enables HMAC-signed requests. */
  signingKey?: string;
  hmacWindowS: number;
  maxBodyBytes: number;
  /** AUTH_FAILURE_LIMIT: failed authentications per source address and window before 429; 0 = no limit. */
  authFailureLimit?: number;
  /** AUTH_FAILURE_WINDOW_S: the window of that limit and of the aggregation of failures in the audit trail. */
  authFailureWindowS?: number;
  /**
   * ENQUEUE_TIMEOUT_MS: how long a request's reads of Redis may take: a key not verified lately and a signing secret
   * (then 503 "retry later"), the failed-authentication limit and the rate limit (then the request goes on, as on a
   * Redis error). With Redis down the caller is answered then, not after the Redis client's retries. Reading the body,
   * verifying a key's hash and the replay guard's write are not bounded.
   */
  redisTimeoutMs?: number;
}

const limited = Symbol('rate-limited');

/** The key id a request presented (a well-formed bearer key, or the key id of a signed request), if any. */
function presentedKeyId(req: Request): string | undefined {
  const token = bearerToken(req.headers.authorization);
  if (token) return parseKey(token)?.keyId;
  const id = req.headers[HMAC_HEADERS.keyId];
  return typeof id === 'string' && /^[0-9a-f]{16}$/.test(id) ? id : undefined;
}

/** How long an address found under its failed-authentication limit is not asked about again (see above). */
export const CLEAR_VERDICT_MS = 1000;

/**
 * When a request's credential reads must be done by (ms since the epoch): ENQUEUE_TIMEOUT_MS from when its check
 * starts, or from when a signed request's body has been read. Its reads share that time.
 */
const readsBy = Symbol('reads-by');
const startClock = (req: object, ms: number) => {
  (req as { [readsBy]?: number })[readsBy] = Date.now() + ms;
};
/** What is left of the request's time for its credential reads (at least 1 ms); `ms` when its clock has not started. */
const remainingMs = (req: object, ms: number): number => {
  const by = (req as { [readsBy]?: number })[readsBy];
  return by === undefined ? ms : Math.max(1, by - Date.now());
};
/** Addresses whose verdict is remembered at most (the map is emptied beyond it). */
const CLEAR_VERDICT_MAX = 10_000;

export class ApiKeyAccess extends BaseAccess {
  private readonly cache = new Map<string, Cached>();
  /** Source address → until when it is known to be under its failed-authentication limit. */
  private readonly clearUntil = new Map<string, number>();
  private readonly cacheSecret = randomBytes(32);
  private readonly verifying = new Map<string, Promise<Principal | undefined>>();
  private readonly limiter: RateLimiter;
  readonly failures: AuthFailures;
  private subscriber?: RedisClient;

  constructor(
    readonly credentials: CredentialStore,
    private readonly redis: RedisClient,
    private readonly opts: ApiKeyAccessOptions,
    private readonly audit: AuditTrail,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    super();
    this.limiter = new RateLimiter(redis, opts.rateLimitPerMinute, opts.rateLimitBurst, opts.redisTimeoutMs);
    this.failures = new AuthFailures(
      redis,
      { limit: opts.authFailureLimit ?? 20, windowS: opts.authFailureWindowS ?? 60 },
      audit,
      log,
      metrics,
    );
    metrics.gauge('credential_scrypt_verifications_total', scryptVerifications);
  }

  /** Listens for revocations made by other instances (drops their cached verifications at once). */
  async start(): Promise<void> {
    if (this.subscriber) return;
    this.failures.start();
    const sub = duplicateConnection(this.redis, { enableAutoPipelining: false });
    sub.on('message', (_ch: string, keyId: string) => this.forget(keyId));
    this.subscriber = sub;
    await sub
      .subscribe(REVOCATION_CHANNEL)
      .catch((err: Error) =>
        this.log.warn(
          { error: err.message },
          'revocation channel unavailable; revocations on other instances take effect within CREDENTIAL_CACHE_TTL_MS',
        ),
      );
  }

  async stop(): Promise<void> {
    await this.failures.stop();
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }

  /**
   * `read` (of Redis), or a retryable 503 once the request's time for its credential reads (`readsBy`) has passed
   * without an answer: the reads of one request share `redisTimeoutMs`.
   */
  private bounded<T>(read: Promise<T>, req?: Request): Promise<T> {
    const ms = this.opts.redisTimeoutMs;
    if (!ms) return read;
    return withTimeout(
      read,
      req ? remainingMs(req, ms) : ms,
      'the credential store (Redis) did not answer',
      'nothing was accepted, retry later',
    );
  }

  /** The failed-authentication limit of an address (AuthFailures.blockedFor), with its verdict remembered briefly. */
  private async blockedFor(remote: string | undefined, req?: Request): Promise<number> {
    const address = remote ?? '';
    const now = Date.now();
    if ((this.clearUntil.get(address) ?? 0) > now) return 0;
    // As on a Redis error (AuthFailures.blockedFor), a limit Redis does not answer in time lets the request through to
    // the key check, which needs Redis too.
    const wait = await this.bounded(this.failures.blockedFor(remote), req).catch(() => 0);
    if (wait > 0 || this.failures.opts.limit <= 0) this.clearUntil.delete(address);
    else {
      if (this.clearUntil.size >= CLEAR_VERDICT_MAX) this.clearUntil.clear();
      this.clearUntil.set(address, now + CLEAR_VERDICT_MS);
    }
    return wait;
  }

  /** Drops the cached verification of a key (revoked or rotated here, or announced by another instance). */
  forget(keyId: string): void {
    this.cache.delete(keyId);
  }

  protected override async resolve(token: string, req?: Request): Promise<Principal | undefined> {
    if (this.opts.adminApiKey && sameKey(token, this.opts.adminApiKey)) return BOOTSTRAP_ADMIN;
    const keyId = parseKey(token)?.keyId;
    if (!keyId) return undefined;
    const mac = createHmac('sha256', this.cacheSecret).update(token).digest();
    const hit = this.cache.get(keyId);
    if (hit && hit.until > Date.now() && timingSafeEqual(hit.mac, mac)) return hit.principal;
    // Concurrent first uses of one key (and repeats of one wrong key) share one scrypt.
    const flight = mac.toString('base64');
    let p = this.verifying.get(flight);
    if (!p) {
      p = this.verify(token, keyId, mac, req).finally(() => this.verifying.delete(flight));
      this.verifying.set(flight, p);
    }
    return p;
  }

  private async verify(token: string, keyId: string, mac: Buffer, req?: Request): Promise<Principal | undefined> {
    const c = await this.credentials.verify(token, (read) => this.bounded(read, req));
    if (!c) return undefined;
    const principal = principalOf(c);
    const expires = c.expiresAt ? Date.parse(c.expiresAt) : Infinity;
    if (this.opts.cacheTtlMs > 0) {
      this.cache.delete(keyId);
      if (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value as string);
      this.cache.set(keyId, { mac, principal, until: Math.min(Date.now() + this.opts.cacheTtlMs, expires) });
    }
    return principal;
  }

  /** HMAC-signed request (see hmac.ts): the principal, or why it is refused. Reads (and parses) the body. */
  private async resolveSigned(req: Request): Promise<Principal | string> {
    const keyId = String(req.headers[HMAC_HEADERS.keyId] ?? '');
    const ts = String(req.headers[HMAC_HEADERS.timestamp] ?? '');
    const sig = String(req.headers[HMAC_HEADERS.signature] ?? '');
    if (!this.opts.signingKey) return 'signed requests are not enabled (CREDENTIAL_SIGNING_KEY)';
    if (!/^\d{1,12}$/.test(ts)) return `${HMAC_HEADERS.timestamp} must be Unix time in seconds`;
    if (Math.abs(Date.now() / 1000 - Number(ts)) > this.opts.hmacWindowS)
      return `the timestamp is outside the allowed window of ${this.opts.hmacWindowS} s`;
    const raw = await readRawBody(req, this.opts.maxBodyBytes);
    // The upload is the sender's time, not a wait on Redis: the reads' clock starts again.
    if (this.opts.redisTimeoutMs) startClock(req, this.opts.redisTimeoutMs);
    const found = await this.bounded(this.credentials.signingSecret(keyId), req);
    const secret = found ? openSecret(found.sealed, this.opts.signingKey) : undefined;
    if (!found || !secret || !signatureMatches(secret, sig, ts, req.method, req.originalUrl, raw)) return 'unknown key or wrong signature';
    // Not bounded: it is a write, which would still mark the signature used after a 503, and its resend a replay.
    if (!(await firstUse(this.redis, sig, this.opts.hmacWindowS))) return 'this signature was used before (replay)';
    setParsedBody(req, raw);
    return principalOf(found.credential);
  }

  protected override anonymous(): Principal | undefined {
    return this.opts.adminApiKey ? undefined : BOOTSTRAP_ADMIN;
  }

  /** A 401 is counted for its source and aggregated (auth-failures.ts); a 403 is recorded as it happens. */
  protected override refused(req: Request, status: number, reason: string): void {
    this.metrics.inc('access_refused_total', { status: String(status) });
    const request = `${req.method} ${req.baseUrl}${req.path}`;
    if (status === 401) {
      this.clearUntil.delete(clientAddress(req));
      void this.failures.note({ address: clientAddress(req), keyId: presentedKeyId(req), reason, request });
      return;
    }
    void this.audit.record({
      kind: 'access-refused',
      principal: req.principal,
      address: clientAddress(req),
      outcome: '4',
      description: `${status}: ${reason}`,
      entities: [{ kind: 'Request', id: request }],
    });
  }

  /**
   * Refuses (429) a source address over its limit of failed authentications, then authenticates (401 when no valid
   * key), then takes a token from the caller's bucket (429 + Retry-After).
   */
  override authenticate: RequestHandler = async (req, _res, next) => {
    if (this.opts.redisTimeoutMs) startClock(req, this.opts.redisTimeoutMs);
    try {
      if (!req.principal) {
        const wait = await this.blockedFor(clientAddress(req), req);
        if (wait > 0) {
          this.metrics.inc('auth_failure_limited_total', {});
          const seconds = Math.max(1, Math.ceil(wait / 1000));
          return next(
            new GatewayError(
              429,
              outcome([
                issue(
                  'throttled',
                  `too many failed authentications from this address (AUTH_FAILURE_LIMIT ${this.failures.opts.limit} per ${this.failures.opts.windowS} s); retry after ${seconds} s`,
                ),
              ]),
              { headers: { 'Retry-After': String(seconds) } },
            ),
          );
        }
      }
      if (!req.principal && req.headers[HMAC_HEADERS.signature] !== undefined && !req.headers.authorization) {
        const p = await this.resolveSigned(req);
        if (typeof p === 'string') {
          this.refused(req, 401, p);
          return next(unauthorized(`the signed request is not valid: ${p}`));
        }
        req.principal = p;
      }
      if (!req.principal) {
        const token = bearerToken(req.headers.authorization);
        const p = token ? await this.resolve(token, req) : this.anonymous();
        if (!p) {
          const reason = token ? 'invalid credential' : 'no credential';
          this.refused(req, 401, reason);
          return next(
            unauthorized(
              token ? 'the credential is not valid (unknown, revoked or expired)' : 'a credential is required: Authorization: Bearer <key>',
            ),
          );
        }
        req.principal = p;
      }
      const r = req as Request & { [limited]?: boolean };
      if (!r[limited] && req.principal.keyId !== 'bootstrap') {
        r[limited] = true;
        const wait = await this.limiter.take(
          req.principal.keyId,
          this.opts.redisTimeoutMs ? remainingMs(req, this.opts.redisTimeoutMs) : undefined,
        );
        if (wait > 0) {
          this.metrics.inc('rate_limited_total', { role: req.principal.role });
          const seconds = Math.max(1, Math.ceil(wait / 1000));
          return next(
            new GatewayError(429, outcome([issue('throttled', `too many requests for this credential; retry after ${seconds} s`)]), {
              headers: { 'Retry-After': String(seconds) },
            }),
          );
        }
      }
      next();
    } catch (err) {
      const type = (err as { type?: string })?.type;
      if (type === 'entity.too.large' || type === 'entity.parse.failed') return next(err);
      next(err instanceof GatewayError ? err : unavailable('the credential store (Redis) is not reachable; retry later', 5));
    }
  };
}
