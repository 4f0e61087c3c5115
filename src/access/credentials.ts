/**
 * API keys issued by the gateway, stored in Redis (every instance sees the same keys).
 *
 * Format: `gw_<keyId>_<secret>` — the key id (16 hex digits) finds the record; the secret (32 random bytes,
 * base64url) is never stored: only a salted scrypt hash of it. scrypt parameters: N = 2^14, r = 8, p = 1, 16-byte
 * random salt, 32-byte output (about 16 MiB and tens of milliseconds per verification, which is why successful
 * verifications are cached in memory for CREDENTIAL_CACHE_TTL_MS: see ApiKeyAccess). The parameters are stored with
 * each hash, so they can be raised later without invalidating issued keys. A key id that does not exist costs the
 * same scrypt as a wrong secret (a decoy hash), so timing does not tell which key ids exist.
 *
 * Rotation issues a new key for the same owner and gives the old one an expiry (now + CREDENTIAL_ROTATION_OVERLAP_MS),
 * announced like a revocation so that cached verifications pick up the expiry. Revocation deletes the record at once and announces it on a Redis channel so that other instances drop their
 * cached verification immediately (the cache TTL bounds it if the announcement is missed).
 *
 * Redis: gw:cred:<keyId> (the record) and gw:cred:owner:<role>:<owner> (the owner's key ids), written together in one
 * MULTI; on a Redis Cluster under the hash tag `{gw:cred}` (core/keys.ts) so that they share a slot.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { keyGroup } from '../core/keys.js';
import type { RedisClient } from '../queue/connection.js';
import type { RoleName } from '../core/contract.js';

export const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32, maxmem: 64 * 1024 * 1024 } as const;

function scrypt(secret: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((res, rej) => scryptCb(secret, salt, keylen, opts, (err, key) => (err ? rej(err) : res(key))));
}

export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const h = await scrypt(secret, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: SCRYPT.maxmem });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${h.toString('base64')}`;
}

let scryptRuns = 0;
/** scrypt verifications this process has run (each costs tens of milliseconds and about 16 MiB): a metric. */
export const scryptVerifications = (): number => scryptRuns;

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const [alg, n, r, p, salt, hash] = stored.split('$');
  if (alg !== 'scrypt' || !salt || !hash) return false;
  scryptRuns++;
  const expected = Buffer.from(hash, 'base64');
  const got = await scrypt(secret, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT.maxmem,
  });
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/**
 * What a presented secret is checked against when its key id is unknown, revoked or expired: a hash with the current
 * parameters that no secret matches (its salt and output are fixed bytes, not derived from any secret). The check
 * costs what a wrong secret for a live key costs, so the time of a refusal does not tell which key ids exist.
 */
const DECOY_HASH = `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${Buffer.alloc(16, 0x5a).toString('base64')}$${Buffer.alloc(SCRYPT.keylen, 0xa5).toString('base64')}`;

const KEY_FORMAT = /^gw_([0-9a-f]{16})_([A-Za-z0-9_-]{20,})$/;

export function parseKey(token: string): { keyId: string; secret: string } | undefined {
  const m = KEY_FORMAT.exec(token);
  return m ? { keyId: m[1], secret: m[2] } : undefined;
}

export interface Credential {
  keyId: string;
  role: Exclude<RoleName, 'admin'>;
  /** Device id (device keys), vendor id (vendor keys), a label (operator keys). */
  owner: string;
  vendorId?: string;
  createdAt: string;
  createdBy: string;
  /** Set on rotation: the key stops working at this time. */
  expiresAt?: string;
  rotatedTo?: string;
}

interface Stored extends Credential {
  hash: string;
  /** Vendor keys: the HMAC signing secret, sealed (see hmac.ts). */
  signing?: string;
}

/** The credential keys under their group (`gw:cred`, or `{gw:cred}` on a cluster). */
export function credentialKeys(group = 'gw:cred') {
  return {
    rec: (keyId: string) => `${group}:${keyId}`,
    owner: (role: string, owner: string) => `${group}:owner:${role}:${owner}`,
  };
}
export const REVOCATION_CHANNEL = 'gw:cred:revoked';

export class CredentialStore {
  private readonly k: ReturnType<typeof credentialKeys>;

  constructor(private readonly redis: RedisClient) {
    this.k = credentialKeys(keyGroup('gw:cred', redis));
  }

