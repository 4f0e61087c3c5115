/**
 * Authentication to a FHIR destination, behind one narrow interface (EhrAuth) that the EHR client calls per request:
 * headers() for the credential, renew() after a 401, and a dispatcher for mutual TLS. Built from a destination's
 * plain configuration (config/ehr-auth.ts), so that each destination gets its own, with its own token cache.
 *
 *   keys.ts         the gateway's private keys and the public JWKS (SMART)
 *   oauth.ts        discovery and the token endpoint: SMART client assertions, client secrets
 *   token-cache.ts  one token per destination and process, renewed ahead, one fetch in flight
 *   tls.ts          the client certificate and private CA (an undici dispatcher)
 *   routes.ts       GET /.well-known/jwks.json
 */
import type { DestinationAuthConfig } from '../config/ehr-auth.js';
import type { Logger } from '../observability/logger.js';
import { type GatewayKeys, loadGatewayKeys } from './keys.js';
import { TokenClient } from './oauth.js';
import { TokenCache } from './token-cache.js';
import { createTlsDispatcher, readTlsMaterial, type TlsMaterial } from './tls.js';

export type { GatewayKeys } from './keys.js';
export { generateKeyFile, loadGatewayKeys } from './keys.js';
export { jwksRoutes } from './routes.js';

/** Request headers, as fhir-kit-client takes them per request. */
export type AuthHeaders = Record<string, string>;

/** How the EHR client authenticates its requests to one destination. */
export interface EhrAuth {
  /** The method (for logs and status). */
  readonly method: DestinationAuthConfig['auth']['method'];
  /** The credential for one request ({} for none). Throws a retryable GatewayError naming the destination when no token can be had. */
  headers(): Promise<AuthHeaders>;
  /**
   * The EHR answered 401 to a request sent with `used`: forgets that credential and returns the headers for one retry
   * (a fresh token, fetched once however many requests were refused with the same one), or undefined when a retry
   * cannot help (no credential, or a static one).
   */
  renew(used: AuthHeaders): Promise<AuthHeaders | undefined>;
  /** The connection pool for mutual TLS / a private CA (an undici dispatcher for fetch), when configured. */
  readonly dispatcher?: object;
  /** The same certificate, key and CA, for the node:https pool of the writes (the writes' connection pool). */
  readonly tls?: TlsMaterial;
  /** The gateway's keys (SMART): their public JWKS is served at /.well-known/jwks.json. */
  readonly keys?: GatewayKeys;
  /** Releases the connection pool. */
  close(): Promise<void>;
}

export interface EhrAuthContext {
  /** The destination's name, in every message and log line. */
  destination: string;
  /** Its FHIR base URL. */
  baseUrl: string;
  timeoutMs: number;
  log: Logger;
}

const BEARER = /^Bearer (.+)$/;

/** A destination's authentication with its files read, before the destination's URL is known. */
export interface PreparedEhrAuth {
  /** The gateway's keys (SMART): serve their public JWKS at /.well-known/jwks.json (jwksRoutes). */
  readonly keys?: GatewayKeys;
  /** The EhrAuth of the destination at `ctx.baseUrl`. */
  connect(ctx: EhrAuthContext): EhrAuth;
}

/**
 * Reads a destination's key and TLS files, at start-up: a ConfigError lists every problem (a missing or unreadable
 * file, a key of the wrong type, a duplicate kid, a certificate that is not PEM).
 */
export async function prepareEhrAuth(config: DestinationAuthConfig): Promise<PreparedEhrAuth> {
  const { auth } = config;
  const keys = auth.method === 'smart' ? await loadGatewayKeys(auth.keys, auth.alg) : undefined;
  // Read now, so that a bad file stops the start; the pool itself is made per destination.
  readTlsMaterial(config.tls);
  return { keys, connect: (ctx) => connect(config, ctx, keys) };
}

function connect(config: DestinationAuthConfig, ctx: EhrAuthContext, keys?: GatewayKeys): EhrAuth {
  const { auth } = config;
  const tls = readTlsMaterial(config.tls);
  const dispatcher = createTlsDispatcher(tls);
  const origin = new URL(ctx.baseUrl).origin;
  // The client certificate and the private CA are for the EHR's host; a token endpoint elsewhere (an identity
  // provider) is reached as any public site.
  const fetchInit = (url: string): RequestInit => (dispatcher && new URL(url).origin === origin ? ({ dispatcher } as RequestInit) : {});
  const close = async () => {
    await dispatcher?.close();
  };
  switch (auth.method) {
    case 'none':
      return { method: auth.method, dispatcher, tls, headers: async () => ({}), renew: async () => undefined, close };
    case 'bearer': {
      const headers = { authorization: `Bearer ${auth.token}` };
      return { method: auth.method, dispatcher, tls, headers: async () => headers, renew: async () => undefined, close };
    }
    case 'smart':
    case 'client-secret': {
      const client = new TokenClient(auth, { ...ctx, fetchInit }, keys);
      const cache = new TokenCache(() => client.fetchToken());
      const headers = async () => ({ authorization: `Bearer ${await cache.get()}` });
      return {
        method: auth.method,
        dispatcher,
        tls,
        keys,
        headers,
        renew: async (used) => {
          const token = BEARER.exec(used.authorization ?? '')?.[1];
          if (token) cache.invalidate(token);
          ctx.log.info({ destination: ctx.destination }, 'the EHR refused the access token (401): renewing it and retrying once');
          return headers();
        },
        close,
      };
    }
    default:
      return auth satisfies never;
  }
}
