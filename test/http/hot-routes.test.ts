/**
 * Hot routes (http/app.ts withHotRoutes): a busy route is dispatched before express, on node's own request and response,
 * and answers as the same handlers answer through express's router: status, body and headers, errors through the app's
 * error handler; what it does not take (another method, a `when` that declines, a malformed escape) goes to express.
 */
import { strict as assert } from 'node:assert';
import { createServer, IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import { GatewayError, issue, outcome } from '../../src/core/errors.js';
import { createApp, type HotRoute, withHotRoutes } from '../../src/http/app.js';
import { errorHandler, requireJson, sendJson } from '../../src/http/errors.js';
import { createLogger } from '../../src/observability/logger.js';

const seen: { plain: boolean; params: Record<string, unknown>; path: string }[] = [];
const handlers: RequestHandler[] = [
  requireJson,
  express.json(),
  async (req, res) => {
    seen.push({ plain: Object.getPrototypeOf(req) === IncomingMessage.prototype, params: { ...req.params }, path: req.path });
    const body = req.body as { fail?: string };
    if (body.fail === 'throw') throw new GatewayError(422, outcome([issue('invalid', 'refused by the handler')]));
    if (body.fail === 'reject') return Promise.reject(new Error('boom'));
    sendJson(res, 202, { adapter: req.params.adapter });
  },
];

function listener(hot: boolean): RequestListener {
  const log = createLogger('fatal');
  const router = express.Router();
  router.post('/ingest/:adapter', ...handlers);
  const app = createApp({ log, readiness: async () => ({ problems: [] }), routers: [router] });
  const routes: HotRoute[] = [
    { method: 'POST', path: /^\/ingest\/([^/]+)\/?$/i, params: ['adapter'], handlers, when: (req) => req.headers['x-cold'] === undefined },
  ];
  return hot ? withHotRoutes(app, routes, errorHandler(log)) : app;
}

async function serve(l: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(l);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const stable = (h: Headers) =>
  Object.fromEntries([...h.entries()].filter(([k]) => !['date', 'etag', 'connection', 'keep-alive'].includes(k)));

describe('http: hot routes answer as express does', () => {
  let hot: { server: Server; url: string };
  let cold: { server: Server; url: string };
  before(async () => {
    hot = await serve(listener(true));
    cold = await serve(listener(false));
  });
  after(() => {
    hot.server.close();
    cold.server.close();
  });

  const cases: [string, string, RequestInit][] = [
    ['accepted', '/ingest/measurements', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }],
    [
      'query string, trailing slash, upper case',
      '/INGEST/a%20b/?x=1',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' },
    ],
    ['thrown GatewayError', '/ingest/m', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"fail":"throw"}' }],
    ['rejected promise', '/ingest/m', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"fail":"reject"}' }],
    ['not JSON (415)', '/ingest/m', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' }],
    ['malformed JSON (400)', '/ingest/m', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }],
    [
      'malformed escape (express answers)',
      '/ingest/%E0%A4%A',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' },
    ],
    ['another method', '/ingest/m', { method: 'GET' }],
    ['declined by when', '/ingest/m', { method: 'POST', headers: { 'content-type': 'application/json', 'x-cold': '1' }, body: '{}' }],
  ];
  for (const [name, path, init] of cases) {
    it(name, async () => {
      const [a, b] = await Promise.all([fetch(hot.url + path, init), fetch(cold.url + path, init)]);
      assert.equal(a.status, b.status);
      assert.deepEqual(await a.text(), await b.text());
      assert.deepEqual(stable(a.headers), stable(b.headers));
    });
  }

  it("the hot route runs on node's own request (no express prototypes), with the router's params and path", async () => {
    seen.length = 0;
    await fetch(`${hot.url}/ingest/a%20b?x=1`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    await fetch(`${cold.url}/ingest/a%20b?x=1`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.deepEqual(seen, [
      { plain: true, params: { adapter: 'a b' }, path: '/ingest/a%20b' },
      { plain: false, params: { adapter: 'a b' }, path: '/ingest/a%20b' },
    ]);
  });
});
