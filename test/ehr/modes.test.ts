/**
 * The other ways to the EHR, end to end over real HTTP and TLS: client secrets (basic and post), mutual TLS with a
 * private CA (certificates made by openssl in the test), and key rotation for SMART (a second key published, then
 * signing, then the first retired, the gateway restarted on the same JWKS URL at each step: delivery never fails).
 * And the configuration: every error listed at start-up.
 */
import { strict as assert } from 'node:assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import request from 'supertest';
import { loadGatewayConfig } from '../../src/app/features.js';
import { ConfigError } from '../../src/config/index.js';
import { loadGatewayKeys } from '../../src/ehr-auth/index.js';
import { eventually, postJson, startGateway, startRedis, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { type AuthEhr, DELIVERY_SCOPES_V2, freePort, makePki, type Pki, reading, startAuthEhr, tempDir, writeKey } from './helpers.js';

const SCOPES = DELIVERY_SCOPES_V2.split(' ');

describe('EHR authentication: client secrets, mutual TLS, key rotation', function () {
  this.timeout(90000);
  let redis: TestRedis;
  let ehr: AuthEhr | undefined;
  let gw: TestGateway | undefined;

  // Each test has its own Redis: no job of one test is delivered in another.
  beforeEach(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
    gw = undefined;
    ehr = undefined;
  });

  const gatewayEnv = (e: AuthEhr, env: Record<string, string>) => ({
    REDIS_URL: redis.url,
    FHIR_BASE_URL: e.url,
    UNKNOWN_PATIENT_POLICY: 'create',
    ...env,
  });
  const delivered = (e: AuthEhr, n: number, what: string) =>
    eventually(async () => (await e.search('Observation')).length === n, 30000, what);

  for (const method of ['basic', 'post'] as const) {
    it(`client credentials with a client secret (client_secret_${method})`, async () => {
      ehr = await startAuthEhr();
      ehr.sandbox.auth!.register({ id: 'medplum-like', secret: 'a secret/with:odd+chars', scope: SCOPES });
      gw = await startGateway(
        gatewayEnv(ehr, {
          FHIR_AUTH: 'client-secret',
          FHIR_CLIENT_ID: 'medplum-like',
          FHIR_CLIENT_SECRET: 'a secret/with:odd+chars',
          FHIR_CLIENT_AUTH_METHOD: method,
          FHIR_SCOPES: DELIVERY_SCOPES_V2,
        }),
      );
      assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading(`SECRET-${method}`))).status, 202);
      await delivered(ehr, 1, `delivery with client_secret_${method}`);
      assert.deepEqual(ehr.tokenAuth, [method]);
      assert.ok(!gw.logs.join('\n').includes('a secret/with:odd+chars'), 'the secret is not logged');
      assert.equal((await fetch(`${gw.url}/.well-known/jwks.json`)).status, 404, 'no JWKS without keys');
    });
  }

  describe('mutual TLS with a private CA', () => {
    let pki: Pki;
    before(() => {
      pki = makePki();
    });
    const https = () =>
      startAuthEhr(
        {},
        { key: readFileSync(pki.serverKey, 'utf8'), cert: readFileSync(pki.serverCert, 'utf8'), ca: readFileSync(pki.ca, 'utf8') },
      );

    it('delivers with the client certificate (token endpoint and FHIR routes over the same TLS)', async () => {
      ehr = await https();
      ehr.sandbox.auth!.register({ id: 'tls-client', secret: 'tls-secret', scope: SCOPES });
      gw = await startGateway(
        gatewayEnv(ehr, {
          FHIR_AUTH: 'client-secret',
          FHIR_CLIENT_ID: 'tls-client',
          FHIR_CLIENT_SECRET: 'tls-secret',
          FHIR_TLS_CERT: pki.clientCert,
          FHIR_TLS_KEY: pki.clientKey,
          FHIR_TLS_CA: pki.ca,
        }),
      );
      assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('MTLS-1'))).status, 202);
      await delivered(ehr, 1, 'delivery over mutual TLS');
      assert.equal(ehr.tokenAuth.length, 1);
    });

    for (const [what, cert] of [
      ['without a client certificate', undefined],
      ['with a certificate of another CA', 'stranger'],
    ] as const) {
      it(`is refused ${what}: retryable, nothing delivered, nothing dead-lettered`, async () => {
        ehr = await https();
        ehr.sandbox.auth!.register({ id: 'tls-client', secret: 'tls-secret', scope: SCOPES });
        gw = await startGateway(
          gatewayEnv(ehr, {
            FHIR_AUTH: 'client-secret',
            FHIR_CLIENT_ID: 'tls-client',
            FHIR_CLIENT_SECRET: 'tls-secret',
            FHIR_TLS_CA: pki.ca,
            ...(cert ? { FHIR_TLS_CERT: pki.strangerCert, FHIR_TLS_KEY: pki.strangerKey } : {}),
            DELIVERY_ATTEMPTS: '50',
          }),
        );
        assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading(`MTLS-REFUSED-${cert ?? 'none'}`))).status, 202);
        await eventually(() => gw!.logs.filter((l) => /delivery attempt failed; will retry/.test(l)).length >= 2, 20000, 'retries');
        assert.equal(ehr.tokenAuth.length, 0, 'the TLS handshake failed before any request');
        assert.equal(ehr.requests.length, 0);
        assert.equal((await request(gw.url).get('/api/dead-letters')).body.total, 0);
        assert.ok(gw.logs.some((l) => /EHR authentication failed/.test(l) && /EHR destination 'ehr'/.test(l)));
      });
    }
  });

  it('key rotation: publish a second key, sign with it, retire the first; delivery never fails', async () => {
    const dir = tempDir();
    const k1 = writeKey(dir, 'k1.pem');
    const k2 = writeKey(dir, 'k2.pem', 'ec');
    const port = String(await freePort());
    // The sandbox reads the JWKS again at most every 200 ms (an EHR caches it longer: see the procedure in docs/ehr.md).
    ehr = await startAuthEhr({ jwksCacheMaxAgeMs: 200, jwksCooldownMs: 0 });
    ehr.sandbox.auth!.register({ id: 'rotating', jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json`, scope: SCOPES });
    const [kid1, kid2] = await Promise.all([k1, k2].map(async (k) => (await loadGatewayKeys([k])).signing.kid));
    const steps: [string, string, string[]][] = [
      ['k1 alone', k1, [kid1]],
      ['k2 published, k1 signs', `${k1},${k2}`, [kid1, kid2]],
      ['k2 signs, k1 still published', `${k2},${k1}`, [kid2, kid1]],
      ['k1 retired', k2, [kid2]],
    ];
    let n = 0;
    for (const [step, keys, published] of steps) {
      gw = await startGateway(
        gatewayEnv(ehr, {
          PORT: port,
          FHIR_AUTH: 'smart',
          FHIR_CLIENT_ID: 'rotating',
          FHIR_SMART_KEYS: keys,
          FHIR_SCOPES: DELIVERY_SCOPES_V2,
        }),
      );
      const jwks = (await (await fetch(`${gw.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
      assert.deepEqual(
        jwks.keys.map((k) => k.kid),
        published,
        `${step}: the JWKS`,
      );
      await new Promise((r) => setTimeout(r, 250)); // the sandbox's JWKS cache
      assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading(`ROTATE-${n}`, 90 + n))).status, 202);
      n++;
      await delivered(ehr, n, `delivery at step '${step}'`);
      assert.equal(ehr.tokenAuth.at(-1), published[0], `${step}: the first key signs`);
      await gw.stop();
      gw = undefined;
    }
    assert.deepEqual(ehr.tokenRefusals, [], 'the sandbox never refused a token');
  });
});

