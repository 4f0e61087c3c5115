/**
 * The private redis-server of the one-command start: an acknowledged reading survives a gateway killed with SIGKILL
 * (its Redis is left running as an orphan); the next start stops the orphan (which flushes its AOF), takes over the
 * data folder and delivers the reading.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually, postJson, spawnGateway, startEhr, type ChildGateway, type TestEhr } from '../helpers/harness.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('private redis-server (REDIS_URL unset)', function () {
  this.timeout(90000);
  let ehr: TestEhr;
  let dir: string;
  const children: ChildGateway[] = [];

  before(async () => {
    ehr = await startEhr();
    dir = mkdtempSync(join(tmpdir(), 'gw-embedded-'));
  });
  after(async () => {
    await Promise.all(children.map((c) => c.stop('SIGTERM')));
    await ehr.stop();
    const pidfile = join(dir, 'redis.pid');
    if (existsSync(pidfile)) {
      const pid = Number(readFileSync(pidfile, 'utf8'));
      if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps an acknowledged reading across a SIGKILL of the gateway, and never runs two Redis on one data folder', async () => {
    const env = { REDIS_URL: '', REDIS_DATA_DIR: dir, FHIR_BASE_URL: ehr.url, UNKNOWN_PATIENT_POLICY: 'create' };
    const a = spawnGateway(env, 'ingest');
    children.push(a);
    const url = await a.url;
    const r = await postJson(`${url}/ingest/measurements`, {
      deviceId: 'EMB-1',
      patientId: 'MRN-E',
      timestamp: '2026-11-23T10:00:00Z',
      measurements: [{ code: 'MDC_TEMP_BODY', value: 37.1, unit: 'Cel' }],
    });
    assert.equal(r.status, 202);
    const orphan = Number(readFileSync(join(dir, 'redis.pid'), 'utf8'));
    await a.stop('SIGKILL');
    assert.ok(alive(orphan), 'the killed gateway left its redis-server running');

    const b = spawnGateway(env, 'all');
    children.push(b);
    await b.url;
    assert.ok(!alive(orphan), 'the new start stopped the orphan before using the folder');
    await eventually(
      async () => (await ehr.search('Observation', {})).length === 1,
      30000,
      'the reading acknowledged before the kill, delivered',
    );
  });

  it('a second gateway on the same data folder shares the running Redis instead of stopping it; the last one out stops it', async () => {
    const shared = mkdtempSync(join(tmpdir(), 'gw-shared-'));
    const env = { REDIS_URL: '', REDIS_DATA_DIR: shared, FHIR_BASE_URL: ehr.url, UNKNOWN_PATIENT_POLICY: 'create' };
    const reading = (n: number) => ({
      deviceId: 'SHARE-1',
      patientId: 'MRN-S',
      timestamp: `2026-11-23T10:0${n}:00Z`,
      measurements: [{ code: 'MDC_TEMP_BODY', value: 37.1, unit: 'Cel' }],
    });
    try {
      const ingest = spawnGateway(env, 'ingest');
      children.push(ingest);
      const ingestUrl = await ingest.url;
      const redisPid = Number(readFileSync(join(shared, 'redis.pid'), 'utf8'));
      const worker = spawnGateway(env, 'worker');
      children.push(worker);
      await worker.url;
      assert.match(worker.output(), /sharing the private redis-server/);
      assert.equal(Number(readFileSync(join(shared, 'redis.pid'), 'utf8')), redisPid, 'the same redis-server');
      assert.equal((await postJson(`${ingestUrl}/ingest/measurements`, reading(1))).status, 202, 'the first gateway still works');
      await eventually(
        async () => (await ehr.search<Observation>('Observation', {})).some((o) => o.effectiveDateTime === '2026-11-23T10:01:00Z'),
        30000,
        'the worker delivering what the ingest process queued',
      );
      // The process that started Redis leaves first: the other keeps it.
      assert.equal(await ingest.stop('SIGTERM'), 0);
      assert.ok(alive(redisPid), 'Redis stays while a gateway uses it');
      const again = spawnGateway(env, 'ingest');
      children.push(again);
      assert.equal((await postJson(`${await again.url}/ingest/measurements`, reading(2))).status, 202);
      await again.stop('SIGTERM');
      assert.ok(alive(redisPid));
      await worker.stop('SIGTERM');
      await eventually(() => !alive(redisPid), 15000, 'the last gateway out to stop Redis');
    } finally {
      const pidfile = join(shared, 'redis.pid');
      if (existsSync(pidfile)) {
        const pid = Number(readFileSync(pidfile, 'utf8'));
        if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
      }
      rmSync(shared, { recursive: true, force: true });
    }
  });
});
