/**
 * The transaction Bundle (src/fhir/transaction.ts), without an EHR. A FHIR server resolves every conditional create of
 * a transaction against what existed before it, so an identity written twice in one bundle becomes two resources:
 * these tests hold the builder to one entry per Device, Patient, Observation and AuditEvent identity, conditional
 * creates with If-None-Exist, urn:uuid references that point at those entries, and the same bundle on every call
 * (a retry or another worker builds the same transaction).
 */
import { strict as assert } from 'node:assert';
import type { AuditEvent, Bundle, BundleEntry, Device, Observation, Patient } from 'fhir/r4';
import type { Reading } from '../../src/core/contract.js';
import { buildBatchTransaction, buildTransaction, type TransactionUnit } from '../../src/fhir/transaction.js';

const DEV = 'urn:test:device';
const MRN = 'urn:test:mrn';
const OBS = 'urn:test:observation';

const device = (value: string): Device => ({ resourceType: 'Device', identifier: [{ system: DEV, value }] });
const observation = (id: string, deviceId: string, mrn: string, value = 96): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  identifier: [{ system: OBS, value: id }],
  code: { coding: [{ system: 'http://loinc.org', code: '2708-6' }] },
  subject: { identifier: { system: MRN, value: mrn } },
  device: { identifier: { system: DEV, value: deviceId } },
  effectiveDateTime: '2026-11-23T12:00:00Z',
  valueQuantity: { value, unit: '%' },
});
const audit = (id?: string): AuditEvent => ({
  resourceType: 'AuditEvent',
  ...(id ? { id } : {}),
  type: { code: 'rest' },
  recorded: '2026-11-23T12:00:00Z',
  agent: [{ requestor: true }],
  source: { observer: { display: 'gateway' } },
});
const adtPatient = (mrn: string): Patient => ({
  resourceType: 'Patient',
  identifier: [{ system: MRN, value: mrn }],
  name: [{ family: 'Doe' }],
});

/** A reading of one device and one patient. */
const reading = (deviceId: string, mrn: string, obsIds: string[], extra: Partial<Reading> = {}): Reading => ({
  devices: [device(deviceId)],
  observations: obsIds.map((id) => observation(id, deviceId, mrn)),
  patient: { system: MRN, value: mrn },
  ...extra,
});
const unit = (jobId: string, t: Reading, patient: TransactionUnit['patient'] = { kind: 'create', system: MRN, value: t.patient!.value }) =>
  ({ jobId, translation: t, patient }) satisfies TransactionUnit;

const entries = (b: Bundle): BundleEntry[] => b.entry ?? [];
const ofType = (b: Bundle, type: string) => entries(b).filter((e) => e.resource?.resourceType === type);
const identity = (e: BundleEntry) => {
  const r = e.resource as { identifier?: { system?: string; value?: string }[]; id?: string };
  return r.identifier?.[0] ? `${r.identifier[0].system}|${r.identifier[0].value}` : (r.id ?? '');
};
const query = (system: string, value: string) => `identifier=${encodeURIComponent(`${system}|${value}`)}`;

interface IdentityCase {
  name: string;
  units: TransactionUnit[];
  /** Identities expected once each, per resource type. */
  expect: Record<string, string[]>;
}

