/**
 * Delivery to the EHR: retries, dead letters, replay, the unknown-patient policy. Real Redis, the real sandbox EHR over
 * HTTP with faults injected in front of it.
 */
import { strict as assert } from 'node:assert';
import request from 'supertest';
import type { Observation } from 'fhir/r4';
import { eventually, postJson, startEhr, startGateway, startRedis, useStack } from '../helpers/harness.js';
import { backoffDelay } from '../../src/delivery/worker.js';
import { EhrError, parseRetryAfter } from '../../src/delivery/ehr-client.js';

const reading = (deviceId: string, patientId = 'MRN-7', value = 96) => ({
  deviceId,
  patientId,
  timestamp: '2026-11-23T11:00:00Z',
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');

describe('delivery: retries, dead letters and replay (end to end)', function () {
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create', DELIVERY_ATTEMPTS: '8' });

  it('retries while the EHR answers 503 and delivers exactly once when it recovers', async () => {
    for (let i = 0; i < 3; i++) stack.ehr.faults.push({ status: 503, match: isTransaction });
    stack.ehr.faults.push({ status: 429, headers: { 'Retry-After': '0' }, match: isTransaction });
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, reading('RETRY-1'));
    assert.equal(r.status, 202);
    await eventually(async () => (await stack.ehr.search('Observation', {})).length === 1, 20000, 'delivery after recovery');
    assert.equal(stack.ehr.faults.length, 0, 'every injected fault was met');
    assert.equal(stack.ehr.requests.filter(isTransaction).length, 5, 'four refused attempts, one success');
    // The EHR has the data a moment before bull marks the job completed.
    await eventually(
      async () => (await (await stack.gw.gateway.queue!.bull.getJob(r.body.jobIds[0]))?.getState()) === 'completed',
      10000,
      'the job completed',
    );
    assert.equal((await stack.ehr.search('Observation', {})).length, 1);
    assert.equal((await request(stack.gw.url).get('/api/dead-letters')).body.total, 0);
  });

  it('survives a transaction that the EHR applied but whose answer was lost (retry is idempotent)', async () => {
    // The EHR applies the first transaction but the gateway times out waiting for the answer: hold it past FHIR_TIMEOUT_MS.
    stack.ehr.faults.push({ status: 200, delayMs: 3500, match: isTransaction });
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, reading('SLOW-1'));
    assert.equal(r.status, 202);
    const job = await eventually(
      async () => {
        const j = await stack.gw.gateway.queue!.bull.getJob(r.body.jobIds[0]);
        return (await j?.getState()) === 'completed' ? j : undefined;
      },
      20000,
      'completion after a timed-out attempt',
    );
    assert.ok(job!.attemptsMade >= 1, 'at least one attempt timed out');
    assert.equal((await stack.ehr.search('Observation', {})).length, 1, 'conditional create: no duplicate');
    assert.equal((await stack.ehr.search('Device', {})).length, 1);
  });

  it('dead-letters a permanent EHR refusal (400) with its OperationOutcome; replay after the fix delivers', async () => {
    const refusal = {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'invariant', diagnostics: 'Observation.subject: patient is merged' }],
    };
    stack.ehr.faults.push({ status: 400, body: refusal, match: isTransaction });
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, reading('DL-1'));
    assert.equal(r.status, 202);
    const list = await eventually(
      async () => {
        const l = await request(stack.gw.url).get('/api/dead-letters');
        return l.body.total === 1 ? l.body : undefined;
      },
      20000,
      'a dead letter',
    );
    const dl = list.items[0];
    assert.equal(dl.kind, 'rejected');
    assert.equal(dl.httpStatus, 400);
    assert.equal(dl.attempts, 1, 'a 4xx is not retried');
    assert.deepEqual(dl.outcome, refusal);
    assert.equal(dl.adapterId, 'measurements');
    assert.deepEqual(dl.summary, { readings: 1, devices: 1, observations: 1, patients: 0, codes: ['2708-6'] });
    assert.equal(stack.ehr.requests.filter(isTransaction).length, 1);
    assert.equal((await stack.ehr.search('Observation', {})).length, 0);
    const full = await request(stack.gw.url).get(`/api/dead-letters/${dl.id}`);
    assert.equal(full.body.job.translations[0].observations.length, 1);

    // Replayed before the cause is fixed: it fails again and is the same dead letter, not a new one.
    stack.ehr.faults.push({ status: 400, body: refusal, match: isTransaction });
    assert.equal((await request(stack.gw.url).post(`/api/dead-letters/${dl.id}/retry`)).status, 202);
    await eventually(async () => stack.ehr.requests.filter(isTransaction).length === 2, 20000, 'the replay to reach the EHR');
    await eventually(
      async () => (await request(stack.gw.url).get(`/api/dead-letters/${dl.id}`)).status === 200,
      20000,
      'the same dead letter back',
    );
    assert.equal((await request(stack.gw.url).get('/api/dead-letters')).body.total, 1, 'one entry, not one per retry');

    // The cause is fixed (no more fault): replay.
    const replay = await request(stack.gw.url).post(`/api/dead-letters/${dl.id}/retry`);
    assert.equal(replay.status, 202);
    await eventually(async () => (await stack.ehr.search('Observation', {})).length === 1, 20000, 'delivery after replay');
    assert.equal((await request(stack.gw.url).get('/api/dead-letters')).body.total, 0);
    assert.equal((await request(stack.gw.url).post(`/api/dead-letters/${dl.id}/retry`)).status, 404);
  });

  it('dead-letters a job whose attempts are exhausted, and deletes a dead letter on request', async () => {
    for (let i = 0; i < 8; i++) stack.ehr.faults.push({ status: 500, match: isTransaction });
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, reading('EXH-1'));
    assert.equal(r.status, 202);
    const list = await eventually(
      async () => {
        const l = await request(stack.gw.url).get('/api/dead-letters');
        return l.body.total === 1 ? l.body : undefined;
      },
      30000,
      'exhausted dead letter',
    );
    assert.equal(list.items[0].kind, 'exhausted');
    assert.equal(list.items[0].attempts, 8);
    assert.equal((await request(stack.gw.url).delete(`/api/dead-letters/${list.items[0].id}`)).status, 204);
    assert.equal((await request(stack.gw.url).get('/api/dead-letters')).body.total, 0);
    assert.equal((await request(stack.gw.url).delete(`/api/dead-letters/${list.items[0].id}`)).status, 404);
  });
});

