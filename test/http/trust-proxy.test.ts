/**
 * TRUST_PROXY: behind a load balancer or a TLS-terminating proxy the client is the one the proxy names, never one a
 * client names itself. Requests come from chosen loopback addresses (127.0.0.0/8 is all loopback on Linux): 127.0.0.2
 * plays the trusted proxy, 127.0.0.3 and 127.0.0.4 clients that connect directly and send the same headers.
 */
import { strict as assert } from 'node:assert';
import { request } from 'node:http';
import type { AuditEvent, Bundle } from 'fhir/r4';
import { loadGatewayConfig } from '../../src/app/features.js';
import { ConfigError } from '../../src/config/schema.js';
import { eventually, FAST_ENV, useStack } from '../helpers/harness.js';

const ADMIN = 'trust-proxy-admin-key-0123456789';
const PROXY = '127.0.0.2';
const DIRECT = '127.0.0.3';
const BROWSER = '127.0.0.4';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function send(from: string, url: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, localAddress: from, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const wrongKey = { authorization: 'Bearer gw_00000000000000cc_wrongwrongwrongwrongwrong' };

describe('TRUST_PROXY: the client behind a trusted proxy', function () {
  this.timeout(60_000);
  const stack = useStack({
    ADMIN_API_KEY: ADMIN,
    TRUST_PROXY: PROXY,
    AUTH_FAILURE_LIMIT: '3',
    AUTH_FAILURE_WINDOW_S: '600',
    RATE_LIMIT_PER_MINUTE: '0',
  });
  const url = () => stack.gw.url;

  /** The addresses the access-refused AuditEvents name. */
  async function refusedAddresses(): Promise<string[]> {
    const r = await send('127.0.0.1', url(), 'GET', '/api/audit?kind=access-refused&limit=1000', { authorization: `Bearer ${ADMIN}` });
    assert.equal(r.status, 200, r.text);
    const events = ((JSON.parse(r.text) as Bundle).entry ?? []).map((e) => e.resource as AuditEvent);
    return events.map((e) => e.agent.find((a) => a.requestor)?.network?.address ?? '');
  }

  it('counts failed authentications per forwarded client: one client over the limit does not block the others behind the proxy', async () => {
    const from = (client: string) => ({ ...wrongKey, 'x-forwarded-for': client });
    for (let i = 0; i < 3; i++) assert.equal((await send(PROXY, url(), 'GET', '/api/status', from('203.0.113.7'))).status, 401);
    assert.equal((await send(PROXY, url(), 'GET', '/api/status', from('203.0.113.7'))).status, 429, 'this client is over its limit');
    // Without TRUST_PROXY every client behind the proxy shares its address and would be refused here.
    const other = await send(PROXY, url(), 'GET', '/api/status', { 'x-forwarded-for': '203.0.113.8', authorization: `Bearer ${ADMIN}` });
    assert.equal(other.status, 200, `another client behind the same proxy: ${other.text}`);
    // A client cannot hide behind a forged header: the proxy appends the address it saw, and that one counts.
    const forged = await send(PROXY, url(), 'GET', '/api/status', { ...wrongKey, 'x-forwarded-for': '198.51.100.1, 203.0.113.7' });
    assert.equal(forged.status, 429, 'the address the proxy saw, not the one the client wrote');
    // The first failure of a source is audited as it is counted (not awaited by the answer).
    await eventually(
      async () => (await refusedAddresses()).includes('203.0.113.7'),
      10_000,
      'the audit trail to name the client, not the proxy',
    );
  });

  it('the hot ingest route and the rest of the API agree on the client', async () => {
    const r = await send(
      PROXY,
      url(),
      'POST',
      '/ingest/measurements',
      { ...wrongKey, 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.20' },
      '{}',
    );
    assert.equal(r.status, 401, r.text);
    await eventually(
      async () => (await refusedAddresses()).includes('203.0.113.20'),
      10_000,
      'the refusal on POST /ingest to name the client',
    );
  });

  it('drops a port the proxy appended, and counts what is no address as the proxy itself', async () => {
    const r = await send(PROXY, url(), 'GET', '/api/status', { ...wrongKey, 'x-forwarded-for': '203.0.113.40:51234' });
    assert.equal(r.status, 401);
    const v6 = await send(PROXY, url(), 'GET', '/api/status', { ...wrongKey, 'x-forwarded-for': '[2001:db8::41]:443' });
    assert.equal(v6.status, 401);
    const junk = await send(PROXY, url(), 'GET', '/api/status', { ...wrongKey, 'x-forwarded-for': 'not-an-address' });
    assert.equal(junk.status, 401);
    const addresses = await eventually(
      async () => {
        const a = await refusedAddresses();
        return a.includes('203.0.113.40') && a.some((x) => x.startsWith('2001:db8::')) && a.includes(PROXY) ? a : undefined;
      },
      10_000,
      'the three refusals to be audited',
    );
    assert.ok(!addresses.some((a) => a.includes(':51234') || a === 'not-an-address'), addresses.join(' '));
  });

  it('ignores the headers from a peer that is not a trusted proxy', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await send(DIRECT, url(), 'GET', '/api/status', { ...wrongKey, 'x-forwarded-for': `203.0.113.${100 + i}` });
      assert.equal(r.status, 401);
    }
    const r = await send(DIRECT, url(), 'GET', '/api/status', { 'x-forwarded-for': '203.0.113.200', authorization: `Bearer ${ADMIN}` });
    assert.equal(r.status, 429, 'its failures all counted against its own address, whatever it claimed');
    const addresses = await eventually(
      async () => ((await refusedAddresses()).includes(DIRECT) ? refusedAddresses() : undefined),
      10_000,
      'the refusals to be audited under its TCP address',
    );
    assert.ok(!addresses.includes('203.0.113.100'), 'never under the address it claimed');
  });

  it('console: X-Forwarded-Proto https from the proxy makes the cookie __Host- and Secure; from anyone else it is ignored', async () => {
    const form = new URLSearchParams({ key: ADMIN }).toString();
    const headers = {
      'content-type': 'application/x-www-form-urlencoded',
      'x-forwarded-proto': 'https',
      'x-forwarded-for': '203.0.113.30',
    };
    const proxied = await send(PROXY, url(), 'POST', '/console/login', headers, form);
    assert.equal(proxied.status, 303, proxied.text);
    const cookie = String(proxied.headers['set-cookie']?.[0] ?? '');
    assert.match(cookie, /^__Host-gw_console=/);
    assert.match(cookie, /;\s*Secure/i);
    // The browser then sends the __Host- cookie through the proxy, and the session is found.
    const id = cookie.split(';')[0];
    const page = await send(PROXY, url(), 'GET', '/console/', {
      cookie: id,
      'x-forwarded-proto': 'https',
      'x-forwarded-for': '203.0.113.30',
    });
    assert.equal(page.status, 200, page.text.slice(0, 200));

    const direct = await send(BROWSER, url(), 'POST', '/console/login', headers, form);
    assert.equal(direct.status, 303, direct.text);
    const plain = String(direct.headers['set-cookie']?.[0] ?? '');
    assert.match(plain, /^gw_console=/, 'not over TLS: the header of an untrusted peer is not believed');
    assert.doesNotMatch(plain, /Secure/i);
  });
});

describe('TRUST_PROXY: the setting', () => {
  it('refuses what is not an address, a CIDR block or a named range, and names the setting', () => {
    for (const bad of ['true', '*', '2', '10.0.0.0/33', 'proxy.example', '0.0.0.0/0', '::/0']) {
      assert.throws(
        () => loadGatewayConfig({ ...FAST_ENV, TRUST_PROXY: bad }),
        (err: unknown) => err instanceof ConfigError && /TRUST_PROXY/.test(String((err as Error).message)),
        bad,
      );
    }
    const ok = loadGatewayConfig({ ...FAST_ENV, TRUST_PROXY: '10.0.0.0/8, loopback,fd00::/8' });
    assert.deepEqual(ok.trustProxy, ['10.0.0.0/8', 'loopback', 'fd00::/8']);
    assert.deepEqual(loadGatewayConfig({ ...FAST_ENV }).trustProxy, []);
  });
});
