/**
 * Refused input (HL7v2 messages included: raw PHI) is deleted by admins only, through /api/refusals and its deprecated
 * aliases alike, as docs/security.md says; operators read and replay, and a replay refused again keeps the entry.
 */
import { strict as assert } from 'node:assert';
import { startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';
import { pcdMessage } from '../hl7v2/helpers.js';

describe('deleting refused input is for admins only', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  const refuseHl7 = async (controlId: string): Promise<string> => {
    const r = await fetch(`${gw.url}/hl7v2`, {
      method: 'POST',
      headers: { 'content-type': 'x-application/hl7-v2+er7', authorization: `Bearer ${ADMIN}` },
      body: pcdMessage(controlId, { pid: false }),
    });
    assert.equal(r.headers.get('x-hl7-ack-code'), 'AE');
    const list = await call(gw.url, 'GET', `/api/refusals?format=hl7v2&controlId=${controlId}`, ADMIN);
    const id = list.body.items?.[0]?.id as string | undefined;
    assert.ok(id, JSON.stringify(list.body));
    return id;
  };

  it('an operator, a vendor and a device get 403 on every delete path; an admin deletes', async () => {
    await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: 'del-vendor' });
    const who = {
      operator: (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'del-op' })).body.key as string,
      vendor: (await call(gw.url, 'POST', '/api/vendors/del-vendor/credentials', ADMIN)).body.key as string,
      device: '',
    };
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'DEL-DEV', adapter: 'measurements' });
    who.device = (await call(gw.url, 'POST', '/api/devices/DEL-DEV/credentials', ADMIN)).body.key as string;

    const hl7 = await refuseHl7('DEL-HL7-1');
    const http = (await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('DEL-HTTP-1', { measurements: [] }))).headers.get(
      'x-refused-id',
    );
    assert.ok(http);
    const paths = [`/api/refusals/${hl7}`, `/api/rejected/${hl7}`, `/api/refusals/${http}`, `/api/refused/${http}`];
    for (const [role, key] of Object.entries(who)) {
      for (const path of paths) assert.equal((await call(gw.url, 'DELETE', path, key)).status, 403, `${role}: DELETE ${path}`);
      assert.equal((await call(gw.url, 'GET', '/api/mqtt/rejected', key)).status, 403, `${role}: MQTT payloads are admin only`);
    }
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${hl7}`, who.operator)).status, 200, 'still there; operators read it');

    const replay = await call(gw.url, 'POST', `/api/refusals/${hl7}/replay`, who.operator);
    assert.equal(replay.body.accepted, false, 'refused again');
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${hl7}`, ADMIN)).status, 200, 'a replay refused again keeps the entry');

    assert.equal((await call(gw.url, 'DELETE', `/api/rejected/${hl7}`, ADMIN)).status, 204);
    assert.equal((await call(gw.url, 'DELETE', `/api/refusals/${http}`, ADMIN)).status, 204);
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${hl7}`, ADMIN)).status, 404);
  });
});
