/**
 * Console sessions, kept server-side in Redis: the browser holds only a random session id in an HttpOnly,
 * SameSite=Strict cookie (Secure when the request came over TLS). Redis holds a SHA-256 of that id, never the id
 * itself, with the principal the sign-in key resolved to, the session's CSRF token and the times that bound it:
 * an idle timeout (CONSOLE_SESSION_IDLE_MS, refreshed on each request) and an absolute one (CONSOLE_SESSION_MAX_MS).
 * The API key is never stored: a session that outlives its key's revocation ends at the next request.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request, Response } from 'express';
import { overTls } from '../http/client.js';
import type { RedisClient } from '../queue/connection.js';
import type { Principal } from '../core/contract.js';

export const COOKIE = 'gw_console';
/** The cookie name over TLS: the __Host- prefix makes the browser refuse it without Secure, a Domain or a Path other than /. */
export const SECURE_COOKIE = '__Host-gw_console';
const KEY = (hash: string) => `gw:console:session:${hash}`;
const hashOf = (id: string) => createHash('sha256').update(id).digest('hex');

export interface Session {
  principal: Principal;
  csrf: string;
  createdAt: number;
  lastSeenAt: number;
}

/** The cookies of a request (no cookie-parser: one header, split on ';'). */
export function cookiesOf(req: Request): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    const name = part.slice(0, i).trim();
    const value = part.slice(i + 1).trim();
    try {
      out.set(name, decodeURIComponent(value));
    } catch {
      /* a malformed value is ignored */
    }
  }
  return out;
}

export function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class SessionStore {
  constructor(
    private readonly redis: RedisClient,
    readonly idleMs: number,
    readonly maxMs: number,
  ) {}

  /** Starts a session; returns the id for the cookie (only the browser ever holds it). */
  async create(principal: Principal): Promise<{ id: string; session: Session }> {
    const id = randomBytes(32).toString('base64url');
    const now = Date.now();
    const session: Session = { principal, csrf: randomBytes(32).toString('base64url'), createdAt: now, lastSeenAt: now };
    await this.redis.set(KEY(hashOf(id)), JSON.stringify(session), 'PX', this.idleMs);
    return { id, session };
  }

  /** The live session of an id, its idle timer restarted; undefined when unknown, idle too long or too old. */
  async touch(id: string): Promise<Session | undefined> {
    const key = KEY(hashOf(id));
    const raw = await this.redis.get(key);
    if (!raw) return undefined;
    const s = JSON.parse(raw) as Session;
    const now = Date.now();
    if (now - s.lastSeenAt > this.idleMs || now - s.createdAt > this.maxMs) {
      await this.redis.del(key);
      return undefined;
    }
    s.lastSeenAt = now;
    await this.redis.set(key, JSON.stringify(s), 'PX', Math.min(this.idleMs, this.maxMs - (now - s.createdAt)));
    return s;
  }

  async destroy(id: string): Promise<void> {
    await this.redis.del(KEY(hashOf(id)));
  }
}

/**
 * The session id of a request: over TLS only the __Host- cookie counts. Falling back to the plain name there would undo
 * the prefix: a cookie without Secure can be planted by a plain-HTTP response or a sibling domain (session fixation).
 */
export function sessionIdOf(req: Request): string | undefined {
  return cookiesOf(req).get(overTls(req) ? SECURE_COOKIE : COOKIE);
}

export function setSessionCookie(req: Request, res: Response, id: string): void {
  const secure = overTls(req);
  res.cookie(secure ? SECURE_COOKIE : COOKIE, id, { httpOnly: true, sameSite: 'strict', secure, path: '/', encode: String });
}

export function clearSessionCookie(req: Request, res: Response): void {
  const secure = overTls(req);
  res.clearCookie(secure ? SECURE_COOKIE : COOKIE, { httpOnly: true, sameSite: 'strict', secure, path: '/' });
}
