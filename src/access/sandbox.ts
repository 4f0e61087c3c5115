/**
 * The embedded sandbox EHR behind access control. It holds what the gateway delivered (patients' readings: PHI), so
 * with access control on (ADMIN_API_KEY set) it takes an operator or admin credential, like the refusal and
 * dead-letter APIs that hold PHI too. The gateway's own delivery reaches it over HTTP like any EHR: it presents a key
 * made at start-up for this process only (never stored, never logged), compared in constant time, which is not
 * audited or rate-limited. Without ADMIN_API_KEY (development) the sandbox is open, like every route.
 */
import { Router, type RequestHandler } from 'express';
import { bearerToken, sameKey } from './auth.js';

export function protectedSandbox(sandbox: Router, internalKey: string, operators: RequestHandler): Router {
  const guard: RequestHandler = (req, res, next) => {
    // OAuth discovery and the token endpoint are public by design (SANDBOX_AUTH=smart); they hold no PHI.
    if (req.path === '/.well-known/smart-configuration' || req.path === '/auth/token') return next();
    const token = bearerToken(req.headers.authorization);
    if (token && sameKey(token, internalKey)) return next();
    return operators(req, res, next);
  };
  return Router().use(guard, sandbox);
}
