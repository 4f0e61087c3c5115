/**
 * The audit trail: every administrative action, lifecycle transition, credential event and refused access becomes a
 * FHIR AuditEvent (BALP-shaped, no PHI), kept in Redis, filterable, and optionally forwarded to the EHR.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import type { AuditEvent, Bundle } from 'fhir/r4';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from '../devices/wire.js';
import { validate } from '../../src/fhir/validate.js';

const kindOf = (e: AuditEvent) => e.subtype?.find((s) => s.system === 'urn:iomt-gateway:audit')?.code;
const requestor = (e: AuditEvent) => e.agent.find((a) => a.requestor);

describe('audit trail', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: DmGateway;
  let op: { key: string; keyId: string };
  const audit = async (q: string, key = ADMIN) => {
    const r = await call(gw.url, 'GET', `/api/audit?${q}`, key);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body as Bundle).entry?.map((e) => e.resource as AuditEvent) ?? [];
  };

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, AUDIT_FORWARD: 'true' });
    op = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'auditor' })).body;
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('records each kind of event with its BALP type, action and outcome', async () => {
    await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: 'aud-vendor' });
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'AUD-1', adapter: 'measurements' });
    await call(gw.url, 'POST', '/api/devices/AUD-1/activate', op.key);
    await call(gw.url, 'PUT', '/api/devices/AUD-1/assignment', op.key, { patientId: 'MRN-AUDIT-PHI-77', locationId: 'LOC-1' });
    await call(gw.url, 'PUT', '/api/devices/AUD-1/config', op.key, { samplingIntervalS: 5 });
    const k = (await call(gw.url, 'POST', '/api/devices/AUD-1/credentials', ADMIN)).body;
    const rot = (await call(gw.url, 'POST', `/api/devices/AUD-1/credentials/${k.keyId}/rotate`, ADMIN)).body;
    await call(gw.url, 'DELETE', `/api/devices/AUD-1/credentials/${rot.keyId}`, ADMIN);
    await call(gw.url, 'GET', '/api/devices');
    await call(gw.url, 'GET', '/api/devices', 'gw_0123456789abcdef_notarealkeynotarealkey');
    await call(gw.url, 'POST', '/api/vendors', op.key, { id: 'nope' });
    await call(gw.url, 'POST', '/ingest/measurements', k.key, reading('SOMEONE-ELSE'));
    await call(gw.url, 'POST', '/api/devices/AUD-1/suspend', op.key);
    await call(gw.url, 'POST', '/api/devices/AUD-1/decommission', ADMIN);

    const table: { kind: string; action: string; outcome: string; type: string; who: string; entity: string }[] = [
      { kind: 'vendor-registered', action: 'C', outcome: '0', type: 'rest', who: 'admin:bootstrap-admin', entity: 'aud-vendor' },
      { kind: 'device-registered', action: 'C', outcome: '0', type: 'rest', who: 'admin:bootstrap-admin', entity: 'AUD-1' },
      { kind: 'device-activate', action: 'U', outcome: '0', type: 'rest', who: 'operator:auditor', entity: 'AUD-1' },
      { kind: 'device-assignment', action: 'U', outcome: '0', type: 'rest', who: 'operator:auditor', entity: 'AUD-1' },
      { kind: 'device-config', action: 'U', outcome: '0', type: 'rest', who: 'operator:auditor', entity: 'AUD-1' },
      { kind: 'credential-issued', action: 'C', outcome: '0', type: '110113', who: 'admin:bootstrap-admin', entity: k.keyId },
      { kind: 'credential-rotated', action: 'U', outcome: '0', type: '110113', who: 'admin:bootstrap-admin', entity: k.keyId },
      { kind: 'credential-revoked', action: 'D', outcome: '0', type: '110113', who: 'admin:bootstrap-admin', entity: rot.keyId },
      { kind: 'access-refused', action: 'E', outcome: '4', type: '110114', who: 'anonymous', entity: 'GET /api/devices' },
      { kind: 'access-refused', action: 'E', outcome: '4', type: '110114', who: 'operator:auditor', entity: 'POST /api/vendors' },
      { kind: 'data-refused', action: 'C', outcome: '4', type: '110113', who: 'device:AUD-1', entity: 'SOMEONE-ELSE' },
      { kind: 'device-suspend', action: 'U', outcome: '0', type: 'rest', who: 'operator:auditor', entity: 'AUD-1' },
      { kind: 'device-decommission', action: 'D', outcome: '0', type: 'rest', who: 'admin:bootstrap-admin', entity: 'AUD-1' },
    ];
    const all = await audit('limit=1000');
    for (const t of table) {
      const found = all.filter(
        (e) =>
          kindOf(e) === t.kind &&
          requestor(e)?.who?.identifier?.value === t.who &&
          e.entity?.some((en) => en.what?.identifier?.value === t.entity),
      );
      assert.ok(found.length >= 1, `an AuditEvent ${t.kind} by ${t.who} on ${t.entity}`);
      const e = found[0];
      assert.equal(e.action, t.action, t.kind);
      assert.equal(e.outcome, t.outcome, t.kind);
      assert.equal(e.type.code, t.type, t.kind);
      assert.ok(Date.parse(e.recorded) > 0);
      assert.equal(e.source.observer.display, 'iomt-fhir-gateway');
      assert.equal(requestor(e)?.network?.address?.replace('::ffff:', ''), '127.0.0.1', `${t.kind}: the network address`);
      assert.deepEqual(validate(e), [], `${t.kind}: a valid FHIR AuditEvent`);
    }
    assert.ok(
      all.some((e) => kindOf(e) === 'access-refused' && /invalid credential/.test(e.outcomeDesc ?? '')),
      'a bad key is recorded as such',
    );
  });

  it('filters by action, agent, entity, kind, outcome and date', async () => {
    const before = new Date(Date.now() - 1000).toISOString();
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'AUD-F' });
    await call(gw.url, 'POST', '/api/devices/AUD-F/activate', op.key);
    const byEntity = await audit('entity=AUD-F');
    assert.deepEqual(byEntity.map(kindOf).sort(), ['device-activate', 'device-registered']);
    assert.ok((await audit('agent=auditor&entity=AUD-F')).every((e) => requestor(e)?.who?.identifier?.value === 'operator:auditor'));
    assert.equal((await audit('agent=operator:auditor&entity=AUD-F')).length, 1);
    assert.ok((await audit('action=D')).every((e) => e.action === 'D'));
    assert.ok((await audit('outcome=4')).every((e) => e.outcome === '4'));
    assert.equal((await audit(`entity=AUD-F&since=${encodeURIComponent(before)}`)).length, 2);
    assert.equal((await audit(`entity=AUD-F&until=${encodeURIComponent(before)}`)).length, 0);
    assert.equal((await audit('kind=device-activate&entity=AUD-F', op.key)).length, 1, 'operators read the trail');
    assert.equal((await call(gw.url, 'GET', '/api/audit?since=yesterday', ADMIN)).status, 400);
  });

  it('holds no PHI: the assigned patient appears in no AuditEvent', async () => {
    const client = new IORedis.default(redis.url);
    try {
      const raw = await client.zrange('gw:audit', 0, -1);
      assert.ok(raw.length > 10);
      assert.ok(!raw.some((s) => s.includes('MRN-AUDIT-PHI-77')));
    } finally {
      client.disconnect();
    }
  });

  it('AUDIT_FORWARD=true: AuditEvents reach the EHR through the delivery queue', async () => {
    await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'AUD-FWD' });
    const found = await eventually(
      async () => {
        const es = await ehr.search<AuditEvent>('AuditEvent', { _count: '1000' });
        return es.find((e) => e.entity?.some((en) => en.what?.identifier?.value === 'AUD-FWD'));
      },
      20000,
      'the AuditEvent in the EHR',
    );
    assert.equal(kindOf(found), 'device-registered');
  });
});
