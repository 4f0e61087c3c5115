/**
 * The express shell: helmet, /healthz and /readyz, the routers the composition root mounts (channels, the operations
 * API, the sandbox EHR), a 404 and the one error handler. Every refusal is an OperationOutcome. It knows no feature.
 */
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import express, { type ErrorRequestHandler, type Request, type RequestHandler, type Response, type Router } from 'express';
import helmet from 'helmet';
import { issue, outcome } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import { compileProxyTrust, identifyClient, type ProxyTrust } from './client.js';
import { errorHandler, notFoundHandler } from './errors.js';

export interface AppDeps {
  log: Logger;
  /** What keeps this process from being ready (no problems: ready), and what a ready answer says besides. */
  readiness(): Promise<{ problems: string[]; details?: Record<string, unknown> }>;
  /** Mounted at /sandbox/fhir before anything else (with its own access check: access/sandbox.ts). */
  sandbox?: Router;
  /** Every other route, in order. */
  routers: Router[];
  /** TRUST_PROXY: the load balancers and reverse proxies whose X-Forwarded-For and -Proto are believed (http/client.ts). */
  trustProxy?: readonly string[];
}

/** What helmet() sets and removes on a response, worked out once (none of it depends on the request by default). */
interface RecordedHeaders {
  set: [string, string | number | readonly string[]][];
  removed: string[];
}
let recorded: RecordedHeaders | null | undefined;

/** helmet()'s headers with the default options, or null should helmet ever not finish synchronously. */
function helmetRecording(): RecordedHeaders | null {
  if (recorded !== undefined) return recorded;
  const out: RecordedHeaders = { set: [], removed: [] };
  const recorder = {
    setHeader: (name: string, value: string | number | readonly string[]) => void out.set.push([name, value]),
    removeHeader: (name: string) => void out.removed.push(name),
    getHeader: () => undefined,
    locals: {},
  };
  let finished = false;
  helmet()({ headers: {} } as never, recorder as never, (err?: unknown) => void (finished = err === undefined));
  recorded = finished ? out : null;
  return recorded;
}

function setSecurityHeaders(res: ServerResponse, h: RecordedHeaders): void {
  for (const [name, value] of h.set) res.setHeader(name, value);
  for (const name of h.removed) res.removeHeader(name);
}

/**
 * helmet's headers, worked out once. helmet() runs twelve middlewares on every request to set the same headers (with
 * the default options none depends on the request); this runs helmet once against a recording response and then sets
 * what it set, in one step (bench/http-stack.ts: helmet() costs about 20 µs of CPU per request). Should helmet ever not
 * finish synchronously (an option that depends on the request), helmet itself is used.
 */
export function helmetHeaders(): RequestHandler {
  const h = helmetRecording();
  if (!h) return helmet();
  return function helmetHeadersOnce(_req, res, next) {
    setSecurityHeaders(res, h);
    next();
  };
}

/**
 * A route so busy that it is dispatched before express: POST /ingest/:adapter, every device message. It is registered
 * in the router as well (the same handlers: for a request the hot dispatch leaves to express, for the OpenAPI
 * description and anything else that walks the routes). Its handlers must work on node's own request and response:
 * they may read req.params, req.path, req.baseUrl and req.principal and answer with node's response methods (sendJson,
 * sendOutcome), not with express's (res.json, req.get…).
 */
export interface HotRoute {
  method: string;
  /** Matched against the path (the URL without its query), as express matches the route: case-insensitive, an optional trailing slash. */
  path: RegExp;
  /** The names of the path's capture groups, in order (req.params). */
  params: string[];
  handlers: RequestHandler[];
  /** Requests the route leaves to express even when the path matches. */
  when?: (req: IncomingMessage) => boolean;
}

/**
 * The server's request listener: hot routes first, everything else through express. A hot request keeps node's request
 * and response objects: express gives every request its own prototypes (Object.setPrototypeOf on both), which makes
 * V8 drop its optimised access to them, and that swap is most of what express costs on this path (bench/http-stack.ts:
 * about 55 µs of CPU of a one-reading message's 150 µs of HTTP handling; its router about 20 µs). The request gets what
 * the handlers read (params decoded as the router decodes them, path, baseUrl, originalUrl), helmet's headers, then the
 * route's handlers in order with express 5's rules (a rejected promise is passed to next), and `onError` for an error,
 * as the app's error handler.
 */
export function withHotRoutes(app: express.Express, routes: HotRoute[], onError: ErrorRequestHandler): RequestListener {
  const security = helmetRecording();
  if (!routes.length || !security) return app;
  const trust = app.locals.proxyTrust as ProxyTrust | undefined;
  const dispatch = (route: HotRoute, params: Record<string, string>, path: string, raw: IncomingMessage, res: ServerResponse): void => {
    const req = raw as Request;
    identifyClient(req, trust);
    req.params = params;
    req.baseUrl = '';
    req.originalUrl = req.url;
    Object.defineProperty(req, 'path', { value: path, configurable: true, enumerable: true, writable: true });
    setSecurityHeaders(res, security);
    let i = 0;
    const failed = (err: unknown) => {
      try {
        onError(err, req, res as Response, () => undefined);
      } catch {
        if (!res.headersSent) res.statusCode = 500;
        res.end();
      }
    };
    const next = (err?: unknown): void => {
      if (err !== undefined && err !== null) {
        failed(err);
        return;
      }
      const handler = route.handlers[i++];
      if (!handler) {
        failed(new Error(`the hot route ${route.method} ${route.path} did not answer`));
        return;
      }
      try {
        const r = handler(req, res as Response, next) as unknown;
        if (r instanceof Promise) r.then(undefined, (e: unknown) => next(e ?? new Error('Rejected promise')));
      } catch (e) {
        next(e);
      }
    };
    next();
  };
  const listener: RequestListener = (req, res) => {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    for (const route of routes) {
      if (req.method !== route.method) continue;
      const m = route.path.exec(path);
      if (!m || (route.when && !route.when(req))) continue;
      const params: Record<string, string> = {};
      try {
        route.params.forEach((name, k) => {
          params[name] = decodeURIComponent(m[k + 1]);
        });
      } catch {
        break; // a malformed escape: express answers it
      }
      return dispatch(route, params, path, req, res);
    }
    app(req, res);
  };
  // The app behind the listener, for what walks its routes (the OpenAPI test).
  return Object.assign(listener, { app });
}

export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // One trust for express's own req.ip, req.protocol and req.secure, and for the gateway's client (http/client.ts).
  const trustProxy = deps.trustProxy?.length ? [...deps.trustProxy] : undefined;
  app.set('trust proxy', trustProxy ?? false);
  const trust = compileProxyTrust(trustProxy ?? []);
  app.locals.proxyTrust = trust;
  app.use(function identifyClients(req, _res, next) {
    identifyClient(req, trust);
    next();
  });
  app.use(helmetHeaders());

  app.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));
  app.get('/readyz', async (_req, res) => {
    const { problems, details } = await deps.readiness();
    if (problems.length) {
      res.status(503).setHeader('Retry-After', '5');
      return void res.type('application/fhir+json').json(outcome(problems.map((p) => issue('transient', p))));
    }
    res.json({ status: 'ready', ...details });
  });

  if (deps.sandbox) app.use('/sandbox/fhir', deps.sandbox);
  for (const r of deps.routers) app.use(r);

  app.use(notFoundHandler);
  app.use(errorHandler(deps.log));
  return app;
}
