/**
 * Operations routes refuse what they cannot read instead of falling back to a default that hides the mistake: a
 * replay filter sent as a form (read as no filter, it replayed everything), a non-numeric audit `limit` (NaN: no
 * limit at all) and a non-numeric `limit` of held readings (silently 100).
 */
import { strict as assert } from 'node:assert';
import { startRedis, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startDmGateway, type DmGateway } from '../devices/wire.js';

describe('operations routes refuse parameters they cannot read', () => {
  let redis: TestRedis;
  let gw: DmGateway;
  before(async () => {
    redis = await startRedis();
    gw = await startDmGateway({ REDIS_URL: redis.url });
  });
  after(async () => {
    await gw?.stop();
    await redis?.stop();
  });

  it('POST /api/refusals/replay with a form body is 415 and replays nothing', async () => {
    // One refusal that a filter for another device must not replay.
    const refused = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, { deviceId: 'QV-1', measurements: [] });
    assert.equal(refused.status, 422);
    const form = await call(gw.url, 'POST', '/api/refusals/replay', ADMIN, 'deviceId=SOMETHING-ELSE', 'application/x-www-form-urlencoded');
    assert.equal(form.status, 415);
    assert.equal(form.body.resourceType, 'OperationOutcome');
    const json = await call(gw.url, 'POST', '/api/refusals/replay', ADMIN, { deviceId: 'SOMETHING-ELSE' });
    assert.equal(json.status, 200);
    assert.equal(json.body.matched ?? json.body.total, 0);
  });

  it('GET /api/audit?limit=abc is 400', async () => {
    const r = await call(gw.url, 'GET', '/api/audit?limit=abc', ADMIN);
    assert.equal(r.status, 400);
    assert.equal(r.body.resourceType, 'OperationOutcome');
    assert.equal((await call(gw.url, 'GET', '/api/audit?limit=2', ADMIN)).status, 200);
  });

  it('GET /api/devices/:id/held?limit=abc is 400, as every other list', async () => {
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'QV-2', adapter: 'measurements' })).status, 201);
    const r = await call(gw.url, 'GET', '/api/devices/QV-2/held?limit=abc', ADMIN);
    assert.equal(r.status, 400);
    assert.equal((await call(gw.url, 'GET', '/api/devices/QV-2/held?limit=5', ADMIN)).status, 200);
  });
});
