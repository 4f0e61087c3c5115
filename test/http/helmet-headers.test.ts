/**
 * The security headers are helmet's, set in one step (http/app.ts helmetHeaders): every response carries exactly the
 * headers helmet() itself would set, and no X-Powered-By.
 */
import { strict as assert } from 'node:assert';
import express from 'express';
import helmet from 'helmet';
import request from 'supertest';
import { helmetHeaders } from '../../src/http/app.js';

function appWith(mw: express.RequestHandler): express.Express {
  const app = express();
  app.use(mw);
  app.get('/x', (_req, res) => void res.json({ ok: true }));
  app.post('/y', (_req, res) => void res.status(202).json({ ok: true }));
  return app;
}

/** The headers of a response, without those that vary per response. */
const securityHeaders = (h: Record<string, string>) =>
  Object.fromEntries(
    Object.entries(h).filter(([k]) => !['date', 'etag', 'content-length', 'content-type', 'connection', 'keep-alive'].includes(k)),
  );

describe('http: helmet headers set once', () => {
  for (const [method, path] of [
    ['get', '/x'],
    ['post', '/y'],
    ['get', '/missing'],
  ] as const) {
    it(`${method.toUpperCase()} ${path}: the same headers as helmet()`, async () => {
      const expected = securityHeaders((await request(appWith(helmet()))[method](path)).headers);
      const got = securityHeaders((await request(appWith(helmetHeaders()))[method](path)).headers);
      assert.ok(Object.keys(expected).length >= 10, JSON.stringify(expected));
      assert.deepEqual(got, expected);
      assert.equal(got['x-powered-by'], undefined);
    });
  }
});
