/**
 * The sandbox EHR as an OAuth2 authorization server for SMART Backend Services (SANDBOX_AUTH=smart), so that the
 * gateway's EHR authentication is tried end to end against a real verifier:
 *
 *   GET  <base>/.well-known/smart-configuration   the token endpoint and what it supports
 *   POST <base>/auth/token                        client credentials: a JWT client assertion verified (jose) against
 *                                                 the client's registered JWKS (by URL or inline), or a client secret
 *                                                 (basic or post); a short-lived bearer token with the granted scopes
 *   every FHIR route but /metadata                a valid token (401 otherwise) whose scopes allow the interaction,
 *                                                 per entry for a transaction or batch (403 otherwise)
 *
 * A refused assertion (expired, a jti used before, a wrong aud, an unknown kid, a bad signature, an unknown client) is
 * an OAuth2 error JSON (RFC 6749 5.2) with a description of what was wrong. Tokens live in memory.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { accessOf, allows, PERMISSION_NAMES, parseScope, type Scope, within } from './scopes.js';

export interface SandboxClient {
  id: string;
  /** Where its public keys are (relative: on the sandbox's own host). */
  jwksUrl?: string;
  /** Its public keys, inline. */
  jwks?: JSONWebKeySet;
  /** A client secret instead of keys. */
  secret?: string;
  /** The scopes it may be granted. */
  scope: string[];
}

export interface SandboxAuthOptions {
  clients: SandboxClient[];
  /** Lifetime of an access token. */
  tokenLifetimeS: number;
  /** How long a JWKS fetched by URL is kept, and the least time between two fetches (jose's defaults: 10 min, 30 s). */
  jwksCacheMaxAgeMs?: number;
  jwksCooldownMs?: number;
}

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const ALGS = ['RS384', 'ES384'];
/** SMART: an assertion's exp is at most five minutes ahead (some room for clocks). */
const MAX_ASSERTION_S = 300;
const SKEW_S = 5;

/**
 * Reads SANDBOX_SMART_CLIENTS: JSON (or the path of a JSON file) of client id -> { jwks_url | jwks | secret, scope }.
 * Every problem is listed.
 */
export function readSandboxClients(
  text: string | undefined,
  setting = 'SANDBOX_SMART_CLIENTS',
): { clients: SandboxClient[]; errors: string[] } {
  const errors: string[] = [];
  if (!text) return { clients: [], errors: [`${setting} is empty`] };
  let json: unknown;
  try {
    const source = text.trim().startsWith('{') ? text : existsSync(text) ? readFileSync(text, 'utf8') : undefined;
    if (source === undefined) return { clients: [], errors: [`${setting}: neither JSON nor an existing file`] };
    json = JSON.parse(source);
  } catch (err) {
    return { clients: [], errors: [`${setting}: not JSON (${(err as Error).message})`] };
  }
  if (!json || typeof json !== 'object' || Array.isArray(json))
    return { clients: [], errors: [`${setting}: a JSON object of client id -> client`] };
  const clients: SandboxClient[] = [];
  for (const [id, raw] of Object.entries(json as Record<string, Record<string, unknown>>)) {
    const at = `${setting}: client '${id}'`;
    const c = raw ?? {};
    const jwksUrl = typeof c.jwks_url === 'string' ? c.jwks_url : undefined;
    const jwks = c.jwks && typeof c.jwks === 'object' ? (c.jwks as JSONWebKeySet) : undefined;
    const secret = typeof c.secret === 'string' ? c.secret : undefined;
    if ([jwksUrl, jwks, secret].filter(Boolean).length !== 1) errors.push(`${at}: give exactly one of jwks_url, jwks or secret`);
    if (jwksUrl && !jwksUrl.startsWith('/') && !URL.canParse(jwksUrl)) errors.push(`${at}: jwks_url '${jwksUrl}' is not a URL`);
    if (jwks && !Array.isArray(jwks.keys)) errors.push(`${at}: jwks has no "keys" array`);
    const scope = Array.isArray(c.scope) ? c.scope.map(String) : typeof c.scope === 'string' ? c.scope.split(/\s+/).filter(Boolean) : [];
    if (!scope.length) errors.push(`${at}: "scope" (the scopes it may be granted) is required`);
    clients.push({ id, jwksUrl, jwks, secret, scope });
  }
  return { clients, errors };
}

interface Issued {
  clientId: string;
  scopes: Scope[];
  expiresAt: number;
}

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    description: string,
  ) {
    super(description);
  }
}

const originOf = (req: Request) => `${req.protocol}://${req.get('host')}`;

export class SandboxAuth {
  private readonly clients = new Map<string, SandboxClient>();
  private readonly remote = new Map<string, JWTVerifyGetKey>();
  private readonly tokens = new Map<string, Issued>();
  /** jti (per client) -> when the assertion expires; a jti is refused while its assertion could still be used. */
  private readonly usedJti = new Map<string, number>();

  constructor(private readonly options: SandboxAuthOptions) {
    for (const c of options.clients) this.register(c);
  }

