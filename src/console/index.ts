/**
 * The operations console at /console: server-rendered HTML (TypeScript template functions, html.ts) with htmx 2.0 for
 * partial updates, one small stylesheet, no build step and nothing from a CDN (htmx is served from its npm package).
 *
 * Sign-in exchanges an admin, operator or vendor API key (checked by the same AccessControl as the API) for a
 * server-side session (session.ts). Every page reads and every action changes through the gateway's own API, called
 * in-process as the signed-in principal (inject.ts): the same routes, role and ownership checks, rate limit and audit.
 * Every change needs the session's CSRF token (a hidden field, or the X-CSRF-Token header htmx sends) and is recorded
 * in the audit trail, as are sign-in and sign-out. Queue internals (bull-board) are mounted behind the session and the
 * admin role.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import { clientAddress } from '../http/client.js';
import type { RedisClient } from '../queue/connection.js';
import type { ApiKeyAccess } from '../access/access.js';
import type { AuditTrail } from '../audit/store.js';
import type { Principal } from '../core/contract.js';
import { GatewayError } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import type { DeliveryQueue } from '../queue/queue.js';
import { CONSOLE_CSS } from './assets.js';
import type { ConsoleConfig } from './config.js';
import { makeCtx, type PageHandler } from './context.js';
import { parseForm, readBody } from './form.js';
import { bare, html } from './html.js';
import type { AppHandler } from './inject.js';
import { adapterPages } from './pages/adapters.js';
import { auditPages } from './pages/audit.js';
import { devicePages } from './pages/devices.js';
import { messagePages } from './pages/messages.js';
import { overviewPages } from './pages/overview.js';
import { clearSessionCookie, type Session, SessionStore, sameToken, sessionIdOf, setSessionCookie } from './session.js';
import type { ConsoleStats } from './stats.js';

export { CONSOLE_KEYS, readConsoleConfig } from './config.js';
export { ConsoleStats } from './stats.js';

export interface ConsoleDeps {
  config: ConsoleConfig;
  redis: RedisClient;
  access: ApiKeyAccess;
  audit: AuditTrail;
  queue: DeliveryQueue;
  stats: ConsoleStats;
  /** The gateway's express app, once built: the console calls the API through it. */
  app: () => AppHandler;
  log: Logger;
  maxBodyBytes: number;
}

export interface Console {
  router: Router;
  start(): Promise<void>;
  stop(): Promise<void>;
}

declare module 'express-serve-static-core' {
  interface Request {
    consoleSession?: { id: string; session: Session };
  }
}

const CONSOLE_ROLES = new Set(['admin', 'operator', 'vendor']);
const HTMX = readFileSync(createRequire(import.meta.url).resolve('htmx.org/dist/htmx.min.js'));

/** One route of a page module: the roles besides admin that may open it (the API checks again on every call). */
export interface ConsoleRoute {
  method: 'get' | 'post';
  path: string;
  roles: ('operator' | 'vendor')[];
  handler: PageHandler;
}

