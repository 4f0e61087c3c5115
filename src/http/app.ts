/**
 * The express shell: helmet, /healthz and /readyz, the routers the composition root mounts (channels, the operations
 * API, the sandbox EHR), a 404 and the one error handler. Every refusal is an OperationOutcome. It knows no feature.
 */
import express, { type RequestHandler, type Router } from 'express';
import helmet from 'helmet';
import { issue, outcome } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import { errorHandler, notFoundHandler } from './errors.js';

export interface AppDeps {
  log: Logger;
  /** What keeps this process from being ready (no problems: ready), and what a ready answer says besides. */
  readiness(): Promise<{ problems: string[]; details?: Record<string, unknown> }>;
  /** Mounted at /sandbox/fhir before anything else (with its own access check: access/sandbox.ts). */
  sandbox?: Router;
  /** Every other route, in order. */
  routers: Router[];
}

/**
 * helmet's headers, worked out once. helmet() runs twelve middlewares on every request to set the same headers (with
 * the default options none depends on the request); this runs helmet once against a recording response and then sets
 * what it set, in one step (bench/http-stack.ts: helmet() costs about 20 µs of CPU per request). Should helmet ever not
 * finish synchronously (an option that depends on the request), helmet itself is used.
 */
export function helmetHeaders(): RequestHandler {
  const set: [string, string | number | readonly string[]][] = [];
  const removed: string[] = [];
  const recorder = {
    setHeader: (name: string, value: string | number | readonly string[]) => void set.push([name, value]),
    removeHeader: (name: string) => void removed.push(name),
    getHeader: () => undefined,
    locals: {},
  };
  let finished = false;
  const middleware = helmet();
  middleware({ headers: {} } as never, recorder as never, (err?: unknown) => void (finished = err === undefined));
  if (!finished) return middleware;
  return function helmetHeadersOnce(_req, res, next) {
    for (const [name, value] of set) res.setHeader(name, value);
    for (const name of removed) res.removeHeader(name);
    next();
  };
}

export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
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
