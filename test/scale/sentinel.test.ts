/**
 * Redis Sentinel: the gateway asks three real Sentinels for the master and follows a failover (the master killed with
 * SIGKILL, the replica promoted): ingest and delivery resume on the new master. The run prints what acknowledged data
 * the failover lost with asynchronous replication, and checks the WAIT option that makes the acknowledgement wait for
 * a replica.
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { ConfigError, CORE_KEYS, loadConfig } from '../../src/config/index.js';
import { eventually, postJson, startEhr, startGateway, type TestEhr, type TestGateway } from '../helpers/harness.js';
import { assertFailoverRun, deliveredReadings, describeRun, failoverReadings, loadThroughFailover } from './failover-load.js';
import { MASTER_NAME, onPort, type SentinelSet, startSentinelSet } from './sentinel-procs.js';

const BASE = Date.parse('2026-11-23T10:00:00Z');

/** Reading `i`: one SpO2 value at its own second, so that each delivered Observation names the reading it came from. */
const reading = failoverReadings(BASE, { deviceId: 'OXI-SENT-1', manufacturer: 'Acme Medical', model: 'PulseOx 3', patientId: 'MRN-SENT' });

/** The readings (by index) the EHR has, and how many Observations. */
const delivered = (ehr: TestEhr) => deliveredReadings(ehr, BASE);

const keysOn = (port: number) => onPort(port, (c) => c.dbsize());
const infoOf = (port: number) => onPort(port, (c) => c.info('replication'));
const sentinelCall = (port: number, ...args: string[]) => onPort(port, (c) => c.call('SENTINEL', ...args) as Promise<unknown[]>);

