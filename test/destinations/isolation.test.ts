/**
 * Two destinations, two real sandbox EHRs: each has its own queue, worker and circuit breaker. One down for a while
 * (503 on every request) does not delay the other; once it is back it catches up, and each EHR ends with every reading
 * once (counted by identifier). Readiness, status, metrics and dead letters name the destination.
 */
import { strict as assert } from 'node:assert';
import request from 'supertest';
import { eventually, postJson, type TestEhr } from '../helpers/harness.js';
import { observations, outage, reading, useTwoEhrs } from './helpers.js';

describe('destinations: isolation', function () {
  this.timeout(120_000);
  const s = useTwoEhrs(
    (a, b) => [
      { name: 'ehr', baseUrl: a.url },
      { name: 'research', baseUrl: b.url, auth: { type: 'bearer', token: 'research-token' } },
    ],
    {
      BREAKER_FAILURE_THRESHOLD: '3',
      BREAKER_PROBE_INTERVAL_MS: '200',
      BREAKER_PROBE_MAX_INTERVAL_MS: '1000',
      DELIVERY_ATTEMPTS: '3',
    },
  );
  let bDown = false;

  it('one destination down does not delay the other; it catches up after, nothing lost or duplicated', async () => {
    s.b.faults.push(...outage(() => bDown));
    bDown = true;
    const n = 30;
    for (let i = 0; i < n; i++) {
      const r = await postJson(`${s.gw.url}/ingest/measurements`, reading(`ISO-${i}`, 80 + (i % 15)));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    // The healthy destination delivers everything while the other answers only 503.
    await eventually(async () => (await observations(s.a)).total >= n, 30_000, 'every reading at the healthy destination');
    assert.equal((await observations(s.b)).total, 0, 'nothing reached the destination that is down');
    // The EHR that is down was asked (the breaker opened), and it is visible per destination.
    await eventually(
      async () => (await request(s.gw.url).get('/readyz')).body.destinations?.research?.state !== 'closed',
      20_000,
      "research's breaker to open",
    );
    const ready = await request(s.gw.url).get('/readyz');
    assert.equal(ready.status, 200, 'ingest stays ready');
    assert.equal(ready.body.destinations.ehr.state, 'closed');
    assert.match(ready.body.warnings.join(' '), /destination 'research': circuit breaker/);
    const status = await request(s.gw.url).get('/api/status');
    const byName = Object.fromEntries(status.body.destinations.map((d: { destination: string }) => [d.destination, d]));
    assert.equal(byName.ehr.queue.completed, n);
    assert.equal(byName.ehr.queue.name, 'iomt-delivery', 'the destination ehr keeps QUEUE_NAME');
    assert.equal(byName.research.queue.name, 'iomt-delivery.research');
    assert.ok(byName.research.queue.active + byName.research.queue.waiting + byName.research.queue.delayed >= 1);
    assert.equal(byName.ehr.writeMode, 'transaction');
    assert.equal(byName.ehr.writeModeSource, 'capability-statement');
    const metrics = (await request(s.gw.url).get('/metrics')).text;
    assert.match(metrics, /iomt_delivery_jobs_total\{destination="ehr",outcome="delivered"\} 30/);
    assert.match(metrics, /iomt_queue_waiting\{destination="research"\} \d+/);
    // The queue gauges cover every destination, not only the first: research's jobs are there, retried or waiting.
    const research = ['waiting', 'active', 'delayed'].map((state) => {
      const m = new RegExp(`iomt_queue_jobs\\{destination="research",state="${state}"\\} (\\d+)`).exec(metrics);
      assert.ok(m, `queue_jobs of research, ${state}`);
      return Number(m[1]);
    });
    assert.ok(research.reduce((n, x) => n + x, 0) >= 1, `research's queue holds its jobs: ${research}`);
    assert.match(metrics, /iomt_queue_jobs\{destination="ehr",state="waiting"\} 0/);
    assert.match(metrics, /iomt_queue_oldest_waiting_age_seconds\{destination="research"\} [\d.]+/);
    assert.match(metrics, /iomt_queue_oldest_waiting_age_seconds\{destination="ehr"\} 0/);
    assert.match(metrics, /iomt_destination_breaker_opened_total\{destination="research"\} 1/);

    // Back: it catches up, once per reading; the first is left as it was.
    bDown = false;
    await eventually(async () => (await observations(s.b)).total >= n, 30_000, 'the destination that was down to catch up');
    await eventually(
      async () => (await request(s.gw.url).get('/api/status')).body.destinations[1].queue.completed === n,
      10_000,
      'every research job completed',
    );
    for (const [name, ehr] of [
      ['ehr', s.a],
      ['research', s.b],
    ] as const) {
      const o = await observations(ehr);
      assert.equal(o.total, n, `${name}: each reading once`);
      assert.equal(o.distinct, n, `${name}: distinct identifiers`);
    }
    for (const d of ['ehr', 'research'])
      assert.equal((await request(s.gw.url).get(`/api/dead-letters?destination=${d}`)).body.total, 0, `${d}: no dead letters`);
    assert.ok(
      s.b.requests.some((r) => r.method === 'POST'),
      'research was written',
    );
  });

  it('a resend is recognised in every queue', async () => {
    s.a.sandbox.clear();
    s.b.sandbox.clear();
    const body = reading('ISO-RESEND', 91);
    const first = await postJson(`${s.gw.url}/ingest/measurements`, body);
    assert.equal(first.status, 202);
    const again = await postJson(`${s.gw.url}/ingest/measurements`, body);
    assert.equal(again.status, 202);
    assert.deepEqual(again.body.jobIds, first.body.jobIds, 'the same job ids: recognised in every queue');
    await eventually(
      async () => (await observations(s.b)).list.some((o) => o.valueQuantity?.value === 91),
      20_000,
      'delivered to research',
    );
    const count = async (ehr: TestEhr) => (await observations(ehr)).list.filter((o) => o.valueQuantity?.value === 91).length;
    assert.equal(await count(s.a), 1);
    assert.equal(await count(s.b), 1);
  });

  it('dead letters and their replay are per destination', async () => {
    s.a.sandbox.clear();
    s.b.sandbox.clear();
    const refusal = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invariant', diagnostics: 'refused' }] };
    s.b.faults.unshift({ status: 422, body: refusal, match: (req) => req.method === 'POST' });
    assert.equal((await postJson(`${s.gw.url}/ingest/measurements`, reading('ISO-DLQ', 77))).status, 202);
    await eventually(
      async () => (await request(s.gw.url).get('/api/dead-letters?destination=research')).body.total === 1,
      20_000,
      'a dead letter at research',
    );
    assert.equal((await request(s.gw.url).get('/api/dead-letters')).body.total, 0, 'none at ehr (the default destination)');
    const list = await request(s.gw.url).get('/api/dead-letters?destination=research');
    assert.equal(list.body.destination, 'research');
    const id = list.body.items[0].id as string;
    assert.equal((await request(s.gw.url).get(`/api/dead-letters/${id}`)).status, 404, 'not a dead letter of ehr');
    assert.equal((await request(s.gw.url).get(`/api/dead-letters?destination=nope`)).status, 400);
    const retry = await request(s.gw.url).post(`/api/dead-letters/${id}/retry?destination=research`);
    assert.equal(retry.status, 202);
    assert.equal(retry.body.destination, 'research');
    await eventually(async () => (await observations(s.b)).list.some((o) => o.valueQuantity?.value === 77), 20_000, 'the replay delivered');
    const count = async (ehr: TestEhr) => (await observations(ehr)).list.filter((o) => o.valueQuantity?.value === 77).length;
    assert.equal(await count(s.a), 1, 'ehr has it once (the replay went to research only)');
    assert.equal(await count(s.b), 1);
  });
});
