/**
 * Access checks, in one place. Every route except /healthz, /readyz and the sandbox EHR (its own check, sandbox.ts)
 * states which roles may call it through `access.require(...)`; `authenticate` turns the `Authorization: Bearer <key>`
 * header into a Principal.
 *
 * `BaseAccess` is the shape every implementation shares; `ApiKeyAccess` (access.ts) is the one the gateway runs: the
 * bootstrap admin key (ADMIN_API_KEY; without it every request is treated as admin, for development on 127.0.0.1, and
 * start-up warns) and the per-device, vendor and operator keys stored in Redis.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import { type Principal, type RoleName, roleCredential } from '../core/contract.js';
import { forbidden, unauthorized } from '../core/errors.js';

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

export interface AccessControl {
  /** Resolves the caller (or refuses 401); sets req.principal. */
  authenticate: RequestHandler;
  /** authenticate + a role check (403 when the role is not allowed). */
  require(...roles: RoleName[]): RequestHandler;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m?.[1];
}

/** Constant-time comparison of a presented key with the configured one. */
export function sameKey(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

export const BOOTSTRAP_ADMIN: Principal = { role: 'admin', id: 'bootstrap-admin', keyId: 'bootstrap' };

export abstract class BaseAccess implements AccessControl {
  /** Returns the principal for a presented key, or undefined when the key is not valid. */
  protected abstract resolve(token: string, req: Request): Promise<Principal | undefined>;
  /** The principal when no credential is presented (undefined = 401). */
  protected anonymous(): Principal | undefined {
    return undefined;
  }
  /** Called for each refused access (audit). */
  protected refused(_req: Request, _status: number, _reason: string): void {}

  authenticate: RequestHandler = async (req, _res, next) => {
    if (req.principal) return next();
    const token = bearerToken(req.headers.authorization);
    if (!token) {
      const anon = this.anonymous();
      if (anon) {
        req.principal = anon;
        return next();
      }
      this.refused(req, 401, 'no credential');
      return next(unauthorized('a credential is required: Authorization: Bearer <key>'));
    }
    const p = await this.resolve(token, req);
    if (!p) {
      this.refused(req, 401, 'invalid credential');
      return next(unauthorized('the credential is not valid (unknown, revoked or expired)'));
    }
    req.principal = p;
    next();
  };

  require(...roles: RoleName[]): RequestHandler {
    const allowed = new Set<RoleName>(['admin', ...roles]);
    return (req, res, next) => {
      void this.authenticate(req, res, (err?: unknown) => {
        if (err) return next(err);
        const p = req.principal as Principal;
        if (!allowed.has(p.role)) {
          this.refused(req, 403, `role ${p.role} may not ${req.method} ${req.baseUrl}${req.path}`);
          return next(forbidden(`${roleCredential(p.role)} may not use this route`));
        }
        next();
      });
    };
  }
}
