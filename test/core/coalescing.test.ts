/**
 * Group commit: jobs that arrive while a transaction is in flight leave together in the next one. Real Redis, the real
 * sandbox EHR over HTTP; the first transaction is held at the EHR so that the jobs behind it pile up.
 */
import { strict as assert } from 'node:assert';
import request from 'supertest';
import type { Device, Observation, Patient } from 'fhir/r4';
import { eventually, postJson, useStack } from '../helpers/harness.js';

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');
const naming = (text: string) => (req: { method: string; path: string; body?: unknown }) =>
  isTransaction(req) && JSON.stringify(req.body ?? '').includes(text);

const reading = (deviceId: string, patientId: string, value: number, timestamp = '2026-11-23T12:00:00Z') => ({
  deviceId,
  patientId,
  timestamp,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

describe('delivery: jobs that arrive together share a transaction', function () {
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create', DELIVERY_TRANSACTIONS: '1', DELIVERY_BATCH_MAX: '25' });

  let held = 0;
  /** Posts one reading whose transaction the EHR holds, then `messages` (one request each) while it is held. */
  async function behindAHeldTransaction(messages: unknown[]): Promise<string[]> {
    let open = () => undefined as void;
    stack.ehr.faults.unshift({ status: 200, gate: new Promise<void>((r) => (open = r)), match: naming('HOLD-1') });
    // A new value each time: the same content again would be the same (already completed) job.
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading('HOLD-1', 'MRN-H', 80 + held++))).status, 202);
    await eventually(() => stack.ehr.requests.some(isTransaction), 10000, 'the first transaction reached the EHR');
    const ids: string[] = [];
    for (const m of messages) {
      const r = await postJson(`${stack.gw.url}/ingest/measurements`, m);
      assert.equal(r.status, 202);
      ids.push(...(r.body.jobIds as string[]));
    }
    // Every job has reached the worker (active in the queue, waiting in the coalescer behind the held transaction):
    // now let that transaction finish.
    const jobs = new Set(ids).size + 1;
    await eventually(async () => (await stack.gw.gateway.queue!.counts()).active >= jobs, 10000, 'the worker to hold every job');
    open();
    return ids;
  }

  const sixReadings = () => [
    reading('CO-1', 'MRN-C', 91),
    reading('CO-1', 'MRN-C', 92, '2026-11-23T12:00:01Z'),
    reading('CO-2', 'MRN-C', 93),
    reading('CO-3', 'MRN-D', 94),
    reading('CO-4', 'MRN-D', 95),
    // The same observation identity (device, code, time) as the first reading, with another value: it must not become
    // a second Observation.
    reading('CO-1', 'MRN-C', 97),
  ];

  for (const shape of ['six messages (six jobs)', 'one message of six readings (one job)']) {
    it(`writes each device, patient and observation once, and completes every job: ${shape}`, async () => {
      const readings = sixReadings();
      const ids = await behindAHeldTransaction(shape.startsWith('six') ? readings : [readings]);
      assert.equal(ids.length, shape.startsWith('six') ? 6 : 1);
      await eventually(
        async () => {
          const states = await Promise.all(ids.map(async (id) => (await stack.gw.gateway.queue!.bull.getJob(id))?.getState()));
          return states.every((s) => s === 'completed');
        },
        20000,
        'every job completed',
      );
      const observations = await stack.ehr.search<Observation>('Observation', { _count: '100' });
      assert.equal(observations.length, 6, 'held reading + 5 distinct readings');
      const devices = await stack.ehr.search<Device>('Device', { _count: '100' });
      assert.deepEqual(devices.map((d) => d.identifier?.[0]?.value).sort(), ['CO-1', 'CO-2', 'CO-3', 'CO-4', 'HOLD-1']);
      const patients = await stack.ehr.search<Patient>('Patient', { _count: '100' });
      assert.deepEqual(patients.map((p) => p.identifier?.[0]?.value).sort(), ['MRN-C', 'MRN-D', 'MRN-H']);
      const transactions = stack.ehr.requests.filter(isTransaction).length;
      assert.ok(transactions <= 3, `readings shared transactions (${transactions} transactions for 7 readings)`);
      // Every observation references its own device and patient.
      const deviceIds = new Map(devices.map((d) => [`Device/${d.id}`, d.identifier?.[0]?.value]));
      const patientIds = new Map(patients.map((p) => [`Patient/${p.id}`, p.identifier?.[0]?.value]));
      const pairs = observations
        .map((o) => `${deviceIds.get(o.device?.reference ?? '')}:${patientIds.get(o.subject?.reference ?? '')}`)
        .sort();
      assert.deepEqual(pairs, ['CO-1:MRN-C', 'CO-1:MRN-C', 'CO-2:MRN-C', 'CO-3:MRN-D', 'CO-4:MRN-D', 'HOLD-1:MRN-H']);
      assert.match((await request(stack.gw.url).get('/metrics')).text, /delivery_transaction_readings_total\S* \d+/);
    });
  }

  for (const shape of ['three messages', 'one message of three readings']) {
    it(`when the EHR refuses a shared transaction, writes each reading alone: only the refused one is a dead letter (${shape})`, async () => {
      const refusal = {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'business-rule', diagnostics: 'device BAD-1 is recalled' }],
      };
      // Refused twice: once inside the shared transaction, once alone.
      stack.ehr.faults.push({ status: 422, body: refusal, match: naming('BAD-1') }, { status: 422, body: refusal, match: naming('BAD-1') });
      const readings = [reading('OK-1', 'MRN-E', 91), reading('BAD-1', 'MRN-E', 92), reading('OK-2', 'MRN-F', 93)];
      const single = shape.startsWith('one');
      const ids = await behindAHeldTransaction(single ? [readings] : readings);
      const dead = await eventually(
        async () => {
          const l = await request(stack.gw.url).get('/api/dead-letters');
          return l.body.total === 1 ? l.body.items[0] : undefined;
        },
        20000,
        'one dead letter',
      );
      // A reading of a job of several is its own dead letter (the job completes with the others).
      assert.equal(dead.id, single ? `${ids[0]}.1` : ids[1]);
      assert.equal(dead.jobId, single ? ids[0] : ids[1]);
      assert.equal(dead.kind, 'rejected');
      assert.equal(dead.httpStatus, 422);
      assert.deepEqual(dead.outcome, refusal);
      assert.deepEqual(dead.summary, { readings: 1, devices: 1, observations: 1, patients: 0, codes: ['2708-6'] });
      await eventually(
        async () => (await stack.ehr.search<Observation>('Observation', { _count: '100' })).length === 3,
        20000,
        'the other readings delivered',
      );
      const devices = (await stack.ehr.search<Device>('Device', { _count: '100' })).map((d) => d.identifier?.[0]?.value).sort();
      assert.deepEqual(devices, ['HOLD-1', 'OK-1', 'OK-2']);
      assert.equal(stack.ehr.faults.length, 0, 'the shared transaction and the lone one were both refused');
      // The job completed with the others and left the queue, so that a resend of the message would be a new job.
      if (single)
        await eventually(async () => (await stack.gw.gateway.queue!.bull.getJob(ids[0])) === null, 10000, 'the job left the queue');

      // The cause is fixed: the replayed dead letter delivers the refused reading.
      await request(stack.gw.url).post(`/api/dead-letters/${dead.id}/retry`).expect(202);
      await eventually(
        async () => (await stack.ehr.search<Observation>('Observation', { _count: '100' })).length === 4,
        20000,
        'the replayed reading delivered',
      );
      assert.equal((await request(stack.gw.url).get('/api/dead-letters')).body.total, 0);
    });
  }

  it('a reading the EHR keeps failing (503) costs the jobs it shared a transaction with one attempt; only it is given up', async () => {
    // Every transaction that carries POISON-1 answers 503: the shared first attempt, the retries (the job alone, one
    // transaction) and, on the last attempt, the reading alone.
    for (let i = 0; i < 20; i++) stack.ehr.faults.push({ status: 503, match: naming('POISON-1') });
    const message = [reading('GOOD-A', 'MRN-G', 91), reading('POISON-1', 'MRN-G', 92), reading('GOOD-B', 'MRN-G', 93)];
    const ids = await behindAHeldTransaction([message, reading('INNOCENT-1', 'MRN-I', 94)]);
    assert.equal(ids.length, 2);
    const innocent = await eventually(
      async () => {
        const j = await stack.gw.gateway.queue!.bull.getJob(ids[1]);
        return (await j?.getState()) === 'completed' ? j : undefined;
      },
      20000,
      'the innocent job delivered',
    );
    assert.ok(innocent!.attemptsMade <= 1, `the innocent job failed only the shared attempt (${innocent!.attemptsMade})`);
    const dead = await eventually(
      async () => {
        const l = await request(stack.gw.url).get('/api/dead-letters');
        return l.body.total === 1 ? l.body.items[0] : undefined;
      },
      30000,
      'the poison reading given up',
    );
    assert.equal(dead.id, `${ids[0]}.1`);
    assert.equal(dead.kind, 'exhausted');
    const devices = (await stack.ehr.search<Device>('Device', { _count: '100' })).map((d) => d.identifier?.[0]?.value).sort();
    assert.deepEqual(devices, ['GOOD-A', 'GOOD-B', 'HOLD-1', 'INNOCENT-1']);
    await request(stack.gw.url).delete(`/api/dead-letters/${dead.id}`).expect(204);
  });

  it('an EHR that is down at the last attempt gets three readings one by one, not all of them; the job is one dead letter', async () => {
    for (let i = 0; i < 30; i++) stack.ehr.faults.push({ status: 503, match: naming('DOWN-') });
    const message = [1, 2, 3, 4, 5].map((n) => reading(`DOWN-${n}`, 'MRN-X', 90 + n));
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, message);
    assert.equal(r.status, 202);
    const dead = await eventually(
      async () => {
        const l = await request(stack.gw.url).get('/api/dead-letters');
        return l.body.total === 1 ? l.body.items[0] : undefined;
      },
      30000,
      'the job dead-lettered',
    );
    assert.equal(dead.id, r.body.jobIds[0], 'nothing was written: the whole job is the dead letter');
    assert.equal(dead.kind, 'exhausted');
    assert.equal(dead.summary.readings, 5);
    // Six attempts (DELIVERY_ATTEMPTS in the test settings): five transactions of the job, then on the last attempt its
    // transaction and three readings alone.
    assert.equal(30 - stack.ehr.faults.length, 9, 'transactions the EHR was sent');
    await request(stack.gw.url).delete(`/api/dead-letters/${dead.id}`).expect(204);
  });
});