function env(set: SentinelSet, ehr: TestEhr, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_SENTINELS: set.addresses.join(','),
    REDIS_SENTINEL_NAME: MASTER_NAME,
    FHIR_BASE_URL: ehr.url,
    UNKNOWN_PATIENT_POLICY: 'create',
    RATE_LIMIT_PER_MINUTE: '0',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

describe('Redis Sentinel settings', () => {
  it('takes host:port Sentinels and refuses anything else, naming the bad entry', () => {
    const c = loadConfig({ REDIS_SENTINELS: '10.0.0.1:26379, sentinel-b:26379,[::1]:26380', REDIS_SENTINEL_NAME: 'm1' }, CORE_KEYS);
    assert.deepEqual(c.redisSentinels, ['10.0.0.1:26379', 'sentinel-b:26379', '[::1]:26380']);
    assert.equal(c.redisSentinelName, 'm1');
    assert.equal(c.redisWaitReplicas, 0);
    assert.throws(
      () => loadConfig({ REDIS_SENTINELS: '10.0.0.1:26379,no-port,h:99999' }, CORE_KEYS),
      (e: unknown) => e instanceof ConfigError && /no-port/.test(e.message) && /h:99999/.test(e.message),
    );
    assert.throws(() => loadConfig({ REDIS_WAIT_TIMEOUT_MS: '0' }, CORE_KEYS), ConfigError);
  });
});

describe('Redis Sentinel: the gateway follows a failover', function () {
  this.timeout(120000);
  let set: SentinelSet;
  let ehr: TestEhr;
  let gw: TestGateway;

  before(async () => {
    set = await startSentinelSet();
    ehr = await startEhr();
    gw = await startGateway(env(set, ehr));
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await set?.stop();
  });

  it('ingest and delivery resume on the promoted replica after the master is killed; prints what the failover lost', async () => {
    const oldMaster = await set.masterPort();
    assert.equal(oldMaster, set.master.port);
    // Before: readings are acknowledged and delivered through the master the Sentinels name.
    for (let i = 0; i < 10; i++) {
      const r = await postJson(`${gw.url}/ingest/measurements`, reading(i));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    await eventually(async () => (await delivered(ehr)).set.size === 10, 30000, 'the first readings delivered');
    // The jobs went to the master the Sentinels name (not to a private redis-server).
    assert.ok((await keysOn(set.master.port)) > 0, "the queue lives on the Sentinels' master");

    // Load from four senders, one reading per request, while the master is killed.
    const run = await loadThroughFailover(gw, ehr, reading, BASE, async () => {
      await set.master.kill();
      assert.equal(await set.waitForFailover(oldMaster), set.replica.port, 'the replica is the new master');
    });
    console.log(describeRun('Sentinel failover', run));
    // Loss can only come from the window before the kill (writes the replica had not yet received): nothing
    // acknowledged after the promotion may be missing, and nothing is delivered twice.
    assertFailoverRun(run);
  });

  it('follows a switchover too (SENTINEL FAILOVER: the old master stays up and becomes a replica)', async () => {
    // The killed master comes back; the Sentinels make it a replica of the new master. Then they switch back to it.
    await set.master.restart();
    await eventually(async () => /master_link_status:up/.test(await infoOf(set.master.port)), 30000, 'the old master in sync');
    await eventually(
      async () => (await sentinelCall(set.sentinels[0].port, 'replicas', MASTER_NAME)).some((r) => String(r).includes('slave')),
      30000,
      'the Sentinels see the old master as a replica',
    );
    const before = await set.masterPort();
    assert.equal(before, set.replica.port);
    await sentinelCall(set.sentinels[0].port, 'failover', MASTER_NAME);
    assert.equal(await set.waitForFailover(before), set.master.port);
    await eventually(async () => /role:slave/.test(await infoOf(set.replica.port)), 30000, 'the demoted master is a replica');
    // The demoted master is alive and read-only: connections still on it must move to the new master.
    const start = 1000;
    await eventually(
      async () => (await postJson(`${gw.url}/ingest/measurements`, reading(start))).status === 202,
      30000,
      'ingest after the switchover',
    );
    for (let i = start + 1; i < start + 20; i++) {
      const r = await postJson(`${gw.url}/ingest/measurements`, reading(i));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    await eventually(
      async () => {
        const d = await delivered(ehr);
        for (let i = start; i < start + 20; i++) if (!d.set.has(i)) return false;
        return true;
      },
      30000,
      'the readings after the switchover delivered',
    );
    assert.ok((await keysOn(set.master.port)) > 0);
  });
});

describe('Redis Sentinel with REDIS_WAIT_REPLICAS: no acknowledgement before a replica has the job', function () {
  this.timeout(120000);
  let set: SentinelSet;
  let ehr: TestEhr;
  let gw: TestGateway;

  before(async () => {
    set = await startSentinelSet();
    ehr = await startEhr();
    gw = await startGateway(env(set, ehr, { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '300' }));
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await set?.stop();
  });

  it('refuses with 503 while the replica is down, and the resent reading is delivered once the replica is back', async () => {
    const ok = await postJson(`${gw.url}/ingest/measurements`, reading(1));
    assert.equal(ok.status, 202, JSON.stringify(ok.body));

    await set.replica.kill();
    const refused = await postJson(`${gw.url}/ingest/measurements`, reading(2));
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.equal(refused.body.resourceType, 'OperationOutcome');
    assert.match(JSON.stringify(refused.body), /replica/);
    assert.ok(refused.headers.get('retry-after'));

    await set.replica.restart();
    const r = new IORedis.default(set.replica.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
    r.on('error', () => undefined);
    try {
      await eventually(async () => /master_link_status:up/.test(await r.info('replication')), 30000, 'the replica in sync again');
    } finally {
      r.disconnect();
    }
    // The sender resends what was refused: now acknowledged, and delivered with the first reading.
    const resent = await postJson(`${gw.url}/ingest/measurements`, reading(2));
    assert.equal(resent.status, 202, JSON.stringify(resent.body));
    const d = await eventually(
      async () => {
        const x = await delivered(ehr);
        return x.set.has(1) && x.set.has(2) ? x : undefined;
      },
      30000,
      'both readings delivered',
    );
    assert.equal(d.count, 2);
  });
});
