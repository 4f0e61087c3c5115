/**
 * HMAC-signed requests for vendor clouds: body and timestamp bound to the vendor's signing secret; replays, stale
 * timestamps, altered bodies and unknown keys refused; ownership rules as for bearer keys.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';
import { openSecret, sealSecret, sign } from '../../src/access/hmac.js';

const MASTER = 'test-master-key-0123456789abcdef-0123456789';

describe('HMAC-signed requests', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  let vendor: { keyId: string; key: string; signingSecret: string };

  const signed = async (
    method: string,
    path: string,
    body: unknown,
    opts: { keyId?: string; secret?: string; ts?: number; alter?: boolean; signature?: string } = {},
  ) => {
    const raw = Buffer.from(body === undefined ? '' : JSON.stringify(body));
    const ts = String(opts.ts ?? Math.floor(Date.now() / 1000));
    const signature = opts.signature ?? sign(opts.secret ?? vendor.signingSecret, ts, method, path, raw);
    const sent = opts.alter ? Buffer.from(JSON.stringify({ ...(body as object), tampered: true })) : raw;
    const r = await fetch(`${gw.url}${path}`, {
      method,
      headers: {
        'content-type': 'application/json',
        'x-gateway-key-id': opts.keyId ?? vendor.keyId,
        'x-gateway-timestamp': ts,
        'x-gateway-signature': signature,
      },
      body: method === 'GET' ? undefined : new Uint8Array(sent),
    });
    return { status: r.status, body: await r.json().catch(() => undefined), signature };
  };

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, CREDENTIAL_SIGNING_KEY: MASTER, HMAC_WINDOW_S: '300' });
    await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: 'signer' });
    vendor = (await call(gw.url, 'POST', '/api/vendors/signer/credentials', ADMIN)).body;
    assert.ok(vendor.signingSecret, 'a signing secret is issued with the vendor key (shown once)');
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'SIGNED-1', vendor: 'signer', adapter: 'measurements' });
    await call(gw.url, 'POST', '/api/devices/SIGNED-1/activate', ADMIN);
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'NOT-MINE', adapter: 'measurements' });
    await call(gw.url, 'POST', '/api/devices/NOT-MINE/activate', ADMIN);
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('seals secrets with AES-GCM; the wrong master key cannot open them', () => {
    const sealed = sealSecret('abc', MASTER);
    assert.equal(openSecret(sealed, MASTER), 'abc');
    assert.equal(openSecret(sealed, `${MASTER}x`), undefined);
  });

  it('a correctly signed ingest is accepted; the signing secret is not stored in clear', async () => {
    const r = await signed('POST', '/ingest/measurements', reading('SIGNED-1'));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const client = new IORedis.default(redis.url);
    try {
      for (const k of await client.keys('gw:cred:*')) {
        if ((await client.type(k)) === 'string') assert.ok(!(await client.get(k))?.includes(vendor.signingSecret));
      }
    } finally {
      client.disconnect();
    }
  });

  it('signed API calls work too (GET without a body)', async () => {
    const r = await signed('GET', '/api/devices?vendor=signer', undefined);
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.map((d: { id: string }) => d.id),
      ['SIGNED-1'],
    );
  });

  const refusals: { name: string; run: () => Promise<{ status: number; body: any }>; status: number; reason: RegExp }[] = [
    {
      name: 'a replayed signature',
      run: async () => {
        const first = await signed('POST', '/ingest/measurements', reading('SIGNED-1', {}, 7));
        assert.equal(first.status, 202);
        return signed('POST', '/ingest/measurements', reading('SIGNED-1', {}, 7), { signature: first.signature });
      },
      status: 401,
      reason: /replay/,
    },
    {
      name: 'a stale timestamp',
      run: () => signed('POST', '/ingest/measurements', reading('SIGNED-1', {}, 8), { ts: Math.floor(Date.now() / 1000) - 3600 }),
      status: 401,
      reason: /outside the allowed window/,
    },
    {
      name: 'an altered body',
      run: () => signed('POST', '/ingest/measurements', reading('SIGNED-1', {}, 9), { alter: true }),
      status: 401,
      reason: /wrong signature/,
    },
    {
      name: 'the wrong secret',
      run: () => signed('POST', '/ingest/measurements', reading('SIGNED-1', {}, 10), { secret: 'guess' }),
      status: 401,
      reason: /wrong signature/,
    },
    {
      name: 'an unknown key id',
      run: () => signed('POST', '/ingest/measurements', reading('SIGNED-1', {}, 11), { keyId: '0123456789abcdef' }),
      status: 401,
      reason: /unknown key/,
    },
    {
      name: "another vendor's device",
      run: () => signed('POST', '/ingest/measurements', reading('NOT-MINE', {}, 12)),
      status: 403,
      reason: /not a device of vendor 'signer'/,
    },
  ];
  for (const c of refusals) {
    it(`refuses ${c.name} (${c.status})`, async () => {
      const r = await c.run();
      assert.equal(r.status, c.status, JSON.stringify(r.body));
      assert.match(r.body.issue[0].diagnostics, c.reason);
    });
  }

  it('a revoked vendor key can no longer sign', async () => {
    const v2 = (await call(gw.url, 'POST', '/api/vendors/signer/credentials', ADMIN)).body;
    assert.equal((await signed('GET', '/api/devices', undefined, { keyId: v2.keyId, secret: v2.signingSecret })).status, 200);
    assert.equal((await call(gw.url, 'DELETE', `/api/vendors/signer/credentials/${v2.keyId}`, ADMIN)).status, 204);
    assert.equal((await signed('GET', '/api/devices', undefined, { keyId: v2.keyId, secret: v2.signingSecret })).status, 401);
  });
});
