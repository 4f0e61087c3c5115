/**
 * The console's session cookie over TLS and over plain HTTP. What decides "served over TLS" is the connection the
 * request came on (without TRUST_PROXY: a TLS socket, never X-Forwarded-Proto; test/http/trust-proxy.test.ts has the proxy's case). The test puts
 * a real TLS listener, with a certificate made here by the openssl CLI, in front of the gateway's own HTTP server:
 * each TLS connection is handed to that server, as `https.createServer` would do, so the same app answers both.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { useStack } from '../helpers/harness.js';
import { ADMIN, csrfOf, get, signIn } from './helpers.js';

interface Answer {
  status: number;
  setCookie: string[];
  location?: string;
  text: string;
}

describe('console: the session cookie over TLS (Secure, __Host-) and over plain HTTP (neither)', function () {
  this.timeout(60_000);
  const stack = useStack({ ADMIN_API_KEY: ADMIN });
  let dir: string;
  let tlsServer: TlsServer;
  let ca: Buffer;
  let httpsUrl: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gw-console-tls-'));
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'],
      { stdio: 'ignore', env: { ...process.env, OPENSSL_CONF: '/dev/null' } },
    );
    ca = readFileSync(cert);
    const gatewayServer = (stack.gw.gateway as unknown as { server: Server }).server;
    tlsServer = createTlsServer({ key: readFileSync(key), cert: ca }, (socket) => gatewayServer.emit('connection', socket));
    await new Promise<void>((res) => tlsServer.listen(0, '127.0.0.1', () => res()));
    httpsUrl = `https://127.0.0.1:${(tlsServer.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((res) => tlsServer?.close(res));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** One request over TLS, trusting only the certificate made above (checked, not skipped: servername is the IP). */
  const tlsRequest = (method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = request(`${httpsUrl}${path}`, { method, headers, ca, checkServerIdentity: () => undefined }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, setCookie: res.headers['set-cookie'] ?? [], location: res.headers.location, text }),
        );
      });
      req.on('error', reject);
      req.end(body);
    });

  it('over TLS: the cookie is __Host-gw_console with Secure, HttpOnly, SameSite=Strict, Path=/ and no Domain; it works, and sign-out clears it', async () => {
    const form = new URLSearchParams({ key: ADMIN }).toString();
    const s = await tlsRequest('POST', '/console/login', { 'content-type': 'application/x-www-form-urlencoded' }, form);
    assert.equal(s.status, 303, s.text);
    assert.equal(s.setCookie.length, 1, s.setCookie.join(' | '));
    const c = s.setCookie[0];
    assert.match(c, /^__Host-gw_console=[A-Za-z0-9_-]{40,};/);
    const attrs = c
      .split(';')
      .slice(1)
      .map((x) => x.trim().toLowerCase());
    for (const a of ['secure', 'httponly', 'samesite=strict', 'path=/']) assert.ok(attrs.includes(a), `${a} in ${c}`);
    assert.ok(!attrs.some((a) => a.startsWith('domain=')), 'a __Host- cookie has no Domain');
    const cookie = c.split(';')[0];

    const page = await tlsRequest('GET', '/console', { cookie });
    assert.equal(page.status, 200);
    assert.match(page.text, /Overview/);
    // The same session id under the plain name is not read over TLS: only the __Host- cookie opens the session there.
    const plainName = await tlsRequest('GET', '/console', { cookie: cookie.replace('__Host-gw_console', 'gw_console') });
    assert.equal(plainName.status, 303);
    assert.equal(plainName.location, '/console/login');

    const token = csrfOf(page.text);
    const out = await tlsRequest(
      'POST',
      '/console/logout',
      { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      new URLSearchParams({ _csrf: token }).toString(),
    );
    assert.equal(out.status, 303);
    assert.match(out.setCookie.join(' | '), /^__Host-gw_console=;.*Expires=Thu, 01 Jan 1970.*Secure/i);
    assert.equal((await tlsRequest('GET', '/console', { cookie })).location, '/console/login', 'the old cookie no longer works');
  });

  it('over plain HTTP on 127.0.0.1: the cookie is gw_console, HttpOnly and SameSite=Strict, without Secure or the __Host- prefix', async () => {
    const s = await signIn(stack.gw.url, ADMIN);
    assert.equal(s.status, 303);
    assert.match(s.setCookie, /^gw_console=[A-Za-z0-9_-]{40,}; Path=\/; HttpOnly; SameSite=Strict$/);
    assert.doesNotMatch(s.setCookie, /Secure|__Host-/);
    assert.equal((await get(`${stack.gw.url}/console`, s.cookie)).status, 200);
    // A __Host- cookie sent over plain HTTP is not taken (a browser would never send one there).
    const forged = await get(`${stack.gw.url}/console`, s.cookie.replace('gw_console', '__Host-gw_console'));
    assert.equal(forged.location, '/console/login');
  });
});