describe('EHR authentication: a gateway delivering to its own sandbox that demands SMART (docs/ehr.md)', function () {
  this.timeout(60000);
  it('registers itself by a relative JWKS URL and delivers', async () => {
    const redis = await startRedis();
    const key = writeKey(tempDir(), 'self.pem', 'ec');
    const gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: undefined,
      SANDBOX_AUTH: 'smart',
      SANDBOX_SMART_CLIENTS: JSON.stringify({ 'iomt-gateway': { jwks_url: '/.well-known/jwks.json', scope: DELIVERY_SCOPES_V2 } }),
      SANDBOX_TOKEN_LIFETIME_S: '60',
      FHIR_AUTH: 'smart',
      FHIR_CLIENT_ID: 'iomt-gateway',
      FHIR_SMART_KEYS: key,
      FHIR_SCOPES: DELIVERY_SCOPES_V2,
    });
    try {
      assert.equal((await fetch(`${gw.url}/sandbox/fhir/Observation`)).status, 401, 'the sandbox demands a token');
      assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('SELF-1'))).status, 202);
      await eventually(
        async () => ((await gw.gateway.sandbox!.repo.search({ resourceType: 'Observation' })).entry ?? []).length === 1,
        20000,
        'delivery to the own sandbox',
      );
    } finally {
      await gw.stop();
      await redis.stop();
    }
  });

  it('iomt-gateway keys generate writes a key the gateway loads, and refuses to overwrite it', async () => {
    const { spawnSync } = await import('node:child_process');
    const out = join(tempDir(), 'new.pem');
    const run = () =>
      spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', 'keys', 'generate', '--alg', 'ES384', '--out', out], {
        cwd: new URL('../..', import.meta.url).pathname,
        encoding: 'utf8',
      });
    const first = run();
    assert.equal(first.status, 0, first.stderr);
    const keys = await loadGatewayKeys([out]);
    assert.equal(keys.signing.alg, 'ES384');
    assert.match(first.stdout, new RegExp(`kid ${keys.signing.kid}`));
    const again = run();
    assert.equal(again.status, 1);
    assert.match(again.stderr, /does not overwrite/);
  });
});

