/**
 * Every role against every route family, through real HTTP, real Redis and the real sandbox EHR: who may call what,
 * ownership (a vendor's own devices, a device's own data), and 401 without or with a bad credential.
 */
import { strict as assert } from 'node:assert';
import { startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';

type Who = 'anonymous' | 'admin' | 'operator' | 'vendor' | 'otherVendor' | 'device';
const WHO: Who[] = ['anonymous', 'admin', 'operator', 'vendor', 'otherVendor', 'device'];

describe('access control: every role against every route family', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  const keys: Partial<Record<Who, string>> = {};

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    // Every route is tried without a credential and with bad keys, all from 127.0.0.1: far more 401s than the limit on
    // failed authentications per address allows (that limit has its own tests in auth-failures.test.ts).
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, AUTH_FAILURE_LIMIT: '0' });
    const u = gw.url;
    keys.admin = ADMIN;
    for (const v of ['acme', 'globex'])
      assert.equal((await call(u, 'POST', '/api/vendors', ADMIN, { id: v, name: v.toUpperCase() })).status, 201);
    keys.vendor = (await call(u, 'POST', '/api/vendors/acme/credentials', ADMIN)).body.key;
    keys.otherVendor = (await call(u, 'POST', '/api/vendors/globex/credentials', ADMIN)).body.key;
    keys.operator = (await call(u, 'POST', '/api/operators/credentials', ADMIN, { name: 'integration-team' })).body.key;
    for (const id of ['ACME-1', 'ACME-2', 'ACME-3']) {
      assert.equal(
        (await call(u, 'POST', '/api/devices', ADMIN, { id, vendor: 'acme', type: 'pulse-oximeter', adapter: 'measurements' })).status,
        201,
      );
      assert.equal((await call(u, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 200);
    }
    // A device credential files readings for its device's assigned patient only (DEVICE_PATIENT_BINDING=assigned-only).
    assert.equal((await call(u, 'PUT', '/api/devices/ACME-1/assignment', ADMIN, { patientId: reading('ACME-1').patientId })).status, 200);
    keys.device = (await call(u, 'POST', '/api/devices/ACME-1/credentials', ADMIN)).body.key;
    for (const k of Object.values(keys)) assert.ok(k, 'every key issued');
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  // Each family: one representative call (owned by acme where ownership matters) and who may make it.
  // "ok" = authorised (any status but 401/403: the handler ran); 403 = refused by role or ownership.
  const families: {
    name: string;
    method: string;
    path: string | ((who: Who) => string);
    body?: unknown | ((who: Who) => unknown);
    allowed: Who[];
  }[] = [
    { name: 'ingest', method: 'POST', path: '/ingest/measurements', body: reading('ACME-1'), allowed: ['admin', 'vendor', 'device'] },
    { name: 'device list', method: 'GET', path: '/api/devices', allowed: ['admin', 'operator', 'vendor', 'otherVendor'] },
    { name: 'device read', method: 'GET', path: '/api/devices/ACME-2', allowed: ['admin', 'operator', 'vendor'] },
    {
      name: 'device register',
      method: 'POST',
      path: '/api/devices',
      body: (w: Who) => ({ id: `NEW-${w}`, ...(w === 'otherVendor' ? {} : { vendor: 'acme' }) }),
      allowed: ['admin', 'vendor', 'otherVendor'],
    },
    {
      name: 'bulk register',
      method: 'POST',
      path: '/api/devices/bulk',
      body: (w: Who) => [{ id: `BULK-${w}` }],
      allowed: ['admin', 'vendor', 'otherVendor'],
    },
    { name: 'lifecycle', method: 'POST', path: '/api/devices/ACME-2/suspend', allowed: ['admin', 'operator', 'vendor'] },
    {
      name: 'assignment',
      method: 'PUT',
      path: '/api/devices/ACME-3/assignment',
      body: { locationId: 'ICU-1' },
      allowed: ['admin', 'operator'],
    },
    { name: 'unassignment', method: 'DELETE', path: '/api/devices/ACME-3/assignment', allowed: ['admin', 'operator'] },
    { name: 'device credentials', method: 'POST', path: '/api/devices/ACME-3/credentials', allowed: ['admin', 'vendor'] },
    { name: 'credential list', method: 'GET', path: '/api/devices/ACME-3/credentials', allowed: ['admin', 'operator', 'vendor'] },
    {
      name: 'device config set',
      method: 'PUT',
      path: '/api/devices/ACME-1/config',
      body: { samplingIntervalS: 60 },
      allowed: ['admin', 'operator', 'vendor'],
    },
    { name: 'device config read', method: 'GET', path: '/api/devices/ACME-1/config', allowed: ['admin', 'operator', 'vendor'] },
    { name: 'own config (device)', method: 'GET', path: '/api/devices/me/config', allowed: ['device'] },
    { name: 'held readings (review)', method: 'GET', path: '/api/devices/ACME-2/held', allowed: ['admin', 'operator'] },
    {
      name: 'decommission report',
      method: 'GET',
      path: '/api/devices/ACME-2/decommission-report',
      allowed: ['admin', 'operator', 'vendor'],
    },
    { name: 'vendor registration', method: 'POST', path: '/api/vendors', body: (w: Who) => ({ id: `v-${w}` }), allowed: ['admin'] },
    { name: 'vendor list', method: 'GET', path: '/api/vendors', allowed: ['admin', 'operator'] },
    { name: 'vendor keys', method: 'POST', path: '/api/vendors/acme/credentials', allowed: ['admin'] },
    { name: 'operator keys', method: 'POST', path: '/api/operators/credentials', body: {}, allowed: ['admin'] },
    { name: 'audit trail', method: 'GET', path: '/api/audit', allowed: ['admin', 'operator'] },
    { name: 'status', method: 'GET', path: '/api/status', allowed: ['admin', 'operator'] },
    { name: 'dead letters', method: 'GET', path: '/api/dead-letters', allowed: ['admin', 'operator'] },
    { name: 'dead-letter replay', method: 'POST', path: '/api/dead-letters/none/retry', allowed: ['admin', 'operator'] },
    { name: 'dead-letter delete', method: 'DELETE', path: '/api/dead-letters/none', allowed: ['admin'] },
    { name: 'adapters', method: 'GET', path: '/api/adapters', allowed: ['admin', 'operator', 'vendor', 'otherVendor'] },
    { name: 'metrics', method: 'GET', path: '/metrics', allowed: ['admin', 'operator'] },
  ];

  for (const f of families) {
    it(`${f.name}: ${f.method} ${typeof f.path === 'string' ? f.path : f.path('admin')} — allowed: ${f.allowed.join(', ')}`, async () => {
      for (const who of WHO) {
        const path = typeof f.path === 'string' ? f.path : f.path(who);
        const body = typeof f.body === 'function' ? (f.body as (w: Who) => unknown)(who) : f.body;
        const r = await call(gw.url, f.method, path, keys[who as Exclude<Who, 'anonymous'>], body);
        if (who === 'anonymous') {
          assert.equal(r.status, 401, `${who}: ${f.method} ${path}`);
          assert.equal(r.body.resourceType, 'OperationOutcome');
        } else if (f.allowed.includes(who)) {
          assert.ok(![401, 403].includes(r.status), `${who} may ${f.method} ${path}; got ${r.status} ${JSON.stringify(r.body)}`);
        } else if (who === 'otherVendor' && f.allowed.includes('vendor') && path.startsWith('/api/devices/')) {
          // Another vendor's device is answered as no device at all: a vendor cannot probe which ids exist.
          assert.equal(r.status, 404, `${who} may not ${f.method} ${path}; got ${r.status} ${JSON.stringify(r.body)}`);
          assert.equal(r.body.issue[0].code, 'not-found');
        } else {
          assert.equal(r.status, 403, `${who} may not ${f.method} ${path}; got ${r.status} ${JSON.stringify(r.body)}`);
          assert.equal(r.body.resourceType, 'OperationOutcome');
          assert.equal(r.body.issue[0].code, 'forbidden');
        }
      }
    });
  }

  it('/healthz and /readyz need no credential', async () => {
    assert.equal((await call(gw.url, 'GET', '/healthz')).status, 200);
    assert.equal((await call(gw.url, 'GET', '/readyz')).status, 200);
  });

  it('a wrong, malformed or made-up key is 401, never a stack trace', async () => {
    for (const k of ['nope', 'gw_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', `${keys.device}x`]) {
      const r = await call(gw.url, 'GET', '/api/devices', k);
      assert.equal(r.status, 401);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer');
      assert.ok(!/\bat .*\.ts:\d+/.test(JSON.stringify(r.body)), 'no stack trace');
    }
  });

  it('a vendor sees only its own devices in lists, and never the patient of an assignment', async () => {
    await call(gw.url, 'POST', '/api/devices/ACME-1/activate', ADMIN);
    assert.equal((await call(gw.url, 'PUT', '/api/devices/ACME-1/assignment', ADMIN, { patientId: 'MRN-SECRET-1' })).status, 200);
    const mine = await call(gw.url, 'GET', '/api/devices', keys.vendor);
    assert.ok(mine.body.length > 0);
    assert.ok(mine.body.every((d: { vendor: string }) => d.vendor === 'acme'));
    assert.ok(!JSON.stringify(mine.body).includes('MRN-SECRET-1'));
    const theirs = await call(gw.url, 'GET', '/api/devices', keys.otherVendor);
    assert.ok(theirs.body.every((d: { vendor: string }) => d.vendor === 'globex'));
    const filtered = await call(gw.url, 'GET', '/api/devices?vendor=acme', keys.otherVendor);
    assert.deepEqual(filtered.body, []);
  });

  it('a vendor cannot register a device for another vendor', async () => {
    const r = await call(gw.url, 'POST', '/api/devices', keys.otherVendor, { id: 'SNEAKY-1', vendor: 'acme' });
    assert.equal(r.status, 422);
    assert.match(JSON.stringify(r.body), /its own vendor/);
  });
});
