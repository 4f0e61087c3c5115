/**
 * The gateway's AccessControl: the bootstrap admin key (ADMIN_API_KEY) plus device, vendor and operator keys issued
 * by the gateway (CredentialStore). Role checks live in the route table (`access.require(...)`) and ownership checks
 * (a vendor's own devices, a device's own data) in `owns` and the ingest guard; this class is the one place that
 * turns a key into a Principal, rate-limits it, and audits every refusal.
 */
import { createHash } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import type { Principal } from '../core/contract.js';
import { BaseAccess, BOOTSTRAP_ADMIN, bearerToken, sameKey } from './auth.js';
import { GatewayError, outcome, issue, unauthorized, unavailable } from '../core/errors.js';
import type { AuditTrail } from '../audit/store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { type CredentialStore, REVOCATION_CHANNEL, type Credential } from './credentials.js';
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
  principal: Principal;
  until: number;
}

export interface ApiKeyAccessOptions {
  adminApiKey?: string;
  cacheTtlMs: number;
  rateLimitPerMinute: number;
  rateLimitBurst: number;
  /** CREDENTIAL_SIGNING_KEY: enables HMAC-signed requests. */
  signingKey?: string;
  hmacWindowS: number;
  maxBodyBytes: number;
}

const fastHash = (s: string) => createHash('sha256').update(s).digest('base64url');
const limited = Symbol('rate-limited');

export class ApiKeyAccess extends BaseAccess {
  private readonly cache = new Map<string, Cached>();
  private readonly limiter: RateLimiter;
  private subscriber?: Redis;

  constructor(
    readonly credentials: CredentialStore,
    private readonly redis: Redis,
    private readonly opts: ApiKeyAccessOptions,
    private readonly audit: AuditTrail,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    super();
    this.limiter = new RateLimiter(redis, opts.rateLimitPerMinute, opts.rateLimitBurst);
  }

  /** Listens for revocations made by other instances (drops their cached verifications at once). */
  async start(): Promise<void> {
    if (this.subscriber) return;
    const sub = this.redis.duplicate({ enableAutoPipelining: false });
    sub.on('error', () => undefined);
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
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }

  /** Drops cached verifications of a key (revoked here or announced by another instance). */
  forget(keyId: string): void {
    for (const [k, v] of this.cache) if (v.principal.keyId === keyId) this.cache.delete(k);
  }

  protected override async resolve(token: string): Promise<Principal | undefined> {
    if (this.opts.adminApiKey && sameKey(token, this.opts.adminApiKey)) return BOOTSTRAP_ADMIN;
    const h = fastHash(token);
    const hit = this.cache.get(h);
    if (hit && hit.until > Date.now()) return hit.principal;
    if (hit) this.cache.delete(h);
    const c = await this.credentials.verify(token);
    if (!c) return undefined;
    const principal = principalOf(c);
    const expires = c.expiresAt ? Date.parse(c.expiresAt) : Infinity;
    if (this.opts.cacheTtlMs > 0) {
      if (this.cache.size > 50_000) this.cache.clear();
      this.cache.set(h, { principal, until: Math.min(Date.now() + this.opts.cacheTtlMs, expires) });
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
    const found = await this.credentials.signingSecret(keyId);
    const secret = found ? openSecret(found.sealed, this.opts.signingKey) : undefined;
    if (!found || !secret || !signatureMatches(secret, sig, ts, req.method, req.originalUrl, raw)) return 'unknown key or wrong signature';
    if (!(await firstUse(this.redis, sig, this.opts.hmacWindowS))) return 'this signature was used before (replay)';
    setParsedBody(req, raw);
    return principalOf(found.credential);
  }

  protected override anonymous(): Principal | undefined {
    return this.opts.adminApiKey ? undefined : BOOTSTRAP_ADMIN;
  }

  protected override refused(req: Request, status: number, reason: string): void {
    this.metrics.inc('access_refused_total', { status: String(status) });
    void this.audit.record({
      kind: 'access-refused',
      principal: req.principal,
      address: req.socket.remoteAddress,
      outcome: '4',
      description: `${status}: ${reason}`,
      entities: [{ kind: 'Request', id: `${req.method} ${req.baseUrl}${req.path}` }],
    });
  }

  /** Authenticates (401 when no valid key), then takes a token from the caller's bucket (429 + Retry-After). */
  override authenticate: RequestHandler = async (req, _res, next) => {
    try {
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
        const p = token ? await this.resolve(token) : this.anonymous();
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
        const wait = await this.limiter.take(req.principal.keyId);
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
