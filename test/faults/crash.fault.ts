/**
 * The crash scenarios of the fault suite (`npm run test:faults`): real gateway processes started from the CLI, a real
 * redis-server with AOF, a real Mosquitto, the counting FHIR sink, load on HTTP, MLLP and MQTT, and something killed
 * mid-load. Each scenario prints acknowledged / delivered / lost / duplicated and the worst /healthz latency, and
 * asserts 0 lost, 0 duplicated and no crash. The table of every scenario is printed at the end.
 */
import { strict as assert } from 'node:assert';
import type { Bundle } from 'fhir/r4';
import { startSink } from './sink.js';
import { printTable, rows, runScenario } from './scenario.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long the EHR stays down: the 60 s (FAULTS_EHR_DOWN_S shortens it for a local run). */
const EHR_DOWN_S = Number(process.env.FAULTS_EHR_DOWN_S ?? 60);

/** Each load phase: this many more acknowledged readings, or this long, whichever comes first. */
const PHASE = { readings: 500, ms: 5000 };

describe('fault suite: the counting FHIR sink', () => {
  it('counts a reading created twice as duplicated, and a conditional create that matched as not created', async () => {
    const sink = await startSink();
    try {
      const obs = (n: number) => ({
        fullUrl: `urn:uuid:0000000${n}-0000-4000-8000-000000000000`,
        resource: {
          resourceType: 'Observation',
          status: 'final',
          code: { text: 'x' },
          identifier: [{ system: 'urn:test', value: 'R1' }],
          device: { reference: 'urn:uuid:d0000000-0000-4000-8000-000000000000' },
          effectiveDateTime: '2026-01-01T00:00:00Z',
        },
        request: { method: 'POST', url: 'Observation', ifNoneExist: 'identifier=urn:test|R1' },
      });
      const device = {
        fullUrl: 'urn:uuid:d0000000-0000-4000-8000-000000000000',
        resource: { resourceType: 'Device', identifier: [{ system: 'urn:dev', value: 'D1' }] },
        request: { method: 'POST', url: 'Device', ifNoneExist: 'identifier=urn:dev|D1' },
      };
      const post = async (entry: unknown[]) => {
        const r = await fetch(sink.url, {
          method: 'POST',
          headers: { 'content-type': 'application/fhir+json' },
          body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }),
        });
        return (await r.json()) as Bundle;
      };
      // As on a real server, both entries are resolved against the state before the transaction: two creates.
      const first = await post([device, obs(1), obs(2)]);
      assert.deepEqual(
        first.entry?.map((e) => e.response?.status),
        ['201 Created', '201 Created', '201 Created'],
      );
      const again = await post([device, obs(3)]);
      assert.deepEqual(
        again.entry?.map((e) => e.response?.status),
        ['200 OK', '200 OK'],
      );
      const key = `D1|${Date.parse('2026-01-01T00:00:00Z')}`;
      assert.equal(sink.createdByKey().get(key), 2);
      assert.equal(sink.createdByIdentifier().get('R1'), 2);
      assert.equal(sink.storedByKey().get(key), 2);
      assert.equal(sink.journal.length, 3);
      await sink.down();
      await assert.rejects(fetch(`${sink.url}/metadata`), 'down: the connection is refused');
      await sink.up();
      assert.equal((await fetch(`${sink.url}/metadata`)).status, 200);
    } finally {
      await sink.stop();
    }
  });
});

describe('fault suite: crashes under load (real gateway processes, Redis, Mosquitto, EHR)', function () {
  this.timeout(300000);
  after(() => printTable('fault suite: every scenario', rows));

  it('kill -9 of the gateway under HTTP, MLLP and MQTT load', async () => {
    await runScenario('gateway kill -9', { roles: ['all'], mqtt: true }, async (ctx) => {
      await ctx.load(['http', 'mllp', 'mqtt']);
      await ctx.acked(PHASE.readings, PHASE.ms);
      await ctx.ingest.kill('SIGKILL');
      await sleep(1000);
      await ctx.ingest.start();
      await ctx.acked(PHASE.readings, PHASE.ms);
    });
  });

  it('kill -9 of the ingest process, then of the worker process (separate roles)', async () => {
    await runScenario('ingest, worker kill -9', { roles: ['ingest', 'worker'], mqtt: true }, async (ctx) => {
      await ctx.load(['http', 'mllp', 'mqtt']);
      await ctx.acked(PHASE.readings, PHASE.ms);
      await ctx.ingest.kill('SIGKILL');
      await sleep(1000);
      await ctx.ingest.start();
      await ctx.acked(PHASE.readings, PHASE.ms);
      await ctx.worker.kill('SIGKILL');
      await sleep(1000);
      await ctx.worker.start();
      await ctx.acked(PHASE.readings, PHASE.ms);
    });
  });

  it(`EHR down ${EHR_DOWN_S} s under a trickle of 20 readings/s`, async () => {
    await runScenario(`EHR down ${EHR_DOWN_S} s`, { roles: ['all'], mqtt: true, drainMs: 90000 }, async (ctx) => {
      const backlog = 100000;
      await ctx.load(['http'], { rate: 10, backlog });
      await ctx.load(['mllp'], { rate: 5, backlog });
      await ctx.load(['mqtt'], { rate: 5, backlog });
      await sleep(2000);
      await ctx.sink.down();
      await sleep(EHR_DOWN_S * 1000);
      await ctx.sink.up();
      await sleep(2000);
    });
  });

  it('Redis SIGTERM under load (restarted on the same port and data folder)', async () => {
    await runScenario('Redis SIGTERM', { roles: ['all'], mqtt: true }, async (ctx) => {
      await ctx.load(['http', 'mllp', 'mqtt']);
      await ctx.acked(PHASE.readings, PHASE.ms);
      await ctx.redis.kill('SIGTERM');
      await sleep(2000);
      await ctx.redis.start();
      await ctx.acked(PHASE.readings, PHASE.ms);
    });
  });

  it('Redis kill -9 under load (appendfsync always; restarted on the same port and data folder)', async () => {
    await runScenario('Redis kill -9 (fsync always)', { roles: ['all'], mqtt: true, fsync: 'always' }, async (ctx) => {
      await ctx.load(['http', 'mllp', 'mqtt']);
      await ctx.acked(PHASE.readings, PHASE.ms);
      await ctx.redis.kill('SIGKILL');
      await sleep(2000);
      await ctx.redis.start();
      await ctx.acked(PHASE.readings, PHASE.ms);
    });
  });
});