  /** Adds or replaces a client (tests register the gateway's JWKS URL once it listens). */
  register(client: SandboxClient): void {
    this.clients.set(client.id, client);
  }

  /** The sandbox's FHIR base URL, as this request reached it. */
  private base(req: Request): string {
    return `${originOf(req)}${req.baseUrl}`;
  }

  /** The routes served before the FHIR engine: discovery, the token endpoint, and the guard of everything else. */
  routes(): Router {
    const router = express.Router();
    router.get('/.well-known/smart-configuration', (req, res) => {
      res.json({
        token_endpoint: `${this.base(req)}/auth/token`,
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['private_key_jwt', 'client_secret_basic', 'client_secret_post'],
        token_endpoint_auth_signing_alg_values_supported: ALGS,
        scopes_supported: ['system/*.cruds', 'system/*.read', 'system/*.write'],
        capabilities: ['client-confidential-asymmetric', 'client-confidential-symmetric', 'permission-v1', 'permission-v2'],
      });
    });
    router.post('/auth/token', express.urlencoded({ extended: false, limit: '64kb' }), (req, res) => {
      this.token(req).then(
        (body) => void res.set('Cache-Control', 'no-store').json(body),
        (err: unknown) => {
          const e = err instanceof OAuthError ? err : new OAuthError(500, 'server_error', 'the token endpoint failed');
          if (e.status === 401) res.set('WWW-Authenticate', 'Basic realm="sandbox"');
          res.status(e.status).set('Cache-Control', 'no-store').json({ error: e.code, error_description: e.message });
        },
      );
    });
    router.use((req, res, next) => this.guard(req, res, next));
    return router;
  }

  private async token(req: Request): Promise<Record<string, unknown>> {
    const form = (req.body ?? {}) as Record<string, string | undefined>;
    if (form.grant_type !== 'client_credentials')
      throw new OAuthError(400, 'unsupported_grant_type', `grant_type must be client_credentials (got '${form.grant_type ?? ''}')`);
    const client =
      form.client_assertion_type !== undefined || form.client_assertion !== undefined
        ? await this.byAssertion(req, form)
        : this.bySecret(req, form);
    const requested = (form.scope ?? '').split(/\s+/).filter(Boolean);
    const granted = requested.length ? requested.filter((s) => within(s, client.scope)) : client.scope;
    if (!granted.length)
      throw new OAuthError(
        400,
        'invalid_scope',
        `none of the requested scopes (${requested.join(' ')}) is allowed to client '${client.id}'`,
      );
    const value = randomBytes(32).toString('base64url');
    const lifetime = this.options.tokenLifetimeS;
    this.tokens.set(value, {
      clientId: client.id,
      scopes: granted.flatMap((s) => parseScope(s) ?? []),
      expiresAt: Date.now() + lifetime * 1000,
    });
    this.sweep();
    return { access_token: value, token_type: 'bearer', expires_in: lifetime, scope: granted.join(' ') };
  }

  /** SMART Backend Services: the client assertion, verified against the client's JWKS. */
  private async byAssertion(req: Request, form: Record<string, string | undefined>): Promise<SandboxClient> {
    if (form.client_assertion_type !== JWT_BEARER)
      throw new OAuthError(400, 'invalid_client', `client_assertion_type must be ${JWT_BEARER}`);
    const assertion = form.client_assertion ?? '';
    let iss: string | undefined;
    let kid: string | undefined;
    try {
      iss = decodeJwt(assertion).iss;
      kid = decodeProtectedHeader(assertion).kid;
    } catch {
      throw new OAuthError(400, 'invalid_client', 'the client assertion is not a JWT');
    }
    const client = iss ? this.clients.get(iss) : undefined;
    if (!client) throw new OAuthError(400, 'invalid_client', `unknown client '${iss ?? ''}' (the assertion's iss)`);
    if (!client.jwks && !client.jwksUrl)
      throw new OAuthError(400, 'invalid_client', `client '${client.id}' is registered with a secret, not keys`);
    if (!kid) throw new OAuthError(400, 'invalid_client', 'the client assertion has no kid in its header');
    const tokenUrl = `${this.base(req)}/auth/token`;
    let payload: { exp?: number; jti?: string };
    try {
      ({ payload } = await jwtVerify(assertion, this.keysOf(client, req), {
        issuer: client.id,
        subject: client.id,
        audience: tokenUrl,
        algorithms: ALGS,
        requiredClaims: ['exp', 'jti'],
        clockTolerance: SKEW_S,
      }));
    } catch (err) {
      throw new OAuthError(400, 'invalid_client', this.describe(err, kid, tokenUrl, client));
    }
    const now = Math.floor(Date.now() / 1000);
    const exp = payload.exp ?? 0;
    if (exp > now + MAX_ASSERTION_S + SKEW_S)
      throw new OAuthError(400, 'invalid_client', 'the client assertion expires more than five minutes from now');
    const jti = `${client.id}\n${payload.jti}`;
    if (this.usedJti.has(jti))
      throw new OAuthError(400, 'invalid_client', `the jti '${payload.jti}' was used before: each assertion needs a new one`);
    this.usedJti.set(jti, (exp + SKEW_S) * 1000);
    return client;
  }

