/**
 * OAuth2 client credentials against an EHR's token endpoint, in its two forms:
 *
 *   SMART Backend Services (SMART App Launch 2.x): the gateway authenticates with a JWT client assertion
 *   (private_key_jwt, RFC 7523) signed by its key: iss = sub = the client id, aud = the token URL, exp within five
 *   minutes, a unique jti, the key's kid in the header. Signed by jose.
 *
 *   A client secret: client_secret_basic (an Authorization: Basic header, RFC 6749 2.3.1) or client_secret_post.
 *
 * The token endpoint is configured or discovered from <base>/.well-known/smart-configuration. Every failure (the
 * discovery or the token endpoint down, refusing, or answering nonsense) is a retryable GatewayError that names the
 * destination: delivery retries it with backoff and keeps the data; it is logged once per failed fetch (the token
 * cache shares one fetch among all requests). Tokens, secrets and assertions are never logged nor put in errors.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { EhrAuthConfig } from '../config/ehr-auth.js';
import { GatewayError, issue, outcome } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import type { GatewayKeys } from './keys.js';
import type { AccessToken } from './token-cache.js';

/** How long a client assertion is valid: under the five minutes SMART allows, with room for clock skew. */
export const ASSERTION_LIFETIME_S = 240;
/** Used when a token answer has no expires_in (SMART requires it; some servers omit it). */
const DEFAULT_EXPIRES_IN_S = 300;
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface TokenClientContext {
  /** The destination's name, in every message. */
  destination: string;
  /** The FHIR base URL (discovery). */
  baseUrl: string;
  timeoutMs: number;
  log: Logger;
  /** The fetch options of a URL (the mutual-TLS dispatcher for the EHR's own host). */
  fetchInit(url: string): RequestInit;
}

type Credentials = Extract<EhrAuthConfig, { method: 'smart' | 'client-secret' }>;

/** A retryable failure to get a token for a destination (502: the gateway could not authenticate upstream). */
export function tokenFailure(destination: string, message: string, cause?: unknown): GatewayError {
  const text = `EHR destination '${destination}': ${message}`;
  const err = new GatewayError(502, outcome([issue('transient', text)]), { cause, retryable: true });
  err.message = text;
  return err;
}

