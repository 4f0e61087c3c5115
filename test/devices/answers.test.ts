/**
 * Answers that say what happened (issue: misleading answers): held data says it is held, a vendor cannot tell another
 * vendor's device from none, an invalid operator name is refused rather than replaced, role names take their article.
 * Real gateway, real Redis, the sandbox EHR over HTTP.
 */
import { strict as assert } from 'node:assert';
import { startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway } from './wire.js';

describe('answers that say what happened', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'hold' });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('held data answers 202 with held and why, not just readings: 0', async () => {
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('HELD-1'));
    assert.equal(r.status, 202);
    assert.equal(r.body.readings, 0);
    assert.equal(r.body.held, 1);
    assert.equal(r.body.status, 'held');
    assert.match(r.body.detail, /held for review/);
    const queued = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('HELD-1', {}, 1));
    assert.equal(queued.body.held, 1);
  });

  it("a vendor gets the same 404 for another vendor's device as for no device", async () => {
    for (const id of ['acme', 'globex']) assert.equal((await call(gw.url, 'POST', '/api/vendors', ADMIN, { id })).status, 201);
    const globex = (await call(gw.url, 'POST', '/api/vendors/globex/credentials', ADMIN)).body.key as string;
    assert.equal(
      (await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'ACME-DEV-1', vendor: 'acme', adapter: 'measurements', type: 'scale' }))
        .status,
      201,
    );
    const theirs = await call(gw.url, 'GET', '/api/devices/ACME-DEV-1', globex);
    const none = await call(gw.url, 'GET', '/api/devices/NO-SUCH-DEV', globex);
    assert.equal(theirs.status, 404);
    assert.equal(none.status, 404);
    assert.equal(theirs.body.issue[0].diagnostics.replace('ACME-DEV-1', 'X'), none.body.issue[0].diagnostics.replace('NO-SUCH-DEV', 'X'));
  });

  it('refuses an invalid operator name instead of naming the key "operator"; role names take their article', async () => {
    const bad = await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'Dr. Smith <ICU>' });
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body.issue[0].expression, ['name']);
    const ok = await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'night-shift' });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.name, 'night-shift');
    const denied = await call(gw.url, 'POST', '/api/operators/credentials', ok.body.key, { name: 'x' });
    assert.equal(denied.status, 403);
    assert.match(denied.body.issue[0].diagnostics, /^an operator credential may not/);
  });
});

describe('docs/devices.md: the documented vendor and operator bodies work as written', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('POSTs each JSON example of the "Vendors and operators" section and gets the documented answer', async () => {
    const { readFileSync } = await import('node:fs');
    const { REPO_ROOT } = await import('../helpers/harness.js');
    const doc = readFileSync(`${REPO_ROOT}/docs/devices.md`, 'utf8');
    const section = doc.slice(doc.indexOf('## Vendors and operators'), doc.indexOf('## Unknown devices'));
    const examples = [...section.matchAll(/```json\n(POST \S+)\n([\s\S]*?)\n```/g)].map((m) => ({
      path: m[1].slice(5),
      body: JSON.parse(m[2]),
    }));
    assert.deepEqual(
      examples.map((e) => e.path),
      ['/api/vendors', '/api/operators/credentials'],
    );
    for (const e of examples) {
      const r = await call(gw.url, 'POST', e.path, ADMIN, e.body);
      assert.equal(r.status, 201, `${e.path}: ${JSON.stringify(r.body)}`);
    }
    const vendor = (await call(gw.url, 'GET', '/api/vendors', ADMIN)).body.find((v: { id: string }) => v.id === 'acme');
    assert.deepEqual(vendor.adapters, ['measurements']);
    assert.equal(vendor.name, 'Acme Medical');
  });
});
