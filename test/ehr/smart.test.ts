/**
 * SMART Backend Services end to end: a real gateway delivering to a real sandbox EHR that demands it, over HTTP. The
 * sandbox verifies the gateway's client assertions against the gateway's own JWKS URL, or an inline JWKS; tokens are
 * shared, renewed once per expiry, renewed once after a 401; a refusing token endpoint is a retryable failure that
 * loses nothing; no token or key material reaches the logs.
 */
import { strict as assert } from 'node:assert';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import request from 'supertest';
import { type AuthEhr, DELIVERY_SCOPES_V1, DELIVERY_SCOPES_V2, reading, startAuthEhr, tempDir, writeKey } from './helpers.js';
import { loadGatewayKeys } from '../../src/ehr-auth/index.js';
import { eventually, postJson, startGateway, startRedis, type TestGateway, type TestRedis } from '../helpers/harness.js';

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');

describe('EHR authentication: SMART Backend Services, end to end', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: AuthEhr;
  let gw: TestGateway;
  const dir = tempDir();
  const key = writeKey(dir, 'gateway.pem');

  // Each test has its own Redis: no job of one test is delivered in another.
  afterEach(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  const start = async (env: Record<string, string> | ((ehr: AuthEhr) => Record<string, string>) = {}, lifetimeS = 300) => {
    redis = await startRedis();
    ehr = await startAuthEhr({ tokenLifetimeS: lifetimeS });
    if (typeof env === 'function') env = env(ehr);
    gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      FHIR_AUTH: 'smart',
      FHIR_CLIENT_ID: 'iomt-gateway',
      FHIR_SMART_KEYS: key,
      FHIR_SCOPES: DELIVERY_SCOPES_V2,
      ...env,
    });
    return gw;
  };

  it('role all with the delivery thread: one token serves its deliveries and the readiness check', async () => {
    await start({ DELIVERY_THREAD: 'on' });
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('SMART-THREAD-1'));
    assert.equal(r.status, 202);
    await eventually(async () => (await ehr.search('Observation')).length === 1, 20000, 'delivery with a SMART token');
    // /readyz asks the EHR's /metadata through the thread's client: its token, not one of the gateway thread's own.
    const ready = await (await fetch(`${gw.url}/readyz`)).json();
    assert.equal(ready.status, 'ready', JSON.stringify(ready));
    assert.equal(ready.warnings, undefined, JSON.stringify(ready));
    assert.equal(ehr.tokenRequests, 1, 'one token in the process');
  });

  it('delivers with a token got by an assertion the sandbox verified against the gateway JWKS URL (discovered token endpoint)', async () => {
    await start();
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    const jwks = await (await fetch(`${gw.url}/.well-known/jwks.json`)).json();
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0].alg, 'RS384');
    assert.equal(jwks.keys[0].d, undefined, 'public parts only');
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('SMART-URL-1'));
    assert.equal(r.status, 202);
    await eventually(async () => (await ehr.search('Observation')).length === 1, 20000, 'delivery with a SMART token');
    assert.equal(ehr.tokenRequests, 1, 'one token for the whole job');
    assert.ok(ehr.requests.length > 0 && ehr.requests.every((q) => q.token === ehr.issued[0]), 'every FHIR request carried the token');
    assert.ok(gw.logs.some((l) => /EHR token endpoint discovered/.test(l)));
  });

  it('delivers with an inline JWKS at the sandbox, SMART v1 scopes and a configured token URL', async () => {
    await start((e) => ({ FHIR_SCOPES: DELIVERY_SCOPES_V1, FHIR_SMART_ALG: 'RS384', FHIR_TOKEN_URL: e.tokenUrl }));
    const { jwks } = await loadGatewayKeys([key]);
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwks, scope: DELIVERY_SCOPES_V1.split(' ') });
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('SMART-INLINE-1'));
    assert.equal(r.status, 202);
    await eventually(async () => (await ehr.search('Observation')).length === 1, 20000, 'delivery with an inline JWKS');
    assert.ok(!gw.logs.some((l) => /EHR token endpoint discovered/.test(l)), 'FHIR_TOKEN_URL skips discovery');
  });

  it('shares one token among concurrent deliveries and renews it about once per expiry (lifetime 2 s)', async () => {
    await start({ DELIVERY_CONCURRENCY: '16', DELIVERY_BATCH_MAX: '1', FHIR_TIMEOUT_MS: '20000' }, 2);
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    const started = Date.now();
    const total = 60;
    // Three waves over about 6 s, each of 20 readings sent at once: each wave finds the token expired or about to.
    for (let wave = 0; wave < 3; wave++) {
      await Promise.all(
        Array.from({ length: total / 3 }, (_, i) =>
          postJson(`${gw.url}/ingest/measurements`, reading(`LOAD-${wave}-${i}`, 90 + (i % 9), `MRN-LOAD-${wave}-${i}`)),
        ),
      );
      await eventually(async () => (await ehr.search('Observation')).length === ((wave + 1) * total) / 3, 30000, `wave ${wave} delivered`);
      await new Promise((r) => setTimeout(r, 2200));
    }
    const elapsedS = (Date.now() - started) / 1000;
    assert.equal((await ehr.search('Observation')).length, total, 'every reading delivered');
    assert.equal((await request(gw.url).get('/api/dead-letters')).body.total, 0);
    // One per expiry: renewal starts at 75% of the 2 s lifetime, so at most one per 1.5 s, plus the first.
    const bound = Math.ceil(elapsedS / 1.5) + 1;
    assert.ok(
      ehr.tokenRequests <= bound,
      `${ehr.tokenRequests} token requests in ${elapsedS.toFixed(1)} s (bound ${bound}) for ${ehr.requests.length} FHIR requests`,
    );
    assert.ok(ehr.tokenRequests >= 3, `the token was renewed as it expired (${ehr.tokenRequests})`);
    // A herd would be one token request per delivery: 20 at the start of each wave.
    assert.ok(ehr.tokenRequests < total / 3, `${ehr.tokenRequests} token requests for ${total} deliveries`);
  });

  it('after a 401 from the FHIR server, fetches exactly one new token and retries the request once', async () => {
    await start();
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    ehr.fhirFaults.push({
      status: 401,
      match: isTransaction,
      body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] },
    });
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('REVOKED-1'));
    assert.equal(r.status, 202);
    await eventually(async () => (await ehr.search('Observation')).length === 1, 20000, 'delivery after the 401');
    assert.equal(ehr.tokenRequests, 2, 'the first token, and one after the 401');
    const transactions = ehr.requests.filter(isTransaction);
    assert.equal(transactions.length, 2, 'the refused transaction and its one retry');
    assert.equal(transactions[0].token, ehr.issued[0]);
    assert.equal(transactions[1].token, ehr.issued[1], 'the retry carried the new token');
    const job = await gw.gateway.queue!.bull.getJob(r.body.jobIds[0]);
    await eventually(async () => (await job?.getState()) === 'completed', 10000, 'completed');
    assert.equal((await gw.gateway.queue!.bull.getJob(r.body.jobIds[0]))?.attemptsMade, 0, 'no job retry was needed');
  });

  it('a 401 with the fresh token too is a retryable failure: the job is retried later, not dead-lettered', async () => {
    await start();
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    for (let i = 0; i < 2; i++) ehr.fhirFaults.push({ status: 401, match: isTransaction });
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('REVOKED-2'));
    assert.equal(r.status, 202);
    await eventually(async () => (await ehr.search('Observation')).length === 1, 20000, 'delivery on a later attempt');
    assert.equal((await request(gw.url).get('/api/dead-letters')).body.total, 0);
    assert.ok(gw.logs.some((l) => /will retry/.test(l) && /HTTP 401 with a fresh access token/.test(l)));
  });

  it('a token endpoint that refuses (400, then 401) or is down is a retryable failure naming the destination; the reading is delivered once it recovers', async () => {
    await start({ DELIVERY_ATTEMPTS: '20' });
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    ehr.tokenFaults.push(
      { status: 400, body: { error: 'invalid_client', error_description: 'client not yet approved' } },
      { status: 401, body: { error: 'invalid_client' } },
      { status: 503, body: {} },
    );
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('TOKEN-DOWN-1'));
    assert.equal(r.status, 202);
    await eventually(async () => (await ehr.search('Observation')).length === 1, 30000, 'delivery once the token endpoint recovers');
    assert.equal(ehr.tokenFaults.length, 0, 'every refusal was met');
    assert.equal(ehr.requests.filter(isTransaction).length, 1, 'no FHIR request without a token');
    assert.equal((await request(gw.url).get('/api/dead-letters')).body.total, 0, 'nothing dead-lettered');
    const refusal = gw.logs.map((l) => JSON.parse(l)).find((l) => /EHR authentication failed/.test(l.msg) && l.status === 400);
    assert.ok(refusal, 'the refusal is logged');
    assert.equal(refusal.destination, 'ehr');
    assert.match(
      refusal.error,
      /EHR destination 'ehr': the token endpoint .* refused the gateway's credentials: HTTP 400 invalid_client \(client not yet approved\)/,
    );
    assert.ok(
      gw.logs.some((l) => /delivery attempt failed; will retry/.test(l) && /EHR destination 'ehr'/.test(l)),
      'the job failure is retryable',
    );
    assert.equal(gw.gateway.worker !== undefined, true, 'the worker kept running');
  });

  it('writes no access token, assertion, or private key material to the logs', async () => {
    await start({ LOG_LEVEL: 'trace' });
    ehr.sandbox.auth!.register({ id: 'iomt-gateway', jwksUrl: `${gw.url}/.well-known/jwks.json`, scope: DELIVERY_SCOPES_V2.split(' ') });
    ehr.fhirFaults.push({ status: 401, match: isTransaction });
    ehr.tokenFaults.push({ status: 400 });
    await postJson(`${gw.url}/ingest/measurements`, reading('LOGS-1'));
    await eventually(async () => (await ehr.search('Observation')).length === 1, 20000, 'delivery');
    const text = gw.logs.join('\n');
    assert.ok(ehr.issued.length >= 2);
    for (const t of ehr.issued) assert.ok(!text.includes(t), 'an access token is in the logs');
    assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\./.test(text), 'a JWT is in the logs');
    const jwk = createPrivateKey(readFileSync(key, 'utf8')).export({ format: 'jwk' });
    for (const part of [jwk.d, jwk.p, jwk.q] as string[])
      assert.ok(!text.includes(part.slice(0, 24)), 'private key material is in the logs');
    const pemBody = readFileSync(key, 'utf8').split('\n')[1];
    assert.ok(!text.includes(pemBody), 'the PEM is in the logs');
  });
});
