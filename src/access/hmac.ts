/**
 * HMAC-signed requests for vendor clouds: an alternative to sending the bearer key on every request, which also binds
 * the body and a timestamp to the credential and refuses replays.
 *
 *   X-Gateway-Key-Id:    <keyId of a vendor key>
 *   X-Gateway-Timestamp: <Unix time, seconds>              (within ±HMAC_WINDOW_S of the gateway's clock)
 *   X-Gateway-Signature: v1=<hex HMAC-SHA256(signingSecret, "<timestamp>\n<METHOD>\n<path?query>\n<hex SHA-256 of the body>")>
 *
 * The signing secret is issued with the vendor key (shown once, like the key) when CREDENTIAL_SIGNING_KEY is set. An
 * HMAC can only be checked with the secret itself, so it is stored encrypted (AES-256-GCM under a key derived from
 * CREDENTIAL_SIGNING_KEY), not hashed. Each signature is remembered in Redis for twice the window: a replayed request
 * is refused.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request } from 'express';
import type { RedisClient } from '../queue/connection.js';

export const HMAC_HEADERS = { keyId: 'x-gateway-key-id', timestamp: 'x-gateway-timestamp', signature: 'x-gateway-signature' } as const;

const kek = (master: string) => createHash('sha256').update(`iomt-gateway signing secrets\u001f${master}`).digest();

export function sealSecret(secret: string, master: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', kek(master), iv);
  const ct = Buffer.concat([c.update(secret, 'utf8'), c.final()]);
  return `gcm.${iv.toString('base64url')}.${c.getAuthTag().toString('base64url')}.${ct.toString('base64url')}`;
}

export function openSecret(sealed: string, master: string): string | undefined {
  const [alg, iv, tag, ct] = sealed.split('.');
  if (alg !== 'gcm' || !iv || !tag || !ct) return undefined;
  try {
    const d = createDecipheriv('aes-256-gcm', kek(master), Buffer.from(iv, 'base64url'));
    d.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([d.update(Buffer.from(ct, 'base64url')), d.final()]).toString('utf8');
  } catch {
    return undefined;
  }
}

export function stringToSign(timestamp: string, method: string, url: string, body: Buffer): string {
  return `${timestamp}\n${method.toUpperCase()}\n${url}\n${createHash('sha256').update(body).digest('hex')}`;
}

export function sign(secret: string, timestamp: string, method: string, url: string, body: Buffer): string {
  return `v1=${createHmac('sha256', secret)
    .update(stringToSign(timestamp, method, url, body))
    .digest('hex')}`;
}

export function signatureMatches(secret: string, presented: string, timestamp: string, method: string, url: string, body: Buffer): boolean {
  const expected = Buffer.from(sign(secret, timestamp, method, url, body));
  const got = Buffer.from(presented);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/** Reads the raw body (up to `limit` bytes); body parsers after this see a finished request and keep `req.body`. */
export function readRawBody(req: Request, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(Object.assign(new Error('body too large'), { type: 'entity.too.large', limit }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Sets req.body from the raw bytes the way the JSON and text parsers would. */
export function setParsedBody(req: Request, raw: Buffer): void {
  if (!raw.length) return;
  const type = String(req.headers['content-type'] ?? '');
  if (/json/i.test(type)) {
    try {
      req.body = JSON.parse(raw.toString('utf8'));
    } catch {
      throw Object.assign(new Error('bad json'), { type: 'entity.parse.failed' });
    }
  } else if (/text\/csv/i.test(type)) req.body = raw.toString('utf8');
  // Anything else (HL7v2 bytes in their own charset) stays bytes, as express.raw would leave it.
  else req.body = raw;
}

/** Remembers a signature; false when it was seen before (a replay). */
export async function firstUse(redis: RedisClient, signature: string, windowS: number): Promise<boolean> {
  const ok = await redis.set(`gw:hmac:seen:${createHash('sha256').update(signature).digest('hex')}`, '1', 'PX', windowS * 2000, 'NX');
  return ok === 'OK';
}
