/**
 * Credentials: issued once and stored only as a scrypt hash, bound to their owner (no device speaks for another),
 * revoked (at once, on every instance), rotated with an overlap window, rate-limited per credential.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { startEhr, startRedis, eventually, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';
import { hashSecret, parseKey, verifySecret } from '../../src/access/credentials.js';

describe('credentials', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let a: DmGateway;
  let b: DmGateway;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    // Two instances on one Redis: A keeps old keys for a day after rotation, B not at all.
    a = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url });
    b = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, CREDENTIAL_ROTATION_OVERLAP_MS: '0' });
    for (const id of ['DEV-A', 'DEV-B', 'DEV-C']) {
      assert.equal((await call(a.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' })).status, 201);
      assert.equal((await call(a.url, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 200);
      // A device key files readings for its device's assigned patient only (DEVICE_PATIENT_BINDING=assigned-only).
      const patientId = reading(id).patientId;
      assert.equal((await call(a.url, 'PUT', `/api/devices/${id}/assignment`, ADMIN, { patientId })).status, 200);
    }
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('hashes secrets with scrypt (salted, parameters stored with the hash)', async () => {
    const h = await hashSecret('s3cret-value-xyz');
    assert.match(h, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.notEqual(h, await hashSecret('s3cret-value-xyz'), 'salted: two hashes of one secret differ');
    assert.equal(await verifySecret('s3cret-value-xyz', h), true);
    assert.equal(await verifySecret('s3cret-value-xyZ', h), false);
  });

  it('shows a key once, keeps only its hash in Redis, and never echoes it', async () => {
    const r = await call(a.url, 'POST', '/api/devices/DEV-A/credentials', ADMIN);
    assert.equal(r.status, 201);
    const { keyId, key } = r.body;
    const parsed = parseKey(key);
    assert.equal(parsed?.keyId, keyId);
    const client = new IORedis.default(redis.url);
    try {
      const all = await client.keys('*');
      for (const k of all) {
        const type = await client.type(k);
        const dump =
          type === 'string'
            ? await client.get(k)
            : type === 'hash'
              ? JSON.stringify(await client.hgetall(k))
              : type === 'set'
                ? JSON.stringify(await client.smembers(k))
                : type === 'zset'
                  ? JSON.stringify(await client.zrange(k, 0, -1))
                  : type === 'list'
                    ? JSON.stringify(await client.lrange(k, 0, -1))
                    : '';
        assert.ok(!dump?.includes(parsed!.secret), `the secret is not stored (found in ${k})`);
      }
    } finally {
      client.disconnect();
    }
    const list = await call(a.url, 'GET', '/api/devices/DEV-A/credentials', ADMIN);
    assert.equal(list.body.length, 1);
    assert.ok(!JSON.stringify(list.body).includes(parsed!.secret));
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', key, reading('DEV-A'))).status, 202);
    assert.ok(!a.logs.some((l) => l.includes(parsed!.secret)), 'the key is never logged');
  });

  const impersonation: { name: string; caller: string; body: () => unknown; status: number }[] = [
    { name: 'its own reading', caller: 'DEV-A', body: () => reading('DEV-A', {}, 1), status: 202 },
    { name: "another registered device's reading", caller: 'DEV-A', body: () => reading('DEV-B', {}, 2), status: 403 },
    { name: "an unknown device's reading", caller: 'DEV-A', body: () => reading('DEV-UNKNOWN', {}, 3), status: 403 },
    {
      name: 'a batch with one foreign reading',
      caller: 'DEV-A',
      body: () => [reading('DEV-A', {}, 4), reading('DEV-B', {}, 4)],
      status: 403,
    },
  ];
  for (const c of impersonation) {
    it(`a device key sending ${c.name}: ${c.status}`, async () => {
      const { key } = (await call(a.url, 'POST', `/api/devices/${c.caller}/credentials`, ADMIN)).body;
      const r = await call(a.url, 'POST', '/ingest/measurements', key, c.body());
      assert.equal(r.status, c.status, JSON.stringify(r.body));
      if (c.status === 403) assert.match(r.body.issue[0].diagnostics, /may not send data of device/);
    });
  }

  it('a vendor key sends only for its own devices, and only to its adapters when it has a list', async () => {
    await call(a.url, 'POST', '/api/vendors', ADMIN, { id: 'initech', adapters: ['some-other-adapter'] });
    await call(a.url, 'POST', '/api/vendors', ADMIN, { id: 'umbrella' });
    const initech = (await call(a.url, 'POST', '/api/vendors/initech/credentials', ADMIN)).body.key;
    const umbrella = (await call(a.url, 'POST', '/api/vendors/umbrella/credentials', ADMIN)).body.key;
    await call(a.url, 'POST', '/api/devices', umbrella, { id: 'UMB-1' });
    await call(a.url, 'POST', '/api/devices/UMB-1/activate', umbrella);
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', umbrella, reading('UMB-1'))).status, 202);
    const foreign = await call(a.url, 'POST', '/ingest/measurements', umbrella, reading('DEV-B', {}, 9));
    assert.equal(foreign.status, 403);
    assert.match(foreign.body.issue[0].diagnostics, /not a device of vendor 'umbrella'/);
    const wrongAdapter = await call(a.url, 'POST', '/ingest/measurements', initech, reading('UMB-1'));
    assert.equal(wrongAdapter.status, 403);
    assert.match(wrongAdapter.body.issue[0].diagnostics, /may not send to adapter 'measurements'/);
  });

  it('a revoked key is refused at once, on this instance and on another one that had it cached', async () => {
    const { key, keyId } = (await call(a.url, 'POST', '/api/devices/DEV-B/credentials', ADMIN)).body;
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', key, reading('DEV-B', {}, 10))).status, 202);
    assert.equal(
      (await call(b.url, 'POST', '/ingest/measurements', key, reading('DEV-B', {}, 11))).status,
      202,
      'B verified (and cached) it',
    );
    assert.equal((await call(a.url, 'DELETE', `/api/devices/DEV-B/credentials/${keyId}`, ADMIN)).status, 204);
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', key, reading('DEV-B', {}, 12))).status, 401);
    await eventually(
      async () => (await call(b.url, 'POST', '/ingest/measurements', key, reading('DEV-B', {}, 13))).status === 401,
      10000,
      'B to refuse the revoked key',
    );
    assert.equal((await call(a.url, 'DELETE', `/api/devices/DEV-B/credentials/${keyId}`, ADMIN)).status, 404, 'revoking twice: not found');
  });

  it("a key id of another owner cannot be revoked or rotated through this device's routes", async () => {
    const other = (await call(a.url, 'POST', '/api/devices/DEV-C/credentials', ADMIN)).body;
    assert.equal((await call(a.url, 'DELETE', `/api/devices/DEV-A/credentials/${other.keyId}`, ADMIN)).status, 404);
    assert.equal((await call(a.url, 'POST', `/api/devices/DEV-A/credentials/${other.keyId}/rotate`, ADMIN)).status, 404);
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', other.key, reading('DEV-C'))).status, 202, 'still valid');
  });

  it('rotation: the new key works, the old one keeps working during the overlap', async () => {
    const old = (await call(a.url, 'POST', '/api/devices/DEV-C/credentials', ADMIN)).body;
    const rot = await call(a.url, 'POST', `/api/devices/DEV-C/credentials/${old.keyId}/rotate`, ADMIN);
    assert.equal(rot.status, 201);
    assert.notEqual(rot.body.keyId, old.keyId);
    assert.equal(rot.body.previousKeyId, old.keyId);
    assert.ok(Date.parse(rot.body.previousExpiresAt) > Date.now() + 3600_000, 'old key valid for the configured overlap (a day)');
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', rot.body.key, reading('DEV-C', {}, 20))).status, 202);
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', old.key, reading('DEV-C', {}, 21))).status, 202);
    assert.equal((await call(b.url, 'POST', '/ingest/measurements', old.key, reading('DEV-C', {}, 22))).status, 202);
  });

  it('rotation with no overlap: the old key stops working at once, everywhere', async () => {
    const old = (await call(a.url, 'POST', '/api/devices/DEV-C/credentials', ADMIN)).body;
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', old.key, reading('DEV-C', {}, 30))).status, 202, 'cached on A');
    const rot = await call(b.url, 'POST', `/api/devices/DEV-C/credentials/${old.keyId}/rotate`, ADMIN);
    assert.equal(rot.status, 201);
    assert.equal((await call(b.url, 'POST', '/ingest/measurements', old.key, reading('DEV-C', {}, 31))).status, 401);
    await eventually(
      async () => (await call(a.url, 'POST', '/ingest/measurements', old.key, reading('DEV-C', {}, 32))).status === 401,
      10000,
      'A to refuse the rotated-out key',
    );
    assert.equal((await call(a.url, 'POST', '/ingest/measurements', rot.body.key, reading('DEV-C', {}, 33))).status, 202);
    assert.equal(
      (await call(a.url, 'POST', `/api/devices/DEV-C/credentials/${old.keyId}/rotate`, ADMIN)).status,
      409,
      'an expired key cannot be rotated',
    );
  });

  it('vendor and operator keys: issue, rotate, revoke', async () => {
    await call(a.url, 'POST', '/api/vendors', ADMIN, { id: 'hooli' });
    const v = (await call(a.url, 'POST', '/api/vendors/hooli/credentials', ADMIN)).body;
    assert.equal((await call(a.url, 'GET', '/api/devices', v.key)).status, 200);
    const vr = await call(a.url, 'POST', `/api/vendors/hooli/credentials/${v.keyId}/rotate`, v.key);
    assert.equal(vr.status, 201, 'a vendor rotates its own key');
    assert.equal((await call(a.url, 'DELETE', `/api/vendors/hooli/credentials/${vr.body.keyId}`, ADMIN)).status, 204);
    assert.equal((await call(a.url, 'GET', '/api/devices', vr.body.key)).status, 401);
    assert.equal((await call(a.url, 'POST', '/api/vendors/nobody/credentials', ADMIN)).status, 404, 'no keys for unregistered vendors');
    const op = (await call(a.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'night-shift' })).body;
    assert.equal((await call(a.url, 'GET', '/api/status', op.key)).status, 200);
    assert.equal((await call(a.url, 'DELETE', `/api/operators/credentials/${op.keyId}`, ADMIN)).status, 204);
    assert.equal((await call(a.url, 'GET', '/api/status', op.key)).status, 401);
  });
});

describe('rate limit per credential', function () {
  this.timeout(60000);
  it('answers 429 with Retry-After once a credential has used its bucket; other credentials are unaffected', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, RATE_LIMIT_PER_MINUTE: '1', RATE_LIMIT_BURST: '3' });
    try {
      const k1 = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'one' })).body.key;
      const k2 = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'two' })).body.key;
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await call(gw.url, 'GET', '/api/devices', k1)).status);
      assert.deepEqual(statuses, [200, 200, 200, 429]);
      const r = await call(gw.url, 'GET', '/api/devices', k1);
      assert.equal(r.status, 429);
      assert.ok(Number(r.headers.get('retry-after')) >= 1);
      assert.equal(r.body.issue[0].code, 'throttled');
      assert.equal((await call(gw.url, 'GET', '/api/devices', k2)).status, 200, 'another credential has its own bucket');
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});
