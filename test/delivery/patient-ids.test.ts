/**
 * Patient ids cached by delivery under UNKNOWN_PATIENT_POLICY=reject (delivery/patients.ts) can be stale: a patient
 * merged into another, or deleted and registered again, within the cache's minute. A transaction the EHR refuses for
 * good that referred to a cached id is written again after a fresh search (delivery/attempt.ts). End to end: real
 * Redis, the sandbox EHR over HTTP with faults in front of it (it refuses references to the old id, as a server that
 * checks references does), the gateway's delivery.
 */
import { strict as assert } from 'node:assert';
import type { Bundle, Observation } from 'fhir/r4';
import { eventually, postJson, type Stack, useStack } from '../helpers/harness.js';

const SYSTEM = 'urn:iomt-gateway:patient-id';

const reading = (deviceId: string, mrn: string, minute: number) => ({
  deviceId,
  patientId: mrn,
  timestamp: `2026-12-05T09:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (minute % 10), unit: '%' }],
});

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');
const transactions = (stack: Stack) => stack.ehr.requests.filter(isTransaction).map((r) => r.body as Bundle);
const subjects = (b: Bundle) =>
  (b.entry ?? [])
    .map((e) => e.resource)
    .filter((r): r is Observation => r?.resourceType === 'Observation')
    .map((o) => o.subject?.reference);

async function registerPatient(stack: Stack, mrn: string): Promise<string> {
  const p = await stack.ehr.sandbox.repo.createResource({ resourceType: 'Patient', identifier: [{ system: SYSTEM, value: mrn }] } as never);
  return (p as { id: string }).id;
}

/** The EHR refuses, once, a transaction that refers to `gone` (a server that checks references). */
function refuseReferencesTo(stack: Stack, gone: string): void {
  stack.ehr.faults.push({
    status: 400,
    match: (req) => isTransaction(req) && JSON.stringify(req.body ?? '').includes(`"${gone}"`),
    body: {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'processing', diagnostics: `Resource ${gone} not found, specified in path: Observation.subject` }],
    },
  });
}

const observationAt = (stack: Stack, minute: number) =>
  eventually(
    async () =>
      (await stack.ehr.search<Observation>('Observation', { _count: '100' })).find((o) =>
        o.effectiveDateTime?.includes(`09:${String(minute).padStart(2, '0')}`),
      ),
    20_000,
    `the reading of minute ${minute} at the EHR`,
  );

const deadLetters = async (stack: Stack) =>
  (await (await fetch(`${stack.gw.url}/api/dead-letters`)).json()) as { total: number; items: { kind: string; reason: string }[] };

describe('delivery: a stale cached patient id (UNKNOWN_PATIENT_POLICY=reject, end to end)', function () {
  this.timeout(60_000);
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'reject' });

  it('a patient registered again under a new id: the refused transaction is written again with the new id, nothing is lost', async () => {
    const old = await registerPatient(stack, 'MRN-STALE-1');
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-1', 'MRN-STALE-1', 1))).status, 202);
    assert.equal((await observationAt(stack, 1)).subject?.reference, `Patient/${old}`);
    // Within the cache's minute the patient is deleted and registered again (a merge, a restore): a new id.
    await stack.ehr.sandbox.repo.deleteResource('Patient', old);
    const now = await registerPatient(stack, 'MRN-STALE-1');
    refuseReferencesTo(stack, `Patient/${old}`);
    const searchesBefore = stack.ehr.requests.filter((r) => r.method === 'GET' && r.path === '/Patient').length;
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-1', 'MRN-STALE-1', 2))).status, 202);
    const obs = await observationAt(stack, 2);
    assert.equal(obs.subject?.reference, `Patient/${now}`);
    assert.equal(stack.ehr.faults.length, 0, 'the EHR refused the transaction that referred to the old id');
    const [refused, again] = transactions(stack).slice(-2);
    assert.deepEqual(subjects(refused), [`Patient/${old}`], 'the first transaction used the cached id');
    assert.deepEqual(subjects(again), [`Patient/${now}`], 'written again with the id a fresh search found');
    assert.equal(
      stack.ehr.requests.filter((r) => r.method === 'GET' && r.path === '/Patient').length - searchesBefore,
      1,
      'one fresh search',
    );
    assert.equal((await deadLetters(stack)).total, 0, 'no dead letter');
    // The new id is cached: the next reading refers to it without a search.
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-1', 'MRN-STALE-1', 3))).status, 202);
    assert.equal((await observationAt(stack, 3)).subject?.reference, `Patient/${now}`);
    assert.equal(stack.ehr.requests.filter((r) => r.method === 'GET' && r.path === '/Patient').length - searchesBefore, 1);
  });

  it('a patient deleted and not registered again: the reading is a dead letter of the policy, not of the refusal', async () => {
    const old = await registerPatient(stack, 'MRN-STALE-2');
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-2', 'MRN-STALE-2', 10))).status, 202);
    await observationAt(stack, 10);
    await stack.ehr.sandbox.repo.deleteResource('Patient', old);
    refuseReferencesTo(stack, `Patient/${old}`);
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-2', 'MRN-STALE-2', 11))).status, 202);
    const dead = await eventually(
      async () => ((await deadLetters(stack)).total === 1 ? deadLetters(stack) : undefined),
      20_000,
      'the dead letter',
    );
    assert.equal(dead.items[0].kind, 'policy');
    assert.match(dead.items[0].reason, /knows no patient/);
    assert.equal(stack.ehr.faults.length, 0);
  });

  it('readings that shared a refused transaction: each is written again with the new id, nothing is lost', async () => {
    const deadBefore = (await deadLetters(stack)).total;
    const old = await registerPatient(stack, 'MRN-STALE-3');
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-3', 'MRN-STALE-3', 20))).status, 202);
    await observationAt(stack, 20);
    await stack.ehr.sandbox.repo.deleteResource('Patient', old);
    const now = await registerPatient(stack, 'MRN-STALE-3');
    refuseReferencesTo(stack, `Patient/${old}`);
    // Two readings of two devices in one request: one job, written in one transaction.
    const both = [reading('PATIDS-3', 'MRN-STALE-3', 21), reading('PATIDS-4', 'MRN-STALE-3', 22)];
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, both)).status, 202);
    for (const minute of [21, 22]) assert.equal((await observationAt(stack, minute)).subject?.reference, `Patient/${now}`);
    const [refused, again] = transactions(stack).slice(-2);
    assert.deepEqual(subjects(refused), [`Patient/${old}`, `Patient/${old}`], 'one shared transaction with the cached id');
    assert.deepEqual(subjects(again), [`Patient/${now}`, `Patient/${now}`], 'written again, shared, with the new id');
    assert.equal((await deadLetters(stack)).total, deadBefore, 'no dead letter');
  });

  it('one of two patients of a shared transaction gone: its reading is the policy dead letter, the other is written', async () => {
    const deadBefore = (await deadLetters(stack)).total;
    const goneId = await registerPatient(stack, 'MRN-STALE-5');
    const keptId = await registerPatient(stack, 'MRN-STALE-6');
    // Both ids cached.
    const first = [reading('PATIDS-5', 'MRN-STALE-5', 30), reading('PATIDS-6', 'MRN-STALE-6', 31)];
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, first)).status, 202);
    for (const minute of [30, 31]) await observationAt(stack, minute);
    await stack.ehr.sandbox.repo.deleteResource('Patient', goneId);
    refuseReferencesTo(stack, `Patient/${goneId}`);
    const both = [reading('PATIDS-5', 'MRN-STALE-5', 32), reading('PATIDS-6', 'MRN-STALE-6', 33)];
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, both)).status, 202);
    assert.equal((await observationAt(stack, 33)).subject?.reference, `Patient/${keptId}`);
    const dead = await eventually(
      async () => {
        const d = await deadLetters(stack);
        return d.total === deadBefore + 1 ? d : undefined;
      },
      20_000,
      'the dead letter',
    );
    assert.equal(dead.items[0].kind, 'policy');
    assert.match(dead.items[0].reason, /knows no patient/);
    const atMinute32 = (await stack.ehr.search<Observation>('Observation', { _count: '100' })).filter((o) =>
      o.effectiveDateTime?.includes('09:32'),
    );
    assert.deepEqual(atMinute32, [], 'nothing written for the patient that is gone');
  });

  it('a shared transaction refused for its content: the patients searched again are not searched a third time', async () => {
    const deadBefore = (await deadLetters(stack)).total;
    const id = await registerPatient(stack, 'MRN-STALE-7');
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('PATIDS-7', 'MRN-STALE-7', 40))).status, 202);
    await observationAt(stack, 40);
    // The EHR refuses every transaction that carries the reading of value 77 (its content), whatever its patient.
    const bad = { ...reading('PATIDS-7', 'MRN-STALE-7', 41), measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 77, unit: '%' }] };
    const carriesBad = (req: { method: string; path: string; body?: unknown }) =>
      isTransaction(req) && JSON.stringify(req.body ?? '').includes('"value":77');
    for (let i = 0; i < 10; i++)
      stack.ehr.faults.push({
        status: 422,
        match: carriesBad,
        body: { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'refused for its content' }] },
      });
    const searches = () => stack.ehr.requests.filter((r) => r.method === 'GET' && r.path === '/Patient').length;
    const before = searches();
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, [bad, reading('PATIDS-8', 'MRN-STALE-7', 42)])).status, 202);
    assert.equal((await observationAt(stack, 42)).subject?.reference, `Patient/${id}`);
    await eventually(async () => (await deadLetters(stack)).total === deadBefore + 1, 20_000, 'the dead letter');
    // Shared with the cached id (refused), shared again after one search (refused), then the bad reading alone (refused):
    // its id was searched in this attempt, so it is not taken for stale and searched and written once more.
    assert.equal(stack.ehr.requests.filter(carriesBad).length, 3);
    assert.equal(searches() - before, 1, 'one search');
  });
});
