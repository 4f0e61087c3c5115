/**
 * What a presented key costs: every well-formed key that is not in the verification cache costs exactly one scrypt,
 * whether its key id exists or not (so timing does not tell which key ids exist); a verified key costs none for
 * CREDENTIAL_CACHE_TTL_MS; concurrent first uses share one; rotation drops the cached verification like revocation.
 * Counted with the process's scrypt counter (also served as credential_scrypt_verifications_total on /metrics).
 */
import { strict as assert } from 'node:assert';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startDmGateway, type DmGateway } from '../devices/wire.js';
import { scryptVerifications } from '../../src/access/credentials.js';

describe('the cost of a presented key', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  let device: { key: string; keyId: string };

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      CREDENTIAL_CACHE_TTL_MS: '60000',
      CREDENTIAL_ROTATION_OVERLAP_MS: '1000',
    });
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'COST-1', adapter: 'measurements' })).status, 201);
    assert.equal((await call(gw.url, 'PUT', '/api/devices/COST-1/config', ADMIN, { samplingIntervalS: 5 })).status, 200);
    device = (await call(gw.url, 'POST', '/api/devices/COST-1/credentials', ADMIN)).body;
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  const cost = async (key: string | undefined, path = '/api/devices/me/config') => {
    const before = scryptVerifications();
    const r = await call(gw.url, 'GET', path, key);
    return { status: r.status, scrypt: scryptVerifications() - before };
  };

  it('an unknown key id costs one scrypt, like a wrong secret on a known one', async () => {
    const secret = device.key.slice(20);
    assert.deepEqual(await cost(`gw_${device.keyId}_${'x'.repeat(secret.length)}`), { status: 401, scrypt: 1 }, 'wrong secret');
    assert.deepEqual(await cost(`gw_0123456789abcdef_${secret}`), { status: 401, scrypt: 1 }, 'unknown key id');
    assert.deepEqual(await cost('not-a-gateway-key'), { status: 401, scrypt: 0 }, 'not in the key format: no lookup at all');
  });

  it('a verified key costs no scrypt until the cache entry ends; concurrent first uses share one', async () => {
    const fresh = (await call(gw.url, 'POST', '/api/devices/COST-1/credentials', ADMIN)).body as { key: string };
    const before = scryptVerifications();
    const all = await Promise.all(Array.from({ length: 8 }, () => call(gw.url, 'GET', '/api/devices/me/config', fresh.key)));
    assert.deepEqual(
      all.map((r) => r.status),
      Array(8).fill(200),
    );
    assert.equal(scryptVerifications() - before, 1, 'eight concurrent first uses, one scrypt');
    assert.deepEqual(await cost(fresh.key), { status: 200, scrypt: 0 }, 'then from the cache');
    const metrics = await call(gw.url, 'GET', '/metrics', ADMIN);
    assert.match(String(metrics.body), /credential_scrypt_verifications_total \d+/);
  });

  it('a rotated key stops working at the end of its overlap although it was cached (rotation drops the cache entry)', async () => {
    assert.deepEqual(await cost(device.key), { status: 200, scrypt: 1 });
    assert.deepEqual(await cost(device.key), { status: 200, scrypt: 0 }, 'cached for 60 s');
    const rot = await call(gw.url, 'POST', `/api/devices/COST-1/credentials/${device.keyId}/rotate`, ADMIN);
    assert.equal(rot.status, 201, JSON.stringify(rot.body));
    await eventually(
      async () => (await call(gw.url, 'GET', '/api/devices/me/config', device.key)).status === 401,
      10000,
      'the old key refused',
    );
    assert.equal((await call(gw.url, 'GET', '/api/devices/me/config', rot.body.key)).status, 200, 'the new key works');
  });
});
