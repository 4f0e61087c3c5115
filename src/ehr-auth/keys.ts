/**
 * The gateway's own keys for SMART Backend Services: private keys read from files (PEM in any of node's formats, or a
 * JWK / JWK Set as JSON), the first of which signs client assertions while every one is published as a public JWKS
 * (/.well-known/jwks.json) so that an EHR can verify the signature. Publishing more than one key is how a key is
 * rotated (docs/ehr.md): the new key is published first, signs later, and the old one is retired last.
 *
 * Parsing is node:crypto's (createPrivateKey reads PKCS#8, PKCS#1 and SEC1 PEM and JWK); JWK export and the RFC 7638
 * thumbprint are jose's. No private key material ever leaves this module except as a KeyObject.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { ConfigError } from '../config/schema.js';
import { SIGNING_ALGS, type SigningAlg } from '../config/ehr-auth.js';

export interface GatewayKey {
  kid: string;
  alg: SigningAlg;
  /** Where it was read from (for messages; never its content). */
  source: string;
  privateKey: KeyObject;
  publicJwk: JWK;
}

export interface GatewayKeys {
  /** The key that signs: the first one. */
  signing: GatewayKey;
  /** Every key, the signing one first. */
  all: GatewayKey[];
  /** The public JWK Set served at /.well-known/jwks.json. */
  jwks: { keys: JWK[] };
}

const KEY_FILE = /\.(pem|key|json|jwk)$/i;

/** The files a setting names: files as given, folders as their key files in name order (hidden files skipped). */
function keyFiles(paths: readonly string[], errors: string[]): string[] {
  const files: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) {
      errors.push(`${p}: no such file or folder`);
      continue;
    }
    if (statSync(p).isDirectory()) {
      const inside = readdirSync(p)
        .filter((f) => !f.startsWith('.') && KEY_FILE.test(f))
        .sort()
        .map((f) => join(p, f));
      if (!inside.length) errors.push(`${p}: the folder holds no key file (*.pem, *.key, *.json, *.jwk)`);
      files.push(...inside);
    } else files.push(p);
  }
  return files;
}

/** The algorithm a key can sign with, or why it cannot. */
function algOf(key: KeyObject): SigningAlg | string {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength ?? 0;
    return bits >= 2048 ? 'RS384' : `an RSA key of ${bits} bits is too short (2048 bits at least)`;
  }
  if (key.asymmetricKeyType === 'ec')
    return details.namedCurve === 'secp384r1' ? 'ES384' : `an EC key on ${details.namedCurve}: ES384 needs the P-384 curve`;
  return `a ${key.asymmetricKeyType} key: RS384 needs RSA, ES384 needs EC P-384`;
}

interface Parsed {
  key: KeyObject;
  kid?: string;
  alg?: string;
}

/** The private keys of one file: one PEM key, one JWK, or a JWK Set. */
function parseFile(file: string): Parsed[] {
  const text = readFileSync(file, 'utf8').trim();
  if (text.startsWith('{')) {
    const json = JSON.parse(text) as JWK & { keys?: JWK[] };
    const jwks = Array.isArray(json.keys) ? json.keys : [json];
    return jwks.map((jwk, i) => {
      if (!jwk.d) throw new Error(`${Array.isArray(json.keys) ? `key ${i}: ` : ''}a public JWK, not a private one (no "d")`);
      return { key: createPrivateKey({ key: jwk as never, format: 'jwk' }), kid: jwk.kid, alg: jwk.alg };
    });
  }
  if (/ENCRYPTED PRIVATE KEY|Proc-Type: 4,ENCRYPTED/.test(text))
    throw new Error('an encrypted private key: store it unencrypted, readable only by the gateway');
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new Error('not a PEM private key nor a JWK');
  return [{ key: createPrivateKey(text) }];
}

/**
 * Reads the keys of `paths` (files or folders): the first signs with `alg` (or the algorithm its type implies), every
 * key is published. Throws a ConfigError with every problem (a missing file, a key of the wrong type, a duplicate kid).
 */
export async function loadGatewayKeys(paths: readonly string[], alg?: SigningAlg, setting = 'FHIR_SMART_KEYS'): Promise<GatewayKeys> {
  const errors: string[] = [];
  const all: GatewayKey[] = [];
  for (const file of keyFiles(paths, errors)) {
    let parsed: Parsed[];
    try {
      parsed = parseFile(file);
    } catch (err) {
      errors.push(`${setting}: ${file}: ${(err as Error).message.split('\n')[0]}`);
      continue;
    }
    for (const p of parsed) {
      const implied = algOf(p.key);
      const wanted = (all.length === 0 ? alg : undefined) ?? (p.alg as SigningAlg | undefined);
      if (!SIGNING_ALGS.includes(implied as SigningAlg)) {
        errors.push(`${setting}: ${file}: ${implied}`);
        continue;
      }
      if (wanted && wanted !== implied) {
        errors.push(`${setting}: ${file}: ${wanted} cannot sign with this key (it is a key for ${implied})`);
        continue;
      }
      const publicJwk = await exportJWK(createPublicKey(p.key));
      const kid = p.kid ?? (await calculateJwkThumbprint(publicJwk, 'sha256'));
      if (all.some((k) => k.kid === kid)) {
        errors.push(`${setting}: ${file}: the kid ${kid} is taken by another key (the same key twice?)`);
        continue;
      }
      const a = implied as SigningAlg;
      all.push({ kid, alg: a, source: file, privateKey: p.key, publicJwk: { ...publicJwk, kid, alg: a, use: 'sig' } });
    }
  }
  if (!errors.length && !all.length) errors.push(`${setting}: no key found`);
  if (errors.length) throw new ConfigError(errors);
  return { signing: all[0], all, jwks: { keys: all.map((k) => k.publicJwk) } };
}

/**
 * Writes a new private key (PKCS#8 PEM, readable by its owner only) for `alg` and returns its kid (the RFC 7638
 * thumbprint the gateway will publish it under). Refuses to overwrite a file.
 */
export async function generateKeyFile(alg: SigningAlg, out: string): Promise<{ kid: string }> {
  if (existsSync(out)) throw new Error(`${out} exists: the gateway does not overwrite a key file`);
  const { privateKey } =
    alg === 'RS384' ? generateKeyPairSync('rsa', { modulusLength: 3072 }) : generateKeyPairSync('ec', { namedCurve: 'P-384' });
  writeFileSync(out, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  const kid = await calculateJwkThumbprint(await exportJWK(createPublicKey(privateKey)), 'sha256');
  return { kid };
}