  /** Issues a key; the returned `key` is shown once and never stored. */
  async issue(c: Omit<Credential, 'keyId' | 'createdAt'>, sealedSigningSecret?: string): Promise<{ credential: Credential; key: string }> {
    const keyId = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const credential: Credential = { ...c, keyId, createdAt: new Date().toISOString() };
    const stored: Stored = {
      ...credential,
      hash: await hashSecret(secret),
      ...(sealedSigningSecret ? { signing: sealedSigningSecret } : {}),
    };
    await this.redis.multi().set(this.k.rec(keyId), JSON.stringify(stored)).sadd(this.k.owner(c.role, c.owner), keyId).exec();
    return { credential, key: `gw_${keyId}_${secret}` };
  }

  async get(keyId: string): Promise<Credential | undefined> {
    const s = await this.redis.get(this.k.rec(keyId));
    if (!s) return undefined;
    const { hash: _hash, signing: _signing, ...c } = JSON.parse(s) as Stored;
    return c;
  }

  /** A live credential and its sealed signing secret (HMAC-signed requests), if it has one. */
  async signingSecret(keyId: string): Promise<{ credential: Credential; sealed: string } | undefined> {
    if (!/^[0-9a-f]{16}$/.test(keyId)) return undefined;
    const s = await this.redis.get(this.k.rec(keyId));
    if (!s) return undefined;
    const { hash: _hash, signing, ...c } = JSON.parse(s) as Stored;
    if (!signing || (c.expiresAt && Date.parse(c.expiresAt) <= Date.now())) return undefined;
    return { credential: c, sealed: signing };
  }

  /**
   * The credential of a presented key when its secret matches and it has not expired. Every well-formed key costs one
   * scrypt, whether its key id exists or not (an unknown, revoked or expired one is checked against a decoy hash).
   */
  async verify(token: string, bound: (read: Promise<string | null>) => Promise<string | null> = (r) => r): Promise<Credential | undefined> {
    const k = parseKey(token);
    if (!k) return undefined;
    // `bound` limits the wait for Redis (ENQUEUE_TIMEOUT_MS), not the hash's verification.
    const s = await bound(this.redis.get(this.k.rec(k.keyId)));
    const stored = s ? (JSON.parse(s) as Stored) : undefined;
    const live = stored && !(stored.expiresAt && Date.parse(stored.expiresAt) <= Date.now()) ? stored : undefined;
    const matches = await verifySecret(k.secret, live?.hash ?? DECOY_HASH);
    if (!live || !matches) return undefined;
    const { hash: _hash, signing: _signing, ...c } = live;
    return c;
  }

  async list(role: string, owner: string): Promise<Credential[]> {
    const ids = await this.redis.smembers(this.k.owner(role, owner));
    const out: Credential[] = [];
    for (const id of ids.sort()) {
      const c = await this.get(id);
      if (c) out.push(c);
    }
    return out;
  }

  /** Issues a successor with the same owner; the old key expires after `overlapMs`. */
  async rotate(
    keyId: string,
    overlapMs: number,
    by: string,
    sealedSigningSecret?: string,
  ): Promise<{ credential: Credential; key: string; previousExpiresAt: string } | undefined> {
    const s = await this.redis.get(this.k.rec(keyId));
    if (!s) return undefined;
    const old = JSON.parse(s) as Stored;
    if (old.expiresAt && Date.parse(old.expiresAt) <= Date.now()) return undefined;
    const next = await this.issue({ role: old.role, owner: old.owner, vendorId: old.vendorId, createdBy: by }, sealedSigningSecret);
    const expiresAt = new Date(Date.now() + overlapMs).toISOString();
    const updated: Stored = {
      ...old,
      expiresAt: old.expiresAt && old.expiresAt < expiresAt ? old.expiresAt : expiresAt,
      rotatedTo: next.credential.keyId,
    };
    await this.redis.set(
      this.k.rec(keyId),
      JSON.stringify(updated),
      'PX',
      Math.max(1, Date.parse(updated.expiresAt!) - Date.now()) + 60_000,
    );
    // Announced like a revocation: every instance drops its cached verification and re-reads the key's new expiry.
    await this.redis.publish(REVOCATION_CHANNEL, keyId);
    return { ...next, previousExpiresAt: updated.expiresAt! };
  }

  async revoke(keyId: string): Promise<Credential | undefined> {
    const c = await this.get(keyId);
    if (!c) return undefined;
    await this.redis.multi().del(this.k.rec(keyId)).srem(this.k.owner(c.role, c.owner), keyId).exec();
    await this.redis.publish(REVOCATION_CHANNEL, keyId);
    return c;
  }

  /** Revokes every key of an owner (decommissioning); returns the key ids revoked. */
  async revokeAll(role: string, owner: string): Promise<string[]> {
    const ids = await this.redis.smembers(this.k.owner(role, owner));
    for (const id of ids) await this.revoke(id);
    await this.redis.del(this.k.owner(role, owner));
    return ids.sort();
  }
}
