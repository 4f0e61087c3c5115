/**
 * Access checks, in one place. Until device and vendor credentials exist, the bootstrap admin key (ADMIN_API_KEY,
 * sent as `Authorization: Bearer <key>`) guards /api, /ingest and /metrics; without it configured the routes are open
 * to whoever can reach the bind address (127.0.0.1 by default), and start-up says so.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { unauthorized } from '../fhir/outcome.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}

export function requireAdmin(adminKey: string | undefined): RequestHandler {
  if (!adminKey) return (_req, _res, next) => next();
  const expected = digest(adminKey);
  return (req, _res, next) => {
    const token = bearerToken(req.headers.authorization);
    if (!token) return next(unauthorized('a credential is required: Authorization: Bearer <key>'));
    if (!timingSafeEqual(digest(token), expected)) return next(unauthorized('the credential is not valid'));
    next();
  };
}
