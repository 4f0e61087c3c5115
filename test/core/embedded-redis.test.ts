/**
 * The private redis-server of the one-command start: an acknowledged reading survives a gateway killed with SIGKILL
 * (its Redis is left running as an orphan); the next start stops the orphan (which flushes its AOF), takes over the
 * data folder and delivers the reading.
 */
import { strict as assert } from 'node:assert';
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
});