describe('EHR authentication: configuration', function () {
  const dir = tempDir();

  it('lists every missing or wrong setting at once', () => {
    try {
      loadGatewayConfig({ FHIR_AUTH: 'smart', FHIR_TLS_CERT: join(dir, 'missing.crt'), FHIR_SMART_ALG: 'HS256', SANDBOX_AUTH: 'smart' });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      assert.deepEqual(
        err.errors.sort(),
        [
          'FHIR_CLIENT_ID is required when FHIR_AUTH=smart',
          'FHIR_SCOPES is required when FHIR_AUTH=smart: the scopes to request (e.g. system/Observation.c)',
          "FHIR_SMART_ALG: 'HS256' is not one of RS384, ES384",
          'FHIR_SMART_KEYS is required when FHIR_AUTH=smart: the private key files (PEM or JWK) or a folder of them',
          `FHIR_TLS_CERT and FHIR_TLS_KEY go together: the client certificate and its private key`,
          `FHIR_TLS_CERT: the file ${join(dir, 'missing.crt')} does not exist`,
          'SANDBOX_SMART_CLIENTS is required when SANDBOX_AUTH=smart: the clients the sandbox EHR issues tokens to',
        ].sort(),
      );
    }
    assert.throws(
      () => loadGatewayConfig({ FHIR_AUTH: 'client-secret' }),
      /FHIR_CLIENT_ID is required[\s\S]*FHIR_CLIENT_SECRET is required/,
    );
    assert.throws(() => loadGatewayConfig({ SANDBOX_AUTH: 'smart', SANDBOX_SMART_CLIENTS: '{"x":{}}' }), /client 'x': give exactly one/);
  });

  it('reads keys from files and folders: the first signs, kids are RFC 7638 thumbprints unless the JWK has one', async () => {
    const folder = tempDir();
    writeKey(folder, 'a-current.pem');
    const pem = readFileSync(writeKey(dir, 'b.pem', 'ec'), 'utf8');
    const { createPrivateKey } = await import('node:crypto');
    writeFileSync(join(folder, 'b-next.json'), JSON.stringify({ ...createPrivateKey(pem).export({ format: 'jwk' }), kid: 'next-2027' }));
    writeFileSync(join(folder, 'README.txt'), 'not a key');
    const keys = await loadGatewayKeys([folder]);
    assert.deepEqual(
      keys.all.map((k) => [k.alg, k.source.split('/').pop()]),
      [
        ['RS384', 'a-current.pem'],
        ['ES384', 'b-next.json'],
      ],
    );
    const { d: _d, ...publicJwk } = keys.jwks.keys[0] as Record<string, string>;
    assert.equal(keys.signing.kid, await calculateJwkThumbprint(publicJwk, 'sha256'));
    assert.equal(keys.all[1].kid, 'next-2027');
    assert.ok(
      keys.jwks.keys.every((k) => !('d' in k)),
      'public keys only',
    );
  });

  it('refuses keys that cannot sign, every problem listed; the gateway does not start', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const p256 = join(dir, 'p256.pem');
    writeFileSync(p256, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const short = join(dir, 'short.pem');
    writeFileSync(short, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const pub = join(dir, 'public.pem');
    writeFileSync(pub, generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'pem' }));
    const rsa = writeKey(dir, 'ok.pem');
    await assert.rejects(loadGatewayKeys([p256, short, pub, rsa, rsa]), (err: ConfigError) => {
      assert.equal(err.errors.length, 4, err.errors.join('\n'));
      assert.match(err.errors[0], /p256\.pem: an EC key on prime256v1: ES384 needs the P-384 curve/);
      assert.match(err.errors[1], /short\.pem: an RSA key of 1024 bits is too short/);
      assert.match(err.errors[2], /public\.pem: not a PEM private key nor a JWK/);
      assert.match(err.errors[3], /ok\.pem: the kid .* is taken by another key/);
      return true;
    });
    await assert.rejects(loadGatewayKeys([rsa], 'ES384'), /ES384 cannot sign with this key \(it is a key for RS384\)/);
    await assert.rejects(
      startGateway({ FHIR_AUTH: 'smart', FHIR_CLIENT_ID: 'x', FHIR_SCOPES: 'system/Observation.c', FHIR_SMART_KEYS: p256 }),
      /ES384 needs the P-384 curve/,
    );
  });
});