/** Reads a response body as JSON, or undefined. */
async function jsonOf(res: Response): Promise<Record<string, unknown> | undefined> {
  const text = await res.text().catch(() => '');
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A short, printable piece of what a server said (its error fields only). */
const said = (s: unknown): string => (typeof s === 'string' ? s.replace(/\s+/g, ' ').slice(0, 200) : '');

export class TokenClient {
  private tokenUrl?: string;
  private discovering?: Promise<string>;

  constructor(
    private readonly config: Credentials,
    private readonly ctx: TokenClientContext,
    private readonly keys?: GatewayKeys,
  ) {
    this.tokenUrl = config.tokenUrl;
  }

  /** The token endpoint: configured, or read from the server's SMART configuration (once, then kept). */
  async endpoint(): Promise<string> {
    if (this.tokenUrl) return this.tokenUrl;
    this.discovering ??= this.discover().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  private async discover(): Promise<string> {
    const { baseUrl, destination, log } = this.ctx;
    const url = `${baseUrl.replace(/\/$/, '')}/.well-known/smart-configuration`;
    let res: Response;
    try {
      res = await fetch(url, {
        ...this.ctx.fetchInit(url),
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(this.ctx.timeoutMs),
      });
    } catch (err) {
      const e = tokenFailure(
        destination,
        `the SMART configuration ${url} could not be read (${(err as Error).message}); set FHIR_TOKEN_URL to skip discovery`,
        err,
      );
      log.warn({ destination, url, error: e.message }, 'EHR authentication failed: SMART discovery');
      throw e;
    }
    const body = await jsonOf(res);
    const endpoint = body?.token_endpoint;
    if (!res.ok || typeof endpoint !== 'string' || !URL.canParse(endpoint)) {
      const why = res.ok ? 'has no token_endpoint' : `answered HTTP ${res.status}`;
      const e = tokenFailure(destination, `the SMART configuration ${url} ${why}; set FHIR_TOKEN_URL to skip discovery`);
      log.warn({ destination, url, status: res.status, error: e.message }, 'EHR authentication failed: SMART discovery');
      throw e;
    }
    if (this.config.method === 'smart') {
      const methods = body?.token_endpoint_auth_methods_supported;
      if (Array.isArray(methods) && !methods.includes('private_key_jwt'))
        log.warn({ destination, methods }, 'the EHR does not list private_key_jwt among its token endpoint authentication methods');
      const algs = body?.token_endpoint_auth_signing_alg_values_supported;
      if (this.keys && Array.isArray(algs) && !algs.includes(this.keys.signing.alg))
        log.warn({ destination, alg: this.keys.signing.alg, algs }, 'the EHR does not list the signing algorithm of the gateway key');
    }
    log.info({ destination, tokenUrl: endpoint }, 'EHR token endpoint discovered');
    this.tokenUrl = endpoint;
    return endpoint;
  }

  /** The signed client assertion for `tokenUrl` (SMART): a new jti each time. */
  private async assertion(tokenUrl: string): Promise<string> {
    const key = this.keys?.signing;
    if (!key) throw new Error('SMART Backend Services without a signing key');
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
      .setIssuer(this.config.clientId)
      .setSubject(this.config.clientId)
      .setAudience(tokenUrl)
      .setIssuedAt(now)
      .setExpirationTime(now + ASSERTION_LIFETIME_S)
      .setJti(randomUUID())
      .sign(key.privateKey);
  }

  /** Asks the token endpoint for a token (client credentials grant). */
  async fetchToken(): Promise<AccessToken> {
    const { destination, log } = this.ctx;
    const config = this.config;
    const tokenUrl = await this.endpoint();
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (config.scopes.length) form.set('scope', config.scopes.join(' '));
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (config.method === 'smart') {
      form.set('client_assertion_type', JWT_BEARER);
      form.set('client_assertion', await this.assertion(tokenUrl));
    } else if (config.authMethod === 'post') {
      form.set('client_id', config.clientId);
      form.set('client_secret', config.clientSecret);
    } else {
      // RFC 6749 2.3.1: each part form-urlencoded before base64.
      const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
      headers.authorization = `Basic ${Buffer.from(`${enc(config.clientId)}:${enc(config.clientSecret)}`).toString('base64')}`;
    }
    let res: Response;
    try {
      res = await fetch(tokenUrl, {
        ...this.ctx.fetchInit(tokenUrl),
        method: 'POST',
        headers,
        body: form.toString(),
        signal: AbortSignal.timeout(this.ctx.timeoutMs),
      });
    } catch (err) {
      const e = tokenFailure(destination, `the token endpoint ${tokenUrl} could not be reached (${(err as Error).message})`, err);
      log.warn({ destination, tokenUrl, error: e.message }, 'EHR authentication failed: no access token');
      throw e;
    }
    const body = await jsonOf(res);
    const token = body?.access_token;
    if (!res.ok || typeof token !== 'string' || !token) {
      const code = said(body?.error);
      const description = said(body?.error_description);
      const what = res.ok
        ? 'answered without an access_token'
        : `refused the gateway's credentials: HTTP ${res.status}${code ? ` ${code}` : ''}${description ? ` (${description})` : ''}`;
      const e = tokenFailure(destination, `the token endpoint ${tokenUrl} ${what}; check the client registration (docs/ehr.md)`);
      log.warn(
        { destination, tokenUrl, status: res.status, oauthError: code || undefined, error: e.message },
        'EHR authentication failed: no access token',
      );
      throw e;
    }
    const type = typeof body?.token_type === 'string' ? body.token_type : 'bearer';
    if (type.toLowerCase() !== 'bearer')
      log.warn({ destination, tokenType: type }, 'the token endpoint issued a token that is not a bearer token');
    const expiresIn = Number(body?.expires_in);
    const expiresInS = Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : DEFAULT_EXPIRES_IN_S;
    log.debug({ destination, expiresInS, scope: said(body?.scope) || undefined }, 'EHR access token obtained');
    return { value: token, expiresInS };
  }
}
