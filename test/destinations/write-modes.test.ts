/**
 * Write modes against the sandbox EHR (a real FHIR engine): transaction, batch, individual with If-None-Exist and
 * individual with a search before each create. In every mode, a reading whose write timed out (the EHR wrote it after
 * the gateway stopped waiting) and whose next attempt met a 503 becomes a dead letter; its replay, and a resend, never
 * make a second Observation. The mode is chosen from the CapabilityStatement when the file does not name it.
 */
import { strict as assert } from 'node:assert';
import type { CapabilityStatement } from 'fhir/r4';
import type express from 'express';
import request from 'supertest';
import { chooseWriteMode } from '../../src/delivery/writer.js';
import {
  eventually,
  postJson,
  startEhr,
  startGateway,
  startRedis,
  type TestEhr,
  type TestGateway,
  type TestRedis,
} from '../helpers/harness.js';
import { destinationsFile, observations, reading } from './helpers.js';

const TIMEOUT_MS = 600;

/** The request that writes the Observation in each mode. */
const writesObservation = (req: express.Request): boolean =>
  req.method === 'POST' &&
  (req.path === '/Observation' || ((req.path === '/' || req.path === '') && JSON.stringify(req.body).includes('"Observation"')));

const MODES = [
  { label: 'transaction', dest: { writeMode: 'transaction' } },
  { label: 'batch', dest: { writeMode: 'batch' } },
  { label: 'individual (If-None-Exist)', dest: { writeMode: 'individual', conditionalCreate: true } },
  { label: 'individual (search before create)', dest: { writeMode: 'individual', conditionalCreate: false } },
] as const;

describe('destinations: write modes', function () {
  this.timeout(90_000);
  let redis: TestRedis;
  const ehrs: TestEhr[] = [];
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    for (const _ of MODES) ehrs.push(await startEhr());
    const file = destinationsFile({
      destinations: MODES.map((m, i) => ({ name: `d${i}`, baseUrl: ehrs[i].url, timeoutMs: TIMEOUT_MS, ...m.dest })),
    });
    gw = await startGateway({
      REDIS_URL: redis.url,
      DESTINATIONS_FILE: file,
      UNKNOWN_PATIENT_POLICY: 'create',
      DELIVERY_ATTEMPTS: '2',
      BREAKER_FAILURE_THRESHOLD: '0',
    });
  });
  after(async () => {
    await gw?.stop();
    for (const e of ehrs) await e.stop();
    await redis?.stop();
  });

  it('every mode writes the reading once through a timeout, a 503, the dead letter, its replay and a resend', async () => {
    for (const e of ehrs) {
      // The first write of the Observation is held past the gateway's timeout and then done by the EHR (the answer is
      // lost); the next request (the second attempt's first) meets a 503: the job is given up, its Observation in the EHR.
      let armed = false;
      const held = (req: express.Request) => (armed = writesObservation(req));
      e.faults.push({ status: 200, delayMs: TIMEOUT_MS * 1.5, match: held }, { status: 503, match: () => armed });
    }
    const body = reading('WM-1', 96);
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, body)).status, 202);
    for (const [i, m] of MODES.entries()) {
      await eventually(
        async () => (await request(gw.url).get(`/api/dead-letters?destination=d${i}`)).body.total === 1,
        30_000,
        `${m.label}: the dead letter`,
      );
      assert.equal((await observations(ehrs[i])).total, 1, `${m.label}: written once by the timed-out attempt`);
    }
    for (const [i, m] of MODES.entries()) {
      const [d] = (await request(gw.url).get(`/api/dead-letters?destination=d${i}`)).body.items;
      assert.equal(d.kind, 'exhausted', m.label);
      const replay = await request(gw.url).post(`/api/dead-letters/${d.id}/retry?destination=d${i}`);
      assert.equal(replay.status, 202, m.label);
    }
    for (const [i, m] of MODES.entries()) {
      await eventually(
        async () => (await request(gw.url).get('/api/status')).body.destinations[i].queue.completed >= 1,
        20_000,
        `${m.label}: the replay delivered`,
      );
      assert.equal((await request(gw.url).get(`/api/dead-letters?destination=d${i}`)).body.total, 0, m.label);
      const o = await observations(ehrs[i]);
      assert.equal(o.total, 1, `${m.label}: still one Observation after the replay`);
    }
    // A resend of the same reading: the dead-lettered job left bull, so it is a new job, written again: still one.
    const resent = await postJson(`${gw.url}/ingest/measurements`, body);
    assert.equal(resent.status, 202);
    for (const [i, m] of MODES.entries()) {
      await eventually(
        async () => (await request(gw.url).get('/api/status')).body.destinations[i].queue.completed >= 2,
        20_000,
        `${m.label}: the resend delivered`,
      );
      const o = await observations(ehrs[i]);
      assert.equal(o.total, 1, `${m.label}: one Observation after a resend`);
      assert.equal(o.distinct, 1);
      // The device and patient were written once too.
      assert.equal((await ehrs[i].search('Device', {})).length, 1, `${m.label}: one Device`);
      assert.equal((await ehrs[i].search('Patient', {})).length, 1, `${m.label}: one Patient`);
    }
  });

  it('each mode sends what it says', async () => {
    for (const e of ehrs) {
      e.sandbox.clear();
      e.requests.length = 0;
    }
    assert.equal((await postJson(`${gw.url}/ingest/measurements`, reading('WM-2', 97))).status, 202);
    await eventually(async () => {
      for (const e of ehrs) if ((await observations(e)).total !== 1) return false;
      return true;
    }, 20_000);
    const posts = (i: number) => ehrs[i].requests.filter((r) => r.method === 'POST').map((r) => r.path);
    assert.deepEqual(posts(0), ['/'], 'transaction: one Bundle');
    assert.deepEqual(posts(1), ['/', '/'], 'batch: devices and patients, then observations');
    assert.deepEqual(posts(2).sort(), ['/Device', '/Observation', '/Patient'], 'individual: one request per resource');
    const gets = ehrs[3].requests.filter((r) => r.method === 'GET').map((r) => r.path);
    for (const t of ['/Device', '/Observation', '/Patient']) assert.ok(gets.includes(t), `search before create of ${t}: ${gets}`);
    const o = (await observations(ehrs[2])).list[0];
    assert.match(o.device?.reference ?? '', /^Device\/[^/]+$/, 'references rewritten to the ids the server gave');
    assert.match(o.subject?.reference ?? '', /^Patient\/[^/]+$/);
  });
});