describe('unknown patient policy', function () {
  it('reject: a reading for a patient the EHR does not know becomes a dead letter; a known patient is referenced', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_PATIENT_POLICY: 'reject' });
    try {
      const known = await ehr.sandbox.repo.createResource({
        resourceType: 'Patient',
        identifier: [{ system: 'urn:iomt-gateway:patient-id', value: 'MRN-KNOWN' }],
      } as never);
      const first = await postJson(`${gw.url}/ingest/measurements`, reading('POL-1', 'MRN-UNKNOWN'));
      assert.equal(first.status, 202, JSON.stringify(first.body));
      assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('POL-2', 'MRN-KNOWN'))).status, 202);
      const dl = await eventually(
        async () => {
          const l = await request(gw.url).get('/api/dead-letters');
          return l.body.total === 1 ? l.body.items[0] : undefined;
        },
        20000,
        'policy dead letter',
      );
      assert.equal(dl.kind, 'policy');
      assert.match(dl.reason, /knows no patient/);
      const obs = await eventually(
        async () => {
          const o = await ehr.search<Observation>('Observation', {});
          return o.length === 1 ? o : undefined;
        },
        20000,
        "the known patient's observation",
      );
      assert.equal(obs[0].subject?.reference, `Patient/${(known as { id: string }).id}`);
      assert.equal((await ehr.search('Patient', {})).length, 1, 'no patient was created');

      // The patient is admitted; the device resends the same reading: it is a new job (the dead-lettered one does
      // not swallow it) and it is delivered.
      await ehr.sandbox.repo.createResource({
        resourceType: 'Patient',
        identifier: [{ system: 'urn:iomt-gateway:patient-id', value: 'MRN-UNKNOWN' }],
      } as never);
      const resent = await postJson(`${gw.url}/ingest/measurements`, reading('POL-1', 'MRN-UNKNOWN'));
      assert.equal(resent.status, 202);
      await eventually(async () => (await ehr.search('Observation', {})).length === 2, 20000, 'the resent reading delivered');

      // One message, one job, two readings: only the reading of the unknown patient becomes a dead letter.
      await request(gw.url).delete(`/api/dead-letters/${dl.id}`).expect(204);
      const mixed = await postJson(`${gw.url}/ingest/measurements`, [
        reading('POL-3', 'MRN-KNOWN', 90),
        reading('POL-4', 'MRN-NOBODY', 91),
      ]);
      assert.equal(mixed.status, 202);
      assert.equal(mixed.body.jobIds.length, 1);
      const part = await eventually(
        async () => {
          const l = await request(gw.url).get('/api/dead-letters');
          return l.body.total === 1 ? l.body.items[0] : undefined;
        },
        20000,
        'the reading of the unknown patient dead-lettered',
      );
      assert.equal(part.id, `${mixed.body.jobIds[0]}.1`);
      assert.equal(part.kind, 'policy');
      await eventually(async () => (await ehr.search('Observation', {})).length === 3, 20000, "the known patient's reading delivered");
      await eventually(async () => (await gw.gateway.queue!.bull.getJob(mixed.body.jobIds[0])) === null, 10000, 'the job left the queue');

      // The patient is admitted and the device resends the message: a new job, and the missing reading is delivered.
      await ehr.sandbox.repo.createResource({
        resourceType: 'Patient',
        identifier: [{ system: 'urn:iomt-gateway:patient-id', value: 'MRN-NOBODY' }],
      } as never);
      const again = await postJson(`${gw.url}/ingest/measurements`, [
        reading('POL-3', 'MRN-KNOWN', 90),
        reading('POL-4', 'MRN-NOBODY', 91),
      ]);
      assert.equal(again.status, 202);
      assert.equal(again.body.jobIds[0], mixed.body.jobIds[0], 'the same content is the same job id');
      await eventually(async () => (await ehr.search('Observation', {})).length === 4, 20000, 'the resent reading delivered');
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});