export function createConsole(deps: ConsoleDeps): Console {
  const { access, audit, log } = deps;
  const sessions = new SessionStore(deps.redis, deps.config.idleMs, deps.config.maxMs);
  const router = express.Router();

  const record = (
    kind: 'console-sign-in' | 'console-sign-out' | 'console-action',
    req: Request,
    p: Principal | undefined,
    description: string,
    ok = true,
  ) =>
    audit
      .record({
        kind,
        principal: p,
        address: clientAddress(req),
        outcome: ok ? '0' : '4',
        description,
        entities: [{ kind: 'Request', id: `${req.method} ${req.originalUrl.split('?')[0]}` }],
      })
      .catch(() => undefined);

  // ---- static files: no session needed ------------------------------------------------------------------------------
  router.get('/console/static/console.css', (_req, res) => {
    res.type('text/css').setHeader('Cache-Control', 'public, max-age=3600');
    res.send(CONSOLE_CSS);
  });
  router.get('/console/static/htmx.min.js', (_req, res) => {
    res.type('text/javascript').setHeader('Cache-Control', 'public, max-age=86400');
    res.send(HTMX);
  });

  // ---- sign-in and sign-out ------------------------------------------------------------------------------------------
  const loginPage =
    (message?: string, status = 200) =>
    (res: Response) =>
      res
        .status(status)
        .type('html')
        .send(
          bare(
            'Sign in',
            html`<p>Sign in with an API key of the admin, operator or vendor role. The key is checked like an API request and
exchanged for a session; it is not kept.</p>
${message ? html`<p class="error" role="alert">${message}</p>` : ''}
<form method="post" action="/console/login" class="stack">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>`,
          ),
        );
  router.get('/console/login', (_req, res) => loginPage()(res));
  router.post('/console/login', async (req, res, next) => {
    try {
      // Login CSRF: a browser says where a form came from; a sign-in form posted from another site is refused.
      const site = req.headers['sec-fetch-site'];
      if (site && site !== 'same-origin' && site !== 'none') return loginPage('Sign in from this page.', 403)(res);
      const form = parseForm(req.headers['content-type'], await readBody(req, 8192));
      const key = (form.get('key') ?? '').trim();
      // The same verification as an API request: access.authenticate with the key as a bearer token.
      if (key) req.headers.authorization = `Bearer ${key}`;
      else delete req.headers.authorization;
      const failure = await new Promise<unknown>((resolve) => void access.authenticate(req, res, resolve as NextFunction));
      delete req.headers.authorization;
      if (failure) {
        const status = failure instanceof GatewayError ? failure.status : 500;
        if (status === 429) return loginPage('Too many attempts with this key; wait a minute and try again.', 429)(res);
        if (status >= 500) return next(failure);
        return loginPage('That key is not valid (unknown, revoked or expired).', 401)(res);
      }
      const p = req.principal as Principal;
      if (!CONSOLE_ROLES.has(p.role)) {
        await record('console-sign-in', req, p, `a ${p.role} key may not sign in to the console`, false);
        return loginPage('A device key cannot sign in to the console: use an admin, operator or vendor key.', 403)(res);
      }
      const { id } = await sessions.create(p);
      setSessionCookie(req, res, id);
      await record('console-sign-in', req, p, 'signed in to the console');
      res.redirect(303, '/console');
    } catch (err) {
      next(err);
    }
  });

  // ---- every other /console path needs a live session ------------------------------------------------------------------
  const session: RequestHandler = async (req, res, next) => {
    try {
      const id = sessionIdOf(req);
      let s = id ? await sessions.touch(id) : undefined;
      // A session ends with the key it was opened with (revoked, or expired).
      if (s && s.principal.keyId !== 'bootstrap' && !(await access.credentials.get(s.principal.keyId))) {
        await sessions.destroy(id as string);
        s = undefined;
      }
      if (!s || !id) {
        if (id) clearSessionCookie(req, res);
        if (req.headers['hx-request'] === 'true') {
          res.setHeader('HX-Redirect', '/console/login');
          return void res.status(401).end();
        }
        if (req.method === 'GET' && !req.path.startsWith('/console/queues/api')) return res.redirect(303, '/console/login');
        return void res.status(401).type('text/plain').send('sign in first: /console/login');
      }
      req.consoleSession = { id, session: s };
      req.principal = s.principal;
      next();
    } catch (err) {
      next(err);
    }
  };
  router.use('/console', session);

  router.post('/console/logout', async (req, res, next) => {
    try {
      const { id, session: s } = req.consoleSession!;
      const form = parseForm(req.headers['content-type'], await readBody(req, 8192));
      const token = form.get('_csrf') ?? String(req.headers['x-csrf-token'] ?? '');
      if (!sameToken(token, s.csrf))
        return void res
          .status(403)
          .type('html')
          .send(bare('Refused', html`<p>The form is stale (CSRF token missing or wrong). <a href="/console">Back</a></p>`));
      await sessions.destroy(id);
      clearSessionCookie(req, res);
      await record('console-sign-out', req, s.principal, 'signed out of the console');
      res.redirect(303, '/console/login');
    } catch (err) {
      next(err);
    }
  });

  // ---- queue internals: bull-board, admins only -------------------------------------------------------------------------
  // Loaded at an admin's first visit: bull-board (its UI server, templates and API) is memory every process would
  // otherwise hold for a page few ever open.
  let board: Promise<Router> | undefined;
  const loadBoard = async (): Promise<Router> => {
    const [{ createBullBoard }, { BullAdapter }, { ExpressAdapter }] = await Promise.all([
      import('@bull-board/api'),
      import('@bull-board/api/bullAdapter'),
      import('@bull-board/express'),
    ]);
    const adapter = new ExpressAdapter();
    adapter.setBasePath('/console/queues');
    // @bull-board/express 9.10.1 pins its own copy of @bull-board/api (9.10.1): the types differ by a private field only.
    createBullBoard({
      queues: [new BullAdapter(deps.queue.bull)],
      serverAdapter: adapter as unknown as Parameters<typeof createBullBoard>[0]['serverAdapter'],
    });
    return adapter.getRouter() as Router;
  };
  router.use(
    '/console/queues',
    (req, res, next) => {
      if (req.principal?.role !== 'admin')
        return void res
          .status(403)
          .type('html')
          .send(bare('Not allowed', html`<p>Queue internals are for admins. <a href="/console">Back</a></p>`));
      // bull-board's own API calls carry no CSRF token: a change must come from this origin (Sec-Fetch-Site or Origin).
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        const site = req.headers['sec-fetch-site'];
        const origin = req.headers.origin;
        const sameOrigin = site ? site === 'same-origin' : origin ? new URL(origin).host === req.headers.host : false;
        if (!sameOrigin) return void res.status(403).type('text/plain').send('cross-site request refused');
        void record('console-action', req, req.principal, `queue internals: ${req.method} ${req.path}`);
      }
      next();
    },
    (req, res, next) => {
      board ??= loadBoard().catch((err: unknown) => {
        board = undefined;
        throw err;
      });
      board.then((r) => r(req, res, next), next);
    },
  );

  // ---- pages ---------------------------------------------------------------------------------------------------------
  const routes: ConsoleRoute[] = [...overviewPages(deps.stats), ...devicePages(), ...messagePages(), ...adapterPages(), ...auditPages()];
  for (const r of routes) {
    const allowed = new Set<string>(['admin', ...r.roles]);
    router[r.method](r.path, async (req, res, next) => {
      try {
        const { session: s } = req.consoleSession!;
        let form = new Map<string, string>();
        if (r.method === 'post') {
          form = parseForm(req.headers['content-type'], await readBody(req, deps.maxBodyBytes));
          const token = form.get('_csrf') ?? String(req.headers['x-csrf-token'] ?? '');
          if (!sameToken(token, s.csrf)) {
            await record('console-action', req, s.principal, 'refused: CSRF token missing or wrong', false);
            return void res
              .status(403)
              .type('html')
              .send(
                bare(
                  'Refused',
                  html`<p class="error" role="alert">The form is stale (CSRF token missing or wrong). Reload the page and try again. <a href="/console">Back</a></p>`,
                ),
              );
          }
        }
        const ctx = makeCtx(req, res, s.principal, s.csrf, form, deps.app());
        if (!allowed.has(s.principal.role)) {
          return ctx.page(
            'Not allowed',
            '',
            html`<p class="error" role="alert">Your role (${s.principal.role}) may not open this page.</p>`,
            403,
          );
        }
        if (r.method === 'post') void record('console-action', req, s.principal, `console: ${req.method} ${req.path}`);
        await r.handler(ctx);
      } catch (err) {
        next(err);
      }
    });
  }
  // Unknown console paths: a page, not the API's OperationOutcome.
  router.use('/console', (req, res, next) => {
    if (req.method !== 'GET') return next();
    res.status(404).type('html').send(bare('Not found', html`<p>There is no console page here. <a href="/console">Overview</a></p>`));
  });

  router.use(consoleErrors(log));

  return {
    router,
    start: async () => deps.stats.sample(() => deps.queue.depth()),
    stop: async () => deps.stats.stop(),
  };
}

/** Logs and answers an unexpected failure of a page (kept out of the API's error handler). */
function consoleErrors(log: Logger) {
  return (err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (!req.path.startsWith('/console') || res.headersSent) return next(err);
    const status = err instanceof GatewayError ? err.status : 500;
    if (status >= 500) log.error({ error: (err as Error)?.message, path: req.path }, 'console page failed');
    res
      .status(status)
      .type('html')
      .send(bare('Something went wrong', html`<p role="alert">The page could not be shown (${status}). <a href="/console">Back</a></p>`));
  };
}
