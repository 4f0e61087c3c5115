/**
 * The console's sessions and access over HTTP: cookie flags, CSRF refusal, idle timeout, sign-out, a revoked key,
 * and role and ownership checks (the API's own, reached through the console).
 */
import assert from 'node:assert/strict';
import { eventually, postJson, useStack } from '../helpers/harness.js';
import { ADMIN, csrfOf, get, operatorKey, post, signIn, vendorKey } from './helpers.js';

describe('console: sessions, CSRF and roles (HTTP)', function () {
  this.timeout(60_000);
  const stack = useStack({ ADMIN_API_KEY: ADMIN, CONSOLE_SESSION_IDLE_MS: '1500' });
  const url = () => stack.gw.url;

  it('exchanges an admin key for an HttpOnly, SameSite=Strict session cookie (not Secure over plain HTTP); a bad key gets none', async () => {
    const s = await signIn(url(), ADMIN);
    assert.equal(s.status, 303);
    assert.match(s.setCookie, /^gw_console=[A-Za-z0-9_-]{40,};/);
    assert.match(s.setCookie, /HttpOnly/);
    assert.match(s.setCookie, /SameSite=Strict/);
    assert.doesNotMatch(s.setCookie, /Secure/);
    const page = await get(`${url()}/console`, s.cookie);
    assert.equal(page.status, 200);
    assert.match(page.text, /Overview/);
    // The key is not in the cookie nor in the page.
    assert.ok(!s.setCookie.includes(ADMIN) && !page.text.includes(ADMIN));

    const bad = await signIn(url(), 'gw_0000000000000000_nope');
    assert.equal(bad.status, 401);
    assert.equal(bad.setCookie, '');
    const none = await get(`${url()}/console`, '');
    assert.equal(none.status, 303);
    assert.equal(none.location, '/console/login');
  });

  it('refuses a device key at sign-in', async () => {
    const vkey = await vendorKey(url(), 'acme-s');
    await postJson(`${url()}/api/devices`, { id: 'dev-s1', identifiers: {} }, { authorization: `Bearer ${vkey}` });
    const k = await postJson(`${url()}/api/devices/dev-s1/credentials`, {}, { authorization: `Bearer ${vkey}` });
    const s = await signIn(url(), k.body.key);
    assert.equal(s.status, 403);
    assert.equal(s.setCookie, '');
  });

  it('refuses a change without the session CSRF token (403, nothing done) and performs it with the token, audited', async () => {
    const vkey = await vendorKey(url(), 'acme-c');
    const s = await signIn(url(), vkey);
    const missing = await post(`${url()}/console/devices/register`, s.cookie, { id: 'csrf-dev' });
    assert.equal(missing.status, 403);
    const wrong = await post(`${url()}/console/devices/register`, s.cookie, { id: 'csrf-dev', _csrf: 'x'.repeat(43) });
    assert.equal(wrong.status, 403);
    const api = await fetch(`${url()}/api/devices/csrf-dev`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(api.status, 404, 'the refused form registered nothing');

    const token = csrfOf((await get(`${url()}/console/devices`, s.cookie)).text);
    const ok = await post(`${url()}/console/devices/register`, s.cookie, { id: 'csrf-dev', _csrf: token });
    assert.equal(ok.status, 303, ok.text.slice(0, 500));
    const dev = await (await fetch(`${url()}/api/devices/csrf-dev`, { headers: { authorization: `Bearer ${ADMIN}` } })).json();
    assert.equal(dev.vendor, 'acme-c', 'registered through the API as the vendor');
    const audit = await (await fetch(`${url()}/api/audit?entity=csrf-dev`, { headers: { authorization: `Bearer ${ADMIN}` } })).json();
    assert.ok(
      audit.entry.some((e: any) => e.resource.agent[0].who.identifier.value === 'vendor:acme-c'),
      'the API audited it as the vendor',
    );
  });

  it('ends a session after the idle timeout, at sign-out (the old cookie no longer works) and when its key is revoked', async () => {
    const idle = await signIn(url(), ADMIN);
    assert.equal((await get(`${url()}/console`, idle.cookie)).status, 200);
    await new Promise((r) => setTimeout(r, 2000)); // CONSOLE_SESSION_IDLE_MS is 1500 here
    assert.equal((await get(`${url()}/console`, idle.cookie)).location, '/console/login');

    const s = await signIn(url(), ADMIN);
    const token = csrfOf((await get(`${url()}/console`, s.cookie)).text);
    assert.equal((await post(`${url()}/console/logout`, s.cookie, { _csrf: token })).status, 303);
    const after = await get(`${url()}/console/devices`, s.cookie);
    assert.equal(after.status, 303);
    assert.equal(after.location, '/console/login');
    const audit = await (await fetch(`${url()}/api/audit?action=E`, { headers: { authorization: `Bearer ${ADMIN}` } })).json();
    const kinds = audit.entry.map((e: any) => e.resource.subtype.at(-1).code);
    assert.ok(kinds.includes('console-sign-in') && kinds.includes('console-sign-out'), kinds.join(','));

    const op = await operatorKey(url(), 'revoked-op');
    const o = await signIn(url(), op.key);
    assert.equal((await get(`${url()}/console/messages`, o.cookie)).status, 200);
    const del = await fetch(`${url()}/api/operators/credentials/${op.keyId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    assert.equal(del.status, 204);
    await eventually(
      async () => (await get(`${url()}/console/messages`, o.cookie)).location === '/console/login',
      5000,
      'the session to end',
    );
  });

  it('applies the roles: queue internals for admins only, messages for operators, a vendor sees only its own devices', async () => {
    const op = await operatorKey(url(), 'role-op');
    const o = await signIn(url(), op.key);
    assert.equal((await get(`${url()}/console/queues`, o.cookie)).status, 403);
    assert.equal((await get(`${url()}/console/messages`, o.cookie)).status, 200);
    const a = await signIn(url(), ADMIN);
    const board = await get(`${url()}/console/queues`, a.cookie);
    assert.equal(board.status, 200);
    assert.match(board.text, /bull|queue/i);

    const k1 = await vendorKey(url(), 'vendor-one');
    const k2 = await vendorKey(url(), 'vendor-two');
    await postJson(`${url()}/api/devices`, { id: 'v1-dev', identifiers: {} }, { authorization: `Bearer ${k1}` });
    const v2 = await signIn(url(), k2);
    assert.equal((await get(`${url()}/console/messages`, v2.cookie)).status, 403);
    assert.equal((await get(`${url()}/console/audit`, v2.cookie)).status, 403);
    const other = await get(`${url()}/console/devices/v1-dev`, v2.cookie);
    assert.equal(other.status, 404, "another vendor's device is not found, as in the API");
    assert.doesNotMatch((await get(`${url()}/console/devices`, v2.cookie)).text, /v1-dev/);
    const token = csrfOf((await get(`${url()}/console/devices`, v2.cookie)).text);
    const act = await post(`${url()}/console/devices/v1-dev/suspend`, v2.cookie, { _csrf: token });
    assert.equal(act.status, 404);
    const dev = await (await fetch(`${url()}/api/devices/v1-dev`, { headers: { authorization: `Bearer ${ADMIN}` } })).json();
    assert.equal(dev.state, 'registered', 'unchanged');
    // bull-board's own API refuses a cross-site change even with an admin session.
    const cross = await fetch(`${url()}/console/queues/api/queues/pause`, {
      method: 'PUT',
      headers: { cookie: a.cookie, origin: 'http://evil.example' },
    });
    assert.equal(cross.status, 403);
  });
});