describe('retry timing rules', () => {
  it('backs off exponentially with jitter, capped, and honours Retry-After (capped)', () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const d = backoffDelay(attempt, new Error('x'), 100, 5000);
      const exp = Math.min(5000, 100 * 2 ** (attempt - 1));
      assert.ok(d >= exp / 2 && d <= exp, `attempt ${attempt}: ${d} in [${exp / 2}, ${exp}]`);
    }
    assert.equal(backoffDelay(1, new EhrError('x', true, 429, undefined, 3000), 100, 5000), 3000);
    assert.equal(backoffDelay(1, new EhrError('x', true, 429, undefined, 60_000), 100, 5000), 5000);
    assert.equal(parseRetryAfter('7'), 7000);
    assert.ok((parseRetryAfter(new Date(Date.now() + 10_000).toUTCString(), Date.now()) ?? 0) > 8000);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});

describe('deduplication is a short window, not the life of the completed job', function () {
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create', DEDUPE_WINDOW_S: '1' });

  it('a resend after the window reaches an EHR that lost the data (a restarted sandbox, a restored EHR); no duplicate in one that kept it', async () => {
    const first = await postJson(`${stack.gw.url}/ingest/measurements`, reading('DEDUP-1'));
    assert.equal(first.status, 202);
    await eventually(async () => (await stack.ehr.search<Observation>('Observation', {})).length === 1, 20000, 'the first delivery');

    // The EHR loses everything; the sender resends until the gateway takes it as new (at the latest one window on).
    stack.ehr.sandbox.clear();
    await eventually(
      async () => {
        const again = await postJson(`${stack.gw.url}/ingest/measurements`, reading('DEDUP-1'));
        assert.equal(again.status, 202);
        return again.body.jobIds[0] !== first.body.jobIds[0];
      },
      20000,
      'a resend after the dedupe window to be a new job',
    );
    await eventually(async () => (await stack.ehr.search<Observation>('Observation', {})).length === 1, 20000, 'the resend delivered');

    // Another resend after the window, to an EHR that has the data: still one Observation (conditional create).
    const ids = new Set<string>();
    await eventually(async () => {
      ids.add((await postJson(`${stack.gw.url}/ingest/measurements`, reading('DEDUP-1'))).body.jobIds[0]);
      return ids.size > 1;
    }, 20000);
    await eventually(
      async () => (await stack.gw.gateway.queue!.counts()).active === 0 && (await stack.gw.gateway.queue!.counts()).waiting === 0,
    );
    assert.equal((await stack.ehr.search<Observation>('Observation', {})).length, 1, 'no duplicate');
  });
});