describe('destinations: write mode from the CapabilityStatement', () => {
  const cs = (interactions: string[], conditionalCreate: boolean): CapabilityStatement => ({
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-01-01',
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [
      {
        mode: 'server',
        interaction: interactions.map((code) => ({ code: code as 'transaction' })),
        resource: [{ type: 'Observation', conditionalCreate, interaction: [{ code: 'create' }] }],
      },
    ],
  });

  it('transaction, else batch, else individual; individual with search when there is no conditional create', () => {
    assert.equal(chooseWriteMode(cs(['transaction', 'batch'], true)).mode, 'transaction');
    assert.equal(chooseWriteMode(cs(['batch'], true)).mode, 'batch');
    assert.deepEqual(chooseWriteMode(cs([], true)), { mode: 'individual', conditionalCreate: true, conditionalUpdate: false });
    assert.deepEqual(chooseWriteMode(cs(['transaction'], false)), {
      mode: 'individual',
      conditionalCreate: false,
      conditionalUpdate: false,
    });
  });

  it('is chosen at start-up and logged when the file does not name it', async function () {
    this.timeout(30_000);
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({
      REDIS_URL: redis.url,
      DESTINATIONS_FILE: destinationsFile({ destinations: [{ name: 'auto', baseUrl: ehr.url }] }),
    });
    try {
      const line = await eventually(() => gw.logs.find((l) => l.includes("write mode chosen from the destination's CapabilityStatement")));
      assert.match(line, /"destination":"auto"/);
      assert.match(line, /"writeMode":"transaction"/);
      const s = await request(gw.url).get('/api/status');
      assert.equal(s.body.destinations[0].writeMode, 'transaction');
      assert.equal(s.body.destinations[0].writeModeSource, 'capability-statement');
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});
