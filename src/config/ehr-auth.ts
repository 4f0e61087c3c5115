/**
 * How the gateway proves who it is to one FHIR destination: a plain configuration type (no I/O, no secrets printed),
 * read here from the FHIR_* environment keys of the one EHR, and meant to be read the same way per destination from a
 * destinations file later. The code that acts on it lives in ehr-auth/.
 *
 *   none           no credential
 *   bearer         a static bearer token
 *   smart          SMART Backend Services: OAuth2 client credentials with a JWT client assertion signed by the
 *                  gateway's private key (private_key_jwt); its public keys are served at /.well-known/jwks.json
 *   client-secret  OAuth2 client credentials with a client secret (client_secret_basic or client_secret_post)
 *
 * Mutual TLS (a client certificate, and a CA for a private CA) is orthogonal: it combines with any method.
 */
import { existsSync } from 'node:fs';
import type { ConfigValue } from './schema.js';

export const EHR_AUTH_METHODS = ['none', 'bearer', 'smart', 'client-secret'] as const;
export type EhrAuthMethod = (typeof EHR_AUTH_METHODS)[number];
export const SIGNING_ALGS = ['RS384', 'ES384'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

/** OAuth2 client credentials, with what both grants share: the client, the scopes, where to ask. */
interface ClientCredentials {
  clientId: string;
  /** Scopes requested, as configured (SMART v1 `system/Observation.write` or v2 `system/Observation.c`). */
  scopes: string[];
  /** The token endpoint; undefined: discovered from <base>/.well-known/smart-configuration. */
  tokenUrl?: string;
}

export type EhrAuthConfig =
  | { method: 'none' }
  | { method: 'bearer'; token: string }
  | (ClientCredentials & {
      method: 'smart';
      /** Private key files (PEM or JWK) or folders of them: the first key signs, the others are only published. */
      keys: string[];
      /** The signing algorithm; undefined: RS384 for an RSA key, ES384 for an EC P-384 key. */
      alg?: SigningAlg;
    })
  | (ClientCredentials & { method: 'client-secret'; clientSecret: string; authMethod: 'basic' | 'post' });

/** Mutual TLS: file paths of the client certificate and its key (PEM), and of a CA bundle for a private CA. */
export interface EhrTlsConfig {
  cert?: string;
  key?: string;
  ca?: string;
}

/** One destination's authentication: the method and, independently, the TLS client settings. */
export interface DestinationAuthConfig {
  auth: EhrAuthConfig;
  tls: EhrTlsConfig;
}

/** The environment names of each field, so that errors name what the operator sets (a file uses its own names). */
export interface AuthKeyNames {
  method: string;
  bearerToken: string;
  clientId: string;
  keys: string;
  alg: string;
  scopes: string;
  tokenUrl: string;
  clientSecret: string;
  authMethod: string;
  tlsCert: string;
  tlsKey: string;
  tlsCa: string;
}

export const FHIR_AUTH_KEY_NAMES: AuthKeyNames = {
  method: 'FHIR_AUTH',
  bearerToken: 'FHIR_BEARER_TOKEN',
  clientId: 'FHIR_CLIENT_ID',
  keys: 'FHIR_SMART_KEYS',
  alg: 'FHIR_SMART_ALG',
  scopes: 'FHIR_SCOPES',
  tokenUrl: 'FHIR_TOKEN_URL',
  clientSecret: 'FHIR_CLIENT_SECRET',
  authMethod: 'FHIR_CLIENT_AUTH_METHOD',
  tlsCert: 'FHIR_TLS_CERT',
  tlsKey: 'FHIR_TLS_KEY',
  tlsCa: 'FHIR_TLS_CA',
};

/**
 * Reads one destination's authentication from loaded values (keyed by `names`), with every error: a missing setting
 * its method needs, a file that does not exist, a certificate without its key. The key files are parsed at start
 * (ehr-auth/keys.ts), where their own errors are listed.
 */
export function readDestinationAuth(
  v: ReadonlyMap<string, ConfigValue>,
  names: AuthKeyNames = FHIR_AUTH_KEY_NAMES,
): { value?: DestinationAuthConfig; errors: string[] } {
  const errors: string[] = [];
  const str = (k: string) => {
    const x = v.get(k);
    return typeof x === 'string' && x !== '' ? x : undefined;
  };
  const list = (k: string) => ((v.get(k) as string[] | undefined) ?? []).filter(Boolean);
  const need = (k: string, why: string): string => {
    const x = str(k);
    if (!x) errors.push(`${k} is required when ${names.method}=${why}`);
    return x ?? '';
  };
  const file = (k: string): string | undefined => {
    const f = str(k);
    if (f && !existsSync(f)) errors.push(`${k}: the file ${f} does not exist`);
    return f;
  };
  const method = (str(names.method) ?? 'none') as EhrAuthMethod;
  let auth: EhrAuthConfig = { method: 'none' };
  switch (method) {
    case 'none':
      break;
    case 'bearer':
      auth = { method, token: need(names.bearerToken, 'bearer') };
      break;
    case 'smart': {
      const keys = list(names.keys);
      if (!keys.length)
        errors.push(`${names.keys} is required when ${names.method}=smart: the private key files (PEM or JWK) or a folder of them`);
      for (const k of keys) if (!existsSync(k)) errors.push(`${names.keys}: ${k} does not exist`);
      if (!scopesOf(str(names.scopes)).length)
        errors.push(`${names.scopes} is required when ${names.method}=smart: the scopes to request (e.g. system/Observation.c)`);
      auth = {
        method,
        clientId: need(names.clientId, 'smart'),
        keys,
        alg: str(names.alg) as SigningAlg | undefined,
        scopes: scopesOf(str(names.scopes)),
        tokenUrl: str(names.tokenUrl),
      };
      break;
    }
    case 'client-secret':
      auth = {
        method,
        clientId: need(names.clientId, 'client-secret'),
        clientSecret: need(names.clientSecret, 'client-secret'),
        authMethod: (str(names.authMethod) ?? 'basic') as 'basic' | 'post',
        scopes: scopesOf(str(names.scopes)),
        tokenUrl: str(names.tokenUrl),
      };
      break;
    default:
      method satisfies never;
  }
  const tls: EhrTlsConfig = { cert: file(names.tlsCert), key: file(names.tlsKey), ca: file(names.tlsCa) };
  if (!!tls.cert !== !!tls.key) errors.push(`${names.tlsCert} and ${names.tlsKey} go together: the client certificate and its private key`);
  return errors.length ? { errors } : { value: { auth, tls }, errors };
}

/** Scopes are space- or comma-separated words, sent as configured (a server decides what they mean). */
function scopesOf(raw: string | undefined): string[] {
  return (raw ?? '').split(/[\s,]+/).filter(Boolean);
}
