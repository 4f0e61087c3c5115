/**
 * The sandbox EHR as a SMART Backend Services authorization server, tried directly over HTTP: each refusal of the
 * token endpoint (an expired assertion, a reused jti, a wrong aud, an unknown kid, a bad signature, an unknown client,
 * a scope not allowed), client secrets, and the scopes enforced on its FHIR routes (v1 and v2, per transaction entry).
 */
import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { readSandboxClients } from '../../src/sandbox/auth.js';
import { accessOf, parseScope, within } from '../../src/sandbox/scopes.js';
import { type AuthEhr, startAuthEhr } from './helpers.js';

const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('sandbox EHR: SMART Backend Services authorization server', function () {
  let ehr: AuthEhr;
  let key: CryptoKey;
  let jwk: JWK;
  const kid = 'k1';

  before(async () => {
    const pair = await generateKeyPair('ES384');
    key = pair.privateKey;
    jwk = { ...(await exportJWK(pair.publicKey)), kid, alg: 'ES384' };
    ehr = await startAuthEhr({ tokenLifetimeS: 1 });
    ehr.sandbox.auth!.register({ id: 'client-a', jwks: { keys: [jwk] }, scope: ['system/Observation.cruds', 'system/Patient.read'] });
    ehr.sandbox.auth!.register({ id: 'client-v1', jwks: { keys: [jwk] }, scope: ['system/Observation.write'] });
    ehr.sandbox.auth!.register({ id: 'secret-client', secret: 's3cret:with/odd chars', scope: ['system/*.cruds'] });
  });
  after(() => ehr?.stop());

  const assertion = (claims: { iss?: string; aud?: string; exp?: number; jti?: string; kid?: string } = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const iss = claims.iss ?? 'client-a';
    return new SignJWT({})
      .setProtectedHeader({ alg: 'ES384', kid: claims.kid ?? kid, typ: 'JWT' })
      .setIssuer(iss)
      .setSubject(iss)
      .setAudience(claims.aud ?? ehr.tokenUrl)
      .setIssuedAt(now)
      .setExpirationTime(claims.exp ?? now + 240)
      .setJti(claims.jti ?? randomUUID())
      .sign(key);
  };

  const token = async (form: Record<string, string>, headers: Record<string, string> = {}) => {
    const r = await fetch(ehr.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams({ grant_type: 'client_credentials', ...form }).toString(),
    });
    return { status: r.status, body: (await r.json()) as Record<string, any> };
  };
  const withAssertion = async (a: string, scope = 'system/Observation.c') =>
    token({ client_assertion_type: JWT_BEARER, client_assertion: a, scope });

  it('serves its SMART configuration with the token endpoint', async () => {
    const c = await (await fetch(`${ehr.url}/.well-known/smart-configuration`)).json();
    assert.equal(c.token_endpoint, ehr.tokenUrl);
    assert.ok(c.token_endpoint_auth_methods_supported.includes('private_key_jwt'));
    assert.deepEqual(c.token_endpoint_auth_signing_alg_values_supported, ['RS384', 'ES384']);
  });

  it('issues a short-lived bearer token for a valid assertion, with the granted scopes', async () => {
    const r = await withAssertion(await assertion(), 'system/Observation.c system/Observation.rs');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.token_type, 'bearer');
    assert.equal(r.body.expires_in, 1);
    assert.equal(r.body.scope, 'system/Observation.c system/Observation.rs');
    assert.ok(r.body.access_token.length >= 32);
  });

  const refusals: [string, () => Promise<string>, RegExp][] = [
    ['an expired assertion', () => assertion({ exp: Math.floor(Date.now() / 1000) - 60 }), /has expired/],
    ['a wrong aud', () => assertion({ aud: 'https://elsewhere.example/token' }), /aud must be the token endpoint/],
    ['an unknown kid', () => assertion({ kid: 'not-registered' }), /no key with kid 'not-registered'/],
    ['an exp more than five minutes ahead', () => assertion({ exp: Math.floor(Date.now() / 1000) + 3600 }), /more than five minutes/],
    ['an unknown client', () => assertion({ iss: 'nobody' }), /unknown client 'nobody'/],
  ];
  for (const [what, make, description] of refusals) {
    it(`refuses ${what} with invalid_client and a description`, async () => {
      const r = await withAssertion(await make());
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_client');
      assert.match(r.body.error_description, description);
    });
  }

  it('refuses a reused jti', async () => {
    const jti = randomUUID();
    assert.equal((await withAssertion(await assertion({ jti }))).status, 200);
    const again = await withAssertion(await assertion({ jti }));
    assert.equal(again.status, 400);
    assert.equal(again.body.error, 'invalid_client');
    assert.match(again.body.error_description, /jti .* was used before/);
  });

  it('refuses an assertion signed by another key under a registered kid', async () => {
    const other = await generateKeyPair('ES384');
    const now = Math.floor(Date.now() / 1000);
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES384', kid })
      .setIssuer('client-a')
      .setSubject('client-a')
      .setAudience(ehr.tokenUrl)
      .setExpirationTime(now + 60)
      .setJti(randomUUID())
      .sign(other.privateKey);
    const r = await withAssertion(forged);
    assert.equal(r.body.error, 'invalid_client');
    assert.match(r.body.error_description, /signature does not verify/);
  });

  it('refuses scopes the client may not have (invalid_scope) and grants only the allowed ones', async () => {
    const none = await withAssertion(await assertion(), 'system/Patient.write');
    assert.equal(none.status, 400);
    assert.equal(none.body.error, 'invalid_scope');
    const some = await withAssertion(await assertion(), 'system/Observation.c system/Patient.write');
    assert.equal(some.status, 200);
    assert.equal(some.body.scope, 'system/Observation.c');
  });

  it('client secrets: basic and post; a wrong secret is a 401 invalid_client', async () => {
    const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
    const basic = `Basic ${Buffer.from(`${enc('secret-client')}:${enc('s3cret:with/odd chars')}`).toString('base64')}`;
    const b = await token({ scope: 'system/Observation.c' }, { authorization: basic });
    assert.equal(b.status, 200, JSON.stringify(b.body));
    const p = await token({ client_id: 'secret-client', client_secret: 's3cret:with/odd chars' });
    assert.equal(p.status, 200);
    assert.equal(p.body.scope, 'system/*.cruds', 'no scope requested: every allowed one');
    const wrong = await token({ client_id: 'secret-client', client_secret: 'guess' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error, 'invalid_client');
  });

  describe('the FHIR routes', () => {
    const fhir = (path: string, init: RequestInit & { token?: string } = {}) =>
      fetch(`${ehr.url}${path}`, {
        ...init,
        headers: {
          'content-type': 'application/fhir+json',
          ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
        },
      });
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' } };
    const tokenFor = async (client: string, scope: string) =>
      (await withAssertion(await assertion({ iss: client }), scope)).body.access_token as string;

    it('answer /metadata without a token, and 401 without a token or with an expired one', async () => {
      assert.equal((await fhir('/metadata')).status, 200);
      const none = await fhir('/Observation');
      assert.equal(none.status, 401);
      assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/);
      assert.equal(((await none.json()) as any).resourceType, 'OperationOutcome');
      const t = await tokenFor('client-a', 'system/Observation.rs');
      assert.equal((await fhir('/Observation', { token: t })).status, 200);
      await new Promise((r) => setTimeout(r, 1100)); // the token lives 1 s
      assert.equal((await fhir('/Observation', { token: t })).status, 401);
      assert.equal((await fhir('/Observation', { token: 'made-up' })).status, 401);
    });

    it('403 outside the scopes (v2), per entry of a transaction', async () => {
      const t = await tokenFor('client-a', 'system/Observation.c');
      assert.equal((await fhir('/Observation', { token: t, method: 'POST', body: JSON.stringify(obs) })).status, 201);
      const read = await fhir('/Observation', { token: t });
      assert.equal(read.status, 403);
      assert.match(((await read.json()) as any).issue[0].diagnostics, /search Observation/);
      const bundle = {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [
          { resource: obs, request: { method: 'POST', url: 'Observation' } },
          { resource: { resourceType: 'Patient' }, request: { method: 'PUT', url: 'Patient?identifier=x|1' } },
        ],
      };
      const tx = await fhir('/', { token: t, method: 'POST', body: JSON.stringify(bundle) });
      assert.equal(tx.status, 403);
      assert.match(((await tx.json()) as any).issue[0].diagnostics, /update Patient \(entry 1\)/);
      bundle.entry.pop();
      assert.equal((await fhir('/', { token: t, method: 'POST', body: JSON.stringify(bundle) })).status, 200);
    });

    it('SMART v1 scopes: write allows create, not read', async () => {
      const t = await tokenFor('client-v1', 'system/Observation.write');
      assert.equal((await fhir('/Observation', { token: t, method: 'POST', body: JSON.stringify(obs) })).status, 201);
      assert.equal((await fhir('/Observation', { token: t })).status, 403);
    });
  });
});

