/**
 * The sandbox EHR keeps its data across a restart of the gateway (issue: a restart silently lost the demo), in its own
 * data folder, owned by one process at a time. Real gateway, real Redis, the README's reading over HTTP.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle } from 'fhir/r4';
import { eventually, postJson, startGateway, startRedis, type TestGateway, type TestRedis } from '../helpers/harness.js';

const observations = async (gw: TestGateway): Promise<number> => {
  const b = (await (await fetch(`${gw.url}/sandbox/fhir/Observation`)).json()) as Bundle;
  return (b.entry ?? []).length;
};

describe('sandbox EHR: data kept across restarts', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let dir: string;
  const running: TestGateway[] = [];
  before(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'gw-sandbox-'));
  });
  after(async () => {
    for (const g of running) await g.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves after a restart what was delivered before it; a second gateway on the folder runs in memory and says so', async () => {
    const env = { REDIS_URL: redis.url, SANDBOX_PERSIST: 'true', SANDBOX_DATA_DIR: dir, UNKNOWN_PATIENT_POLICY: 'create' };
    const a = await startGateway(env);
    running.push(a);
    assert.ok(a.logs.some((l) => l.includes('SANDBOX EHR') && l.includes('data kept in')));
    const r = await postJson(`${a.url}/ingest/measurements`, {
      deviceId: 'SN-123',
      patientId: 'MRN-9',
      timestamp: '2026-11-23T10:00:00Z',
      measurements: [
        { code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' },
        { code: 'MDC_PULS_OXIM_PULS_RATE', value: 72, unit: 'bpm' },
      ],
    });
    assert.equal(r.status, 202);
    await eventually(async () => (await observations(a)) === 2, 20000, 'delivery to the sandbox');

    const b = await startGateway(env);
    running.push(b);
    assert.ok(
      b.logs.some((l) => l.includes('belongs to another gateway process')),
      'the second gateway says why it runs in memory',
    );
    assert.equal(await observations(b), 0);
    await b.stop();

    await a.stop();
    const c = await startGateway(env);
    running.push(c);
    assert.equal(await observations(c), 2, 'the restarted sandbox still holds the Observations');
  });
});

describe('sandbox EHR: searches it cannot answer', () => {
  it('refuses a chained search with a 400 that says how to search instead, rather than an empty Bundle', async () => {
    const { createSandboxEhr } = await import('../../src/sandbox/sandbox.js');
    const express = (await import('express')).default;
    const sandbox = await createSandboxEhr();
    const app = express();
    app.use('/fhir', sandbox.router);
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/fhir`;
      const r = await fetch(`${base}/Observation?patient.identifier=urn:p|MRN-1`);
      assert.equal(r.status, 400);
      const oo = (await r.json()) as { issue: { code: string; diagnostics: string }[] };
      assert.equal(oo.issue[0].code, 'not-supported');
      assert.match(oo.issue[0].diagnostics, /Patient\?identifier=/);
      assert.equal((await fetch(`${base}/Observation?code=http://loinc.org|2708-6`)).status, 200, 'plain searches still work');
    } finally {
      server.close();
    }
  });
});
