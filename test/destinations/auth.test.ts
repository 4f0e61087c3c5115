/**
 * Destinations of a DESTINATIONS_FILE authenticate each in its own way: SMART Backend Services with the destination's
 * key file (published in the gateway's JWKS), and OAuth2 client credentials with a secret read from the environment,
 * each against its own EHR that demands it. And the file's auth entries are validated with every error listed.
 */
import { strict as assert } from 'node:assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadGatewayConfig } from '../../src/app/features.js';
import { ConfigError } from '../../src/config/index.js';
import { eventually, postJson, startGateway, startRedis, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { type AuthEhr, DELIVERY_SCOPES_V2, reading, startAuthEhr, tempDir, writeKey } from '../ehr/helpers.js';

describe('destinations: each with its own authentication', function () {
  this.timeout(90000);
  let redis: TestRedis;
  let smartEhr: AuthEhr;
  let secretEhr: AuthEhr;
  let gw: TestGateway | undefined;
  before(async () => {
    redis = await startRedis();
    smartEhr = await startAuthEhr();
    secretEhr = await startAuthEhr();
  });
  after(async () => {
    await gw?.stop();
    await smartEhr?.stop();
    await secretEhr?.stop();
    await redis?.stop();
  });

  it('SMART with the destination key file on one EHR, a client secret from the environment on the other', async () => {
    const dir = tempDir('gw-dest-auth-');
    const key = writeKey(dir, 'research.pem');
    const file = join(dir, 'destinations.json');
    writeFileSync(
      file,
      JSON.stringify({
        destinations: [
          {
            name: 'ehr',
            baseUrl: smartEhr.url,
            auth: { type: 'smart', clientId: 'iomt-gateway', keys: [key], scopes: DELIVERY_SCOPES_V2 },
          },
          {
            name: 'research',
            baseUrl: secretEhr.url,
            auth: {
              type: 'client-secret',
              clientId: 'research-client',
              clientSecretEnv: 'RESEARCH_SECRET',
              authMethod: 'post',
              scopes: DELIVERY_SCOPES_V2.split(' '),
            },
          },
        ],
      }),
    );
    secretEhr.sandbox.auth!.register({ id: 'research-client', secret: 'research s3cret', scope: DELIVERY_SCOPES_V2.split(' ') });
    gw = await startGateway({
      REDIS_URL: redis.url,
      DESTINATIONS_FILE: file,
      UNKNOWN_PATIENT_POLICY: 'create',
      RESEARCH_SECRET: 'research s3cret',
    });
    // The destination's key is published: the SMART EHR verifies the assertion against the gateway's JWKS URL.
    const jwks = await (await fetch(`${gw.url}/.well-known/jwks.json`)).json();
    assert.equal(jwks.keys.length, 1);
    smartEhr.sandbox.auth!.register({
      id: 'iomt-gateway',
      jwksUrl: `${gw.url}/.well-known/jwks.json`,
      scope: DELIVERY_SCOPES_V2.split(' '),
    });

    assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('DEST-AUTH-1'))).status, 202);
    await eventually(async () => (await smartEhr.search('Observation')).length === 1, 30000, 'delivered to the SMART EHR');
    await eventually(async () => (await secretEhr.search('Observation')).length === 1, 30000, 'delivered to the client-secret EHR');
    assert.ok(smartEhr.tokenAuth.length >= 1 && smartEhr.tokenAuth.every((a) => a === jwks.keys[0].kid), 'signed with the file key');
    assert.ok(secretEhr.tokenAuth.length >= 1 && secretEhr.tokenAuth.every((a) => a === 'post'), 'client_secret_post');
    assert.equal(smartEhr.tokenRefusals.length + secretEhr.tokenRefusals.length, 0);
  });

  it("lists every error of the file's auth entries", () => {
    const dir = tempDir('gw-dest-auth-');
    const file = join(dir, 'destinations.json');
    writeFileSync(
      file,
      JSON.stringify({
        destinations: [
          { name: 'a', baseUrl: 'https://a.example.org/fhir', auth: { type: 'smart', keys: [join(dir, 'missing.pem')], alg: 'HS256' } },
          {
            name: 'b',
            baseUrl: 'https://b.example.org/fhir',
            auth: { type: 'client-secret', clientId: 'b', clientSecretEnv: 'UNSET_SECRET_VAR', scopes: 'system/Observation.c' },
          },
          { name: 'c', baseUrl: 'https://c.example.org/fhir', auth: { type: 'none', tls: { cert: join(dir, 'cert.pem'), color: 'blue' } } },
        ],
      }),
    );
    try {
      loadGatewayConfig({ DESTINATIONS_FILE: file });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      const text = err.errors.join('\n');
      for (const m of [
        /destinations\[0\]\.auth\.clientId is required/,
        /destinations\[0\]\.auth\.keys: .*missing\.pem does not exist/,
        /destinations\[0\]\.auth\.scopes is required/,
        /destinations\[0\]\.auth\.alg: must be RS384 or ES384/,
        /destinations\[1\]\.auth\.clientSecretEnv: the environment variable UNSET_SECRET_VAR is not set/,
        /destinations\[2\]\.auth\.tls: unknown key 'color'/,
        /destinations\[2\]\.auth\.tls\.cert: the file .*cert\.pem does not exist/,
      ])
        assert.match(text, m);
    }
  });
});
