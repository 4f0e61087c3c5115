/**
 * Ctrl-C on `npm run dev` finishes the job in flight, as `npm start` does. A terminal sends SIGINT to every process
 * of its foreground group (npm, and the gateway under it); this test does the same to a process group of its own.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import type { Observation } from 'fhir/r4';
import { eventually, postJson, REPO_ROOT, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';

describe('npm run dev and Ctrl-C', function () {
  this.timeout(90000);
  let redis: TestRedis;
  let ehr: TestEhr;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    await ehr?.stop();
    await redis?.stop();
  });

  it('stops taking data, finishes the job in flight, and exits', async () => {
    let open = () => undefined as void;
    ehr.faults.push({ status: 200, gate: new Promise<void>((r) => (open = r)), match: (r) => r.method === 'POST' });
    const env = {
      ...process.env,
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      PORT: '0',
      MLLP_ENABLED: 'false',
      UNKNOWN_PATIENT_POLICY: 'create',
      UNKNOWN_DEVICE_POLICY: 'accept',
      SHUTDOWN_TIMEOUT_MS: '30000',
    };
    const child = spawn('npm', ['run', 'dev'], { cwd: REPO_ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    try {
      const url = await eventually(() => /"url":"(http:[^"]+)"[^\n]*"msg":"gateway started"/.exec(out)?.[1], 60000, 'the gateway to start');
      const r = await postJson(`${url}/ingest/measurements`, {
        deviceId: 'DEV-CC-1',
        patientId: 'MRN-CC',
        timestamp: '2026-11-23T10:00:00Z',
        measurements: [{ code: 'MDC_TEMP_BODY', value: 37.2, unit: 'Cel' }],
      });
      assert.equal(r.status, 202);
      await eventually(() => ehr.requests.some((q) => q.method === 'POST'), 20000, 'the job to be in flight');
      process.kill(-child.pid!, 'SIGINT');
      await eventually(() => out.includes('shutting down'), 20000, 'the gateway to start its shutdown');
      open();
      await exited;
      assert.match(out, /gateway stopped/, out.slice(-3000));
      assert.doesNotMatch(out, /second signal: exiting now/);
      assert.equal((await ehr.search<Observation>('Observation', {})).length, 1, 'the job in flight was delivered');
    } finally {
      open();
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* the group has exited */
      }
    }
  });
});