const identityCases: IdentityCase[] = [
  {
    name: 'two jobs of the same device and patient',
    units: [unit('job-1', reading('D1', 'MRN-1', ['O1'])), unit('job-2', reading('D1', 'MRN-1', ['O2']))],
    expect: { Device: [`${DEV}|D1`], Patient: [`${MRN}|MRN-1`], Observation: [`${OBS}|O1`, `${OBS}|O2`] },
  },
  {
    name: 'the same observation identity in two jobs (a resent reading with another value)',
    units: [unit('job-1', reading('D1', 'MRN-1', ['O1'])), unit('job-2', reading('D1', 'MRN-1', ['O1']))],
    expect: { Device: [`${DEV}|D1`], Patient: [`${MRN}|MRN-1`], Observation: [`${OBS}|O1`] },
  },
  {
    name: 'several devices and patients across jobs',
    units: [
      unit('job-1', reading('D1', 'MRN-1', ['O1'])),
      unit('job-2', reading('D2', 'MRN-2', ['O2'])),
      unit('job-3', reading('D2', 'MRN-1', ['O3'])),
    ],
    expect: {
      Device: [`${DEV}|D1`, `${DEV}|D2`],
      Patient: [`${MRN}|MRN-1`, `${MRN}|MRN-2`],
      Observation: [`${OBS}|O1`, `${OBS}|O2`, `${OBS}|O3`],
    },
  },
  {
    name: 'an ADT patient update and a reading of the same patient: the update is the one Patient entry',
    units: [
      unit('job-1', { devices: [], observations: [], patients: [adtPatient('MRN-1')] }, { kind: 'none' }),
      unit('job-2', reading('D1', 'MRN-1', ['O1'])),
    ],
    expect: { Device: [`${DEV}|D1`], Patient: [`${MRN}|MRN-1`], Observation: [`${OBS}|O1`] },
  },
  {
    name: 'the same AuditEvent (by id) in two jobs, and one without an id twice',
    units: [
      unit('job-1', { ...reading('D1', 'MRN-1', ['O1']), auditEvents: [audit('ae-1'), audit()] }),
      unit('job-2', { ...reading('D1', 'MRN-1', ['O2']), auditEvents: [audit('ae-1'), audit()] }),
    ],
    expect: { Device: [`${DEV}|D1`], Patient: [`${MRN}|MRN-1`], Observation: [`${OBS}|O1`, `${OBS}|O2`], AuditEvent: ['ae-1', ''] },
  },
  {
    name: 'a patient already known by id is referenced, not written',
    units: [
      unit('job-1', reading('D1', 'MRN-1', ['O1']), { kind: 'existing', id: 'p-42' }),
      unit('job-2', reading('D1', 'MRN-1', ['O2']), { kind: 'existing', id: 'p-42' }),
    ],
    expect: { Device: [`${DEV}|D1`], Patient: [], Observation: [`${OBS}|O1`, `${OBS}|O2`] },
  },
];