describe('sandbox EHR: scopes and client settings', () => {
  it('reads v1 and v2 scopes; a query-narrowed or non-system scope grants nothing', () => {
    assert.deepEqual([...parseScope('system/Observation.write')!.perms].sort(), ['c', 'd', 'u']);
    assert.deepEqual([...parseScope('system/Observation.read')!.perms].sort(), ['r', 's']);
    assert.deepEqual([...parseScope('system/*.cruds')!.perms].sort(), ['c', 'd', 'r', 's', 'u']);
    assert.equal(parseScope('system/Observation.rs?category=vital-signs'), undefined);
    assert.equal(parseScope('patient/Observation.rs'), undefined);
    assert.equal(parseScope('system/Observation.cc'), undefined);
    assert.ok(within('system/Observation.c', ['system/*.write']));
    assert.ok(!within('system/*.c', ['system/Observation.c']));
    assert.ok(!within('system/Observation.cr', ['system/Observation.c']));
  });

  it('maps requests to interactions', () => {
    assert.deepEqual(accessOf('GET', '/Observation?code=x', undefined), [{ type: 'Observation', perm: 's' }]);
    assert.deepEqual(accessOf('GET', '/Observation/1', undefined), [{ type: 'Observation', perm: 'r' }]);
    assert.deepEqual(accessOf('PUT', '/Device?identifier=a|b', undefined), [{ type: 'Device', perm: 'u' }]);
    assert.deepEqual(accessOf('DELETE', '/Device/1', undefined), [{ type: 'Device', perm: 'd' }]);
  });

  it('lists every problem of SANDBOX_SMART_CLIENTS', () => {
    const { errors } = readSandboxClients(
      JSON.stringify({ a: { scope: 'system/*.c' }, b: { jwks_url: 'not a url', secret: 'x', scope: 'system/*.c' }, c: { secret: 'x' } }),
    );
    assert.deepEqual(errors, [
      "SANDBOX_SMART_CLIENTS: client 'a': give exactly one of jwks_url, jwks or secret",
      "SANDBOX_SMART_CLIENTS: client 'b': give exactly one of jwks_url, jwks or secret",
      "SANDBOX_SMART_CLIENTS: client 'b': jwks_url 'not a url' is not a URL",
      `SANDBOX_SMART_CLIENTS: client 'c': "scope" (the scopes it may be granted) is required`,
    ]);
    assert.match(readSandboxClients('{nope').errors[0], /not JSON/);
  });
});
