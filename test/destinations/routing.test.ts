/**
 * Which destination gets what: the filters (unit, on readings), the enqueue across destination queues on a real
 * Redis (one queue refusing refuses the message; the resend is not queued twice where it was taken), and end to end
 * through a gateway with two sandbox EHRs.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import type { Reading } from '../../src/core/contract.js';
import { GatewayError } from '../../src/core/errors.js';
import type { DeliveryJob, DeliveryQueue } from '../../src/queue/queue.js';
import { DestinationQueues, jobsForDestination } from '../../src/queue/routing.js';
import { defaultDestination, type Destination } from '../../src/config/destinations.js';
import { eventually, postJson, startRedis, type TestRedis, testQueue } from '../helpers/harness.js';
import { observations, reading, useTwoEhrs } from './helpers.js';

const obs = (code: string, category: string, system = 'http://loinc.org'): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  identifier: [{ system: 'urn:test', value: `${code}-${category}` }],
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: category }] }],
  code: { coding: [{ system, code }] },
  device: { identifier: { system: 'urn:dev', value: 'D1' } },
});

const readingOf = (...o: Observation[]): Reading => ({
  devices: [{ resourceType: 'Device', identifier: [{ system: 'urn:dev', value: 'D1' }] }],
  observations: o,
});

const job = (translations: Reading[], adapterId = 'measurements', channel = 'http'): DeliveryJob => ({
  adapterId,
  channel,
  receivedAt: '2026-11-23T11:00:00Z',
  translations,
});

describe('destinations: filters (unit)', () => {
  const hr = obs('8867-4', 'vital-signs');
  const lab = obs('2345-7', 'laboratory');

  it('codes (system|code or a bare code) and categories select observations; the device goes with them', () => {
    const jobs = [job([readingOf(hr, lab)])];
    const [byCode] = jobsForDestination({ codes: ['http://loinc.org|8867-4'] }, jobs);
    assert.deepEqual(
      byCode.translations[0].observations.map((o) => o.code.coding?.[0].code),
      ['8867-4'],
    );
    assert.equal(byCode.translations[0].devices.length, 1, 'the device of a selected observation goes with it');
    const [bare] = jobsForDestination({ codes: ['2345-7'] }, jobs);
    assert.deepEqual(
      bare.translations[0].observations.map((o) => o.code.coding?.[0].code),
      ['2345-7'],
    );
    const [byCategory] = jobsForDestination({ categories: ['laboratory'] }, jobs);
    assert.equal(byCategory.translations[0].observations[0], lab);
    assert.deepEqual(jobsForDestination({ codes: ['http://snomed.info/sct|8867-4'] }, jobs), [], 'another system does not match');
    assert.deepEqual(jobsForDestination({}, jobs), jobs, 'no filter: the jobs as they are');
  });

  it('resource types, adapters, channels and sending facilities', () => {
    const jobs = [job([readingOf(hr)], 'hl7v2', 'mllp')];
    const [devicesOnly] = jobsForDestination({ resourceTypes: ['Device'] }, [job([readingOf()])]);
    assert.equal(devicesOnly.translations[0].devices.length, 1);
    assert.deepEqual(jobsForDestination({ resourceTypes: ['Device'] }, jobs), [], 'a device whose observations are filtered out stays out');
    const [obsOnly] = jobsForDestination({ resourceTypes: ['Observation'] }, jobs);
    assert.equal(obsOnly.translations[0].devices.length, 0);
    assert.equal(jobsForDestination({ adapters: ['measurements'] }, jobs).length, 0);
    assert.equal(jobsForDestination({ adapters: ['hl7v2'], channels: ['mllp'] }, jobs).length, 1);
    assert.equal(jobsForDestination({ channels: ['http'] }, jobs).length, 0);
    assert.equal(jobsForDestination({ sendingFacilities: ['ICU'] }, jobs, { sendingFacility: 'ICU' }).length, 1);
    assert.equal(jobsForDestination({ sendingFacilities: ['ICU'] }, jobs, { sendingFacility: 'ER' }).length, 0);
    assert.equal(jobsForDestination({ sendingFacilities: ['ICU'] }, jobs).length, 0, 'no facility (HTTP, MQTT) does not match a list');
  });
});

describe('destinations: queueing to several (real Redis)', function () {
  this.timeout(30_000);
  let redis: TestRedis;
  const queues: DeliveryQueue[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const q of queues) await q.close();
    await redis?.stop();
  });

  const queue = (name: string, maxDepth: number) => {
    const q = testQueue(redis.url, name, { maxDepth });
    queues.push(q);
    return q;
  };
  const dest = (name: string): Destination => ({ ...defaultDestination({ fhirAuth: 'none', fhirTimeoutMs: 1000 }), name });

  it('one queue that refuses refuses the message (503, retryable); the resend is recognised where it was taken', async () => {
    const a = queue('t-a', 1000);
    const b = queue('t-b', 0);
    await Promise.all([a.whenReady(), b.whenReady()]);
    const routed = new DestinationQueues([
      { destination: dest('a'), queue: a },
      { destination: dest('b'), queue: b },
    ]);
    const jobs = [job([readingOf(obs('8867-4', 'vital-signs'))])];
    const err = await routed.enqueue(jobs).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof GatewayError, String(err));
    assert.equal(err.status, 503);
    assert.equal(err.retryable, true);
    assert.match(err.message, /destination 'b'/);
    assert.equal((await a.counts()).waiting, 1, 'a took it');
    b.settings.maxDepth = 1000;
    const ids = await routed.enqueue(jobs);
    assert.equal(ids.length, 1, 'the same id in both queues');
    assert.equal((await a.counts()).waiting, 1, 'not queued twice in a');
    assert.equal((await b.counts()).waiting, 1);
  });
});

describe('destinations: routing end to end', function () {
  this.timeout(60_000);
  const s = useTwoEhrs((a, b) => [
    { name: 'ehr', baseUrl: a.url, filter: { adapters: ['measurements'] } },
    // The MDC code of SpO2 (any system): body temperature is not sent here.
    { name: 'ews', baseUrl: b.url, filter: { codes: ['150456'], categories: ['vital-signs'] } },
  ]);

  it('each destination gets what its filter matches', async () => {
    assert.equal((await postJson(`${s.gw.url}/ingest/measurements`, reading('RT-1', 95))).status, 202);
    assert.equal((await postJson(`${s.gw.url}/ingest/measurements`, reading('RT-2', 37.2, 'MDC_TEMP_BODY', 'Cel'))).status, 202);
    await eventually(async () => (await observations(s.a)).total === 2, 20_000, 'both readings at ehr');
    await eventually(async () => (await observations(s.b)).total === 1, 20_000, 'the SpO2 reading at ews');
    await new Promise((r) => setTimeout(r, 500));
    const ews = await observations(s.b);
    assert.equal(ews.total, 1, 'the temperature did not go to ews');
    assert.ok(ews.list[0].code.coding?.some((c) => c.code === '150456'));
    assert.equal((await observations(s.a)).total, 2);
  });
});