  private keysOf(client: SandboxClient, req: Request): JWTVerifyGetKey {
    if (client.jwks) return createLocalJWKSet(client.jwks);
    const url = new URL(client.jwksUrl ?? '', originOf(req)).toString();
    let set = this.remote.get(url);
    if (!set) {
      set = createRemoteJWKSet(new URL(url), {
        cacheMaxAge: this.options.jwksCacheMaxAgeMs,
        cooldownDuration: this.options.jwksCooldownMs,
      });
      this.remote.set(url, set);
    }
    return set;
  }

  /** What was wrong with an assertion, from jose's error codes. */
  private describe(err: unknown, kid: string, tokenUrl: string, client: SandboxClient): string {
    const e = err as { code?: string; claim?: string; message?: string };
    switch (e.code) {
      case 'ERR_JWT_EXPIRED':
        return 'the client assertion has expired (exp is in the past)';
      case 'ERR_JWKS_NO_MATCHING_KEY':
        return `no key with kid '${kid}' in the JWKS of client '${client.id}'`;
      case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
        return `the client assertion's signature does not verify with the key '${kid}'`;
      case 'ERR_JOSE_ALG_NOT_ALLOWED':
        return `the client assertion's alg is not one of ${ALGS.join(', ')}`;
      case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
        if (e.claim === 'aud') return `the client assertion's aud must be the token endpoint ${tokenUrl}`;
        return `the client assertion's ${e.claim} claim is invalid (${e.message})`;
      case 'ERR_JWKS_TIMEOUT':
        return `the JWKS of client '${client.id}' could not be fetched in time`;
      default:
        return client.jwksUrl && !e.code?.startsWith('ERR_JW')
          ? `the JWKS of client '${client.id}' could not be read (${e.message})`
          : `the client assertion is invalid (${e.message})`;
    }
  }

  /** client_secret_basic or client_secret_post. */
  private bySecret(req: Request, form: Record<string, string | undefined>): SandboxClient {
    let id = form.client_id;
    let secret = form.client_secret;
    const basic = /^Basic (.+)$/i.exec(req.get('authorization') ?? '')?.[1];
    if (basic) {
      const decoded = Buffer.from(basic, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const dec = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
      id = dec(decoded.slice(0, colon));
      secret = dec(decoded.slice(colon + 1));
    }
    const client = id ? this.clients.get(id) : undefined;
    const ok =
      !!client?.secret &&
      secret !== undefined &&
      Buffer.byteLength(secret) === Buffer.byteLength(client.secret) &&
      timingSafeEqual(Buffer.from(secret), Buffer.from(client.secret));
    if (!client || !ok) throw new OAuthError(401, 'invalid_client', 'unknown client or wrong client secret');
    return client;
  }

  /** Every route but discovery and the CapabilityStatement: a valid token whose scopes allow what the request does. */
  private guard(req: Request, res: Response, next: NextFunction): void {
    if (req.method === 'GET' && req.path === '/metadata') {
      next();
      return;
    }
    const refusal = this.refusal(req);
    if (!refusal) {
      next();
      return;
    }
    const { status, code, message } = refusal;
    if (status === 401) res.set('WWW-Authenticate', `Bearer realm="sandbox", error="invalid_token", error_description="${message}"`);
    res
      .status(status)
      .type('application/fhir+json')
      .json({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: message }] });
  }

  /** Why a FHIR request is refused: no token, an unknown or expired one (401), or scopes that do not allow it (403). */
  private refusal(req: Request): { status: number; code: 'login' | 'forbidden'; message: string } | undefined {
    const token = /^Bearer (.+)$/i.exec(req.get('authorization') ?? '')?.[1];
    if (!token)
      return {
        status: 401,
        code: 'login',
        message: 'an access token is required (SMART Backend Services: see .well-known/smart-configuration)',
      };
    const issued = this.tokens.get(token);
    if (!issued || issued.expiresAt <= Date.now())
      return { status: 401, code: 'login', message: 'the access token is unknown or has expired' };
    const denied = accessOf(req.method, req.url, req.body).filter((a) => !issued.scopes.some((s) => allows(s, a.type, a.perm)));
    if (!denied.length) return undefined;
    const what = denied.map((a) => `${PERMISSION_NAMES[a.perm]} ${a.type}${a.entry === undefined ? '' : ` (entry ${a.entry})`}`);
    return { status: 403, code: 'forbidden', message: `the access token's scopes do not allow: ${[...new Set(what)].join(', ')}` };
  }

  /** Forgets expired tokens and jtis. */
  private sweep(): void {
    const now = Date.now();
    for (const [k, t] of this.tokens) if (t.expiresAt <= now) this.tokens.delete(k);
    for (const [k, exp] of this.usedJti) if (exp <= now) this.usedJti.delete(k);
  }
}
