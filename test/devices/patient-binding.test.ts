/**
 * Patient integrity (issue: a device key could file readings into any patient's chart, in any identifier system):
 * under DEVICE_PATIENT_BINDING=assigned-only (the default) a device credential files readings only for its device's
 * assigned patient, in PATIENT_IDENTIFIER_SYSTEM; a vendor credential may not contradict an assignment; admin and
 * operator credentials are not bound; `any` restores the trust. A refusal is a 403 OperationOutcome, kept in the
 * refusal store and recorded in the audit trail as a security event. Real HTTP, real Redis, the real sandbox EHR.
 */
import { strict as assert } from 'node:assert';
import type { AuditEvent, Observation } from 'fhir/r4';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from './wire.js';

const MRN = 'urn:test:mrn';

describe('patient integrity: DEVICE_PATIENT_BINDING', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  const gws: DmGateway[] = [];
  const start = async (env: Record<string, string> = {}) => {
    const g = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, PATIENT_IDENTIFIER_SYSTEM: MRN, ...env });
    gws.push(g);
    return g;
  };
  /** Registers, activates and (optionally) assigns a device; returns a device key and a vendor key of its vendor. */
  const device = async (gw: DmGateway, id: string, patientId?: string) => {
    await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: 'acme' });
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id, vendor: 'acme', adapter: 'measurements' })).status, 201);
    assert.equal((await call(gw.url, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 200);
    if (patientId) assert.equal((await call(gw.url, 'PUT', `/api/devices/${id}/assignment`, ADMIN, { patientId })).status, 200);
    const key = (await call(gw.url, 'POST', `/api/devices/${id}/credentials`, ADMIN)).body.key as string;
    const vendorKey = (await call(gw.url, 'POST', '/api/vendors/acme/credentials', ADMIN)).body.key as string;
    return { key, vendorKey };
  };
  const ingest = (gw: DmGateway, key: string, body: unknown) => call(gw.url, 'POST', '/ingest/measurements', key, body);

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    for (const g of gws) await g.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  describe('assigned-only (the default)', () => {
    let gw: DmGateway;
    let keys: { key: string; vendorKey: string };
    before(async () => {
      gw = await start({ QUEUE_NAME: 'pb-default' });
      keys = await device(gw, 'PB-1', 'MRN-A');
    });

    it('a device key files readings for its assigned patient, named or filled in', async () => {
      assert.equal((await ingest(gw, keys.key, reading('PB-1', { patientId: 'MRN-A' }, 1))).status, 202);
      const r = await ingest(gw, keys.key, reading('PB-1', { patientId: undefined }, 2));
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const obs = await eventually(
        async () => {
          const found = (await ehr.search<Observation>('Observation', { _count: '100' })).filter(
            (o) => o.effectiveDateTime === '2026-11-23T10:02:00Z',
          );
          return found.length ? found : undefined;
        },
        20000,
        'the filled-in reading',
      );
      assert.equal(obs.length, 1);
      assert.ok(obs[0].subject?.reference || obs[0].subject?.identifier, 'filed for the assigned patient');
    });

    it('a device key naming another patient → 403 that says why (never quoting the patient), kept as a refusal, audited as a security event', async () => {
      const r = await ingest(gw, keys.key, reading('PB-1', { patientId: 'MRN-B' }, 3));
      assert.equal(r.status, 403);
      assert.equal(r.body.resourceType, 'OperationOutcome');
      const text = r.body.issue[0].diagnostics as string;
      assert.match(text, /names another patient than the one device 'PB-1' is assigned to \(DEVICE_PATIENT_BINDING=assigned-only\)/);
      assert.ok(!text.includes('MRN-'), 'no patient identifier in the reason');
      const refusedId = r.headers.get('x-refused-id');
      assert.ok(refusedId, 'kept in the refusal store');
      const kept = await call(gw.url, 'GET', `/api/refusals/${refusedId}`, ADMIN);
      assert.equal(kept.status, 200);
      assert.equal(kept.body.status, 403);
      const audit = await call(gw.url, 'GET', '/api/audit?kind=data-refused&entity=PB-1', ADMIN);
      const events = (audit.body.entry as { resource: AuditEvent }[]).map((e) => e.resource);
      const ev = events.find((e) => /names another patient/.test(e.outcomeDesc ?? ''));
      assert.ok(ev, JSON.stringify(events.map((e) => e.outcomeDesc)));
      assert.equal(ev.type.code, '110113', 'DICOM Security Alert');
      assert.equal(
        (await ehr.search<Observation>('Observation', { _count: '100' })).filter((o) => o.effectiveDateTime === '2026-11-23T10:03:00Z')
          .length,
        0,
      );
    });

    it('a device key naming its patient in another identifier system → 403', async () => {
      const r = await ingest(gw, keys.key, reading('PB-1', { patientId: { system: 'urn:other:mrn', value: 'MRN-A' } }, 4));
      assert.equal(r.status, 403);
      assert.match(
        r.body.issue[0].diagnostics,
        /identifier system 'urn:other:mrn': a device credential files readings in urn:test:mrn only/,
      );
    });

    it('a device key of a device without an assignment may not name a patient', async () => {
      const other = await device(gw, 'PB-2');
      const r = await ingest(gw, other.key, reading('PB-2', { patientId: 'MRN-A' }, 5));
      assert.equal(r.status, 403);
      assert.match(r.body.issue[0].diagnostics, /device 'PB-2' is not assigned to a patient/);
    });

    it('a vendor key may not contradict an assignment, but names the patient of an unassigned device', async () => {
      const r = await ingest(gw, keys.vendorKey, reading('PB-1', { patientId: 'MRN-B' }, 6));
      assert.equal(r.status, 403);
      assert.match(r.body.issue[0].diagnostics, /another patient than the one device 'PB-1' is assigned to/);
      assert.equal((await ingest(gw, keys.vendorKey, reading('PB-1', { patientId: 'MRN-A' }, 7))).status, 202);
      assert.equal((await ingest(gw, keys.vendorKey, reading('PB-2', { patientId: 'MRN-C' }, 8))).status, 202);
    });

    it('an admin key is not bound (people and replays)', async () => {
      assert.equal((await ingest(gw, ADMIN, reading('PB-1', { patientId: 'MRN-D' }, 9))).status, 202);
    });
  });

  it('any: a device key may name any patient (deployments that trust their devices)', async () => {
    const gw = await start({ QUEUE_NAME: 'pb-any', DEVICE_PATIENT_BINDING: 'any' });
    const { key } = await device(gw, 'PB-ANY', 'MRN-A');
    const r = await ingest(gw, key, reading('PB-ANY', { patientId: 'MRN-B' }, 20));
    assert.equal(r.status, 202, JSON.stringify(r.body));
  });

  it('the assignment API refuses a patient id outside the id syntax', async () => {
    const gw = await start({ QUEUE_NAME: 'pb-syntax' });
    await device(gw, 'PB-3');
    const r = await call(gw.url, 'PUT', '/api/devices/PB-3/assignment', ADMIN, { patientId: 'MRN\u0000X' });
    assert.equal(r.status, 400);
    assert.match(r.body.issue[0].diagnostics, /control character/);
  });
});