describe('transaction bundles (fhir/transaction.ts)', () => {
  describe('each identity is written once per bundle', () => {
    for (const c of identityCases) {
      it(c.name, () => {
        const b = buildBatchTransaction(c.units);
        assert.equal(b.resourceType, 'Bundle');
        assert.equal(b.type, 'transaction');
        for (const [type, ids] of Object.entries(c.expect)) {
          assert.deepEqual(ofType(b, type).map(identity).sort(), [...ids].sort(), `${type} entries`);
        }
        const types = new Set(entries(b).map((e) => e.resource?.resourceType));
        for (const t of types) assert.ok(t && t in c.expect, `no unexpected ${t} entry`);
      });
    }
  });

  it('conditional creates carry If-None-Exist on the identifier; updates are conditional or by id', () => {
    const b = buildBatchTransaction([
      unit('job-1', reading('D1', 'MRN-1', ['O1'])),
      unit('job-2', { devices: [device('D2')], observations: [], deviceWriteMode: 'update' }, { kind: 'none' }),
      unit('job-3', { devices: [], observations: [], patients: [adtPatient('MRN-9')], auditEvents: [audit('ae-1')] }, { kind: 'none' }),
    ]);
    const request = (type: string, id: string) => entries(b).find((e) => e.resource?.resourceType === type && identity(e) === id)?.request;
    assert.deepEqual(request('Device', `${DEV}|D1`), { method: 'POST', url: 'Device', ifNoneExist: query(DEV, 'D1') });
    assert.deepEqual(request('Patient', `${MRN}|MRN-1`), { method: 'POST', url: 'Patient', ifNoneExist: query(MRN, 'MRN-1') });
    assert.deepEqual(request('Observation', `${OBS}|O1`), { method: 'POST', url: 'Observation', ifNoneExist: query(OBS, 'O1') });
    // A device lifecycle update and ADT demographics replace what the EHR has: conditional updates on the identifier.
    assert.deepEqual(request('Device', `${DEV}|D2`), { method: 'PUT', url: `Device?${query(DEV, 'D2')}` });
    assert.deepEqual(request('Patient', `${MRN}|MRN-9`), { method: 'PUT', url: `Patient?${query(MRN, 'MRN-9')}` });
    // An AuditEvent with an id is an update-as-create on that id: a retried transaction does not record it twice.
    assert.deepEqual(request('AuditEvent', 'ae-1'), { method: 'PUT', url: 'AuditEvent/ae-1' });
    for (const e of entries(b).filter((x) => x.request?.method === 'POST' && x.resource?.resourceType !== 'AuditEvent')) {
      assert.ok(e.request?.ifNoneExist, `${e.resource?.resourceType} ${identity(e)}: a POST is a conditional create`);
    }
  });

  it('a merged observation updates the existing one by id, with If-Match on its version', () => {
    const t = reading('D1', 'MRN-1', ['O1'], { writeMode: 'merge' });
    const merged = new Map([[`${OBS}|O1`, { id: 'obs-7', versionId: '3', resource: observation('O1', 'D1', 'MRN-1', 97) }]]);
    const b = buildTransaction('job-1', t, { kind: 'create', system: MRN, value: 'MRN-1' }, merged);
    const [obs] = ofType(b, 'Observation');
    assert.deepEqual(obs.request, { method: 'PUT', url: 'Observation/obs-7', ifMatch: 'W/"3"' });
    assert.equal(obs.resource?.id, 'obs-7');
  });

  it('references inside the bundle are urn:uuid full URLs of its own entries', () => {
    const b = buildBatchTransaction([
      unit('job-1', reading('D1', 'MRN-1', ['O1', 'O2'])),
      unit('job-2', reading('D2', 'MRN-2', ['O3'])),
      unit('job-3', reading('D1', 'MRN-2', ['O4'])),
      unit('job-4', reading('D3', 'MRN-3', ['O5']), { kind: 'existing', id: 'p-42' }),
    ]);
    const urls = entries(b).map((e) => e.fullUrl ?? '');
    for (const u of urls) assert.match(u, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(new Set(urls).size, urls.length, 'every full URL is unique');
    const urlOf = (type: string, id: string) => entries(b).find((e) => e.resource?.resourceType === type && identity(e) === id)?.fullUrl;
    const expected: Record<string, [device: string, subject: string]> = {
      O1: [urlOf('Device', `${DEV}|D1`)!, urlOf('Patient', `${MRN}|MRN-1`)!],
      O2: [urlOf('Device', `${DEV}|D1`)!, urlOf('Patient', `${MRN}|MRN-1`)!],
      O3: [urlOf('Device', `${DEV}|D2`)!, urlOf('Patient', `${MRN}|MRN-2`)!],
      O4: [urlOf('Device', `${DEV}|D1`)!, urlOf('Patient', `${MRN}|MRN-2`)!],
      O5: [urlOf('Device', `${DEV}|D3`)!, 'Patient/p-42'],
    };
    for (const e of ofType(b, 'Observation')) {
      const o = e.resource as Observation;
      const id = o.identifier![0].value!;
      assert.deepEqual([o.device?.reference, o.subject?.reference], expected[id], `${id} points at its own device and patient`);
    }
    // Every urn:uuid reference anywhere in the bundle resolves to one of its entries.
    const references = JSON.stringify(b).match(/"reference":"urn:uuid:[^"]+"/g) ?? [];
    assert.ok(references.length >= 9);
    for (const r of references) assert.ok(urls.includes(r.slice('"reference":"'.length, -1)), `${r} resolves inside the bundle`);
  });

  it('builds the same bundle on every call (a retry, another worker)', () => {
    const units = () => [
      unit('job-1', { ...reading('D1', 'MRN-1', ['O1', 'O2']), auditEvents: [audit('ae-1')] }),
      unit('job-2', reading('D2', 'MRN-2', ['O3'])),
      unit('job-3', { devices: [], observations: [], patients: [adtPatient('MRN-3')] }, { kind: 'none' }),
    ];
    assert.deepEqual(buildBatchTransaction(units()), buildBatchTransaction(units()));
    const t = reading('D1', 'MRN-1', ['O1']);
    const patient = { kind: 'create', system: MRN, value: 'MRN-1' } as const;
    assert.deepEqual(buildTransaction('job-9', t, patient), buildTransaction('job-9', t, patient));
    // One job's transaction is the batch transaction of that one job.
    assert.deepEqual(buildTransaction('job-9', t, patient), buildBatchTransaction([{ jobId: 'job-9', translation: t, patient }]));
  });

  it('leaves the readings it is given unchanged', () => {
    const t = reading('D1', 'MRN-1', ['O1']);
    const before = structuredClone(t);
    buildBatchTransaction([unit('job-1', t), unit('job-2', reading('D1', 'MRN-1', ['O2']))]);
    assert.deepEqual(t, before);
  });
});
