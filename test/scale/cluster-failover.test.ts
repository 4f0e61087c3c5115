/**
 * Redis Cluster failover: a real three-master cluster in which the master that serves the delivery queue's slot has a
 * replica. Under load from four senders the master is killed (SIGKILL); the cluster promotes the replica by itself.
 * While the slot has no master, ingest holds requests (the cluster client retries) or refuses them with 503, never
 * anything else; then it resumes on the promoted replica, and so does delivery (a bull worker whose blocking
 * connection died with the master must take jobs again). The run prints what
 * acknowledged data asynchronous replication lost and how long each step took.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import { keySlot } from '../../src/queue/connection.js';
import { eventually, postJson, startEhr, startGateway, type TestEhr, type TestGateway } from '../helpers/harness.js';
import { startCluster, type TestCluster } from './cluster-procs.js';
import type { RedisProc } from './sentinel-procs.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BASE = Date.parse('2026-11-24T10:00:00Z');

/** Reading `i`: one SpO2 value at its own second, so that each delivered Observation names the reading it came from. */
const reading = (i: number) => ({
  deviceId: 'OXI-CLFO-1',
  patientId: 'MRN-CLFO',
  timestamp: new Date(BASE + i * 1000).toISOString(),
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (i % 10), unit: '%' }],
});

/** The readings (by index) the EHR has, and how many Observations (a duplicate would show as more than the set). */
async function delivered(ehr: TestEhr): Promise<{ set: Set<number>; count: number }> {
  const set = new Set<number>();
  let count = 0;
  for (const o of await ehr.search<Observation>('Observation', { _count: '2000' })) {
    count++;
    set.add(Math.round((Date.parse(o.effectiveDateTime ?? '') - BASE) / 1000));
  }
  return { set, count };
}

describe('Redis Cluster: the gateway follows a failover inside the cluster', function () {
  this.timeout(180000);
  let cluster: TestCluster;
  let replica: RedisProc;
  let queueMaster: RedisProc;
  let ehr: TestEhr;
  let gw: TestGateway;

  before(async () => {
    // A node that does not answer for 1 s is failed, so the promotion takes seconds rather than the default's tens.
    cluster = await startCluster({ nodeTimeoutMs: 1000 });
    const port = await cluster.portOfSlot(keySlot('{gw:iomt-delivery}'));
    queueMaster = cluster.masters.find((m) => m.port === port)!;
    replica = await cluster.addReplica(port);
    ehr = await startEhr();
    gw = await startGateway({
      REDIS_CLUSTER_NODES: cluster.addresses.join(','),
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      RATE_LIMIT_PER_MINUTE: '0',
      LOG_LEVEL: 'info',
      // Longer than the failover takes (2 to 3 s): the jobs in flight when the master dies keep their locks (the queue
      // renews them once bull has given up) and complete, rather than being handed out again once a lock expires.
      QUEUE_LOCK_DURATION_MS: '10000',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await cluster?.stop();
  });

  it('ingest and delivery resume on the promoted replica after the queue’s master is killed; prints what was lost', async () => {
    const acked = new Set<number>();
    for (let i = 0; i < 10; i++) {
      const r = await postJson(`${gw.url}/ingest/measurements`, reading(i));
      assert.equal(r.status, 202, JSON.stringify(r.body));
      acked.add(i);
    }
    await eventually(async () => (await delivered(ehr)).set.size === 10, 30000, 'the first readings delivered');

    let next = 10;
    let stop = false;
    let promotedAt = Number.POSITIVE_INFINITY;
    const ackedAfter = new Set<number>();
    const refused = new Map<number, number>();
    let lastBody = '';
    const unexpected: string[] = [];
    const sender = async () => {
      while (!stop && !unexpected.length) {
        const i = next++;
        const r = await postJson(`${gw.url}/ingest/measurements`, reading(i)).catch(() => ({ status: 0, body: undefined }));
        if (r.status === 202) {
          acked.add(i);
          if (Date.now() > promotedAt) ackedAfter.add(i);
        } else {
          // Nothing but a retryable refusal (or a connection the gateway dropped) while the slot has no master.
          refused.set(r.status, (refused.get(r.status) ?? 0) + 1);
          lastBody = JSON.stringify(r.body);
          if (r.status !== 503 && r.status !== 0) unexpected.push(`${r.status}: ${lastBody}`);
          await sleep(100);
        }
      }
    };
    const senders = [sender(), sender(), sender(), sender()];
    const noSurprise = () => assert.deepEqual(unexpected, [], 'answers other than 202 and 503');
    await eventually(() => acked.size >= 60 || unexpected.length > 0, 30000, 'load before the kill');
    noSurprise();
    const ackedBeforeKill = acked.size;
    const killedAt = Date.now();
    await queueMaster.kill();
    await eventually(
      async () => ((await cluster.on(replica.port, (c) => c.role())) as unknown[])[0] === 'master',
      60000,
      'the replica promoted by the cluster',
    );
    promotedAt = Date.now();
    await eventually(() => ackedAfter.size >= 40 || unexpected.length > 0, 60000, 'readings acknowledged after the promotion').catch(
      (err: Error) => {
        throw new Error(`${err.message} (last refusal: ${lastBody}; queue connection ${gw.gateway.queue!.connectionStatus()})`);
      },
    );
    const resumedAt = Date.now();
    stop = true;
    await Promise.all(senders);
    noSurprise();

    // Delivery resumes: every reading acknowledged after the promotion reaches the EHR (a worker whose blocking
    // connection died with the master and never came back would leave them waiting).
    await eventually(
      async () => {
        const d = await delivered(ehr);
        return [...ackedAfter].every((i) => d.set.has(i));
      },
      60000,
      'the readings acknowledged after the promotion delivered',
    );
    await eventually(
      async () => {
        const c = await gw.gateway.queue!.bull.getJobCounts();
        return c.waiting + c.active + c.delayed === 0;
      },
      60000,
      'the queue drained',
    );
    const drainedAt = Date.now();
    const d = await delivered(ehr);
    const lost = [...acked].filter((i) => !d.set.has(i));
    console.log(
      `      Cluster failover: ${acked.size} readings acknowledged (${ackedBeforeKill} before the kill, ${ackedAfter.size} after the promotion), ` +
        `${d.set.size} delivered, ${d.count - d.set.size} duplicated, LOST ${lost.length} acknowledged (asynchronous replication); ` +
        `promotion ${promotedAt - killedAt} ms after the kill, ingest back ${resumedAt - promotedAt} ms later at most, the queue drained ${drainedAt - resumedAt} ms after that; ` +
        `refusals during the failover: ${JSON.stringify(Object.fromEntries(refused))}; completions retried ${gw.gateway.queue!.completionsRetried}, lock renewals taken over from bull ${gw.gateway.queue!.locksKept}`,
    );
    assert.deepEqual(
      lost.filter((i) => ackedAfter.has(i)),
      [],
      'nothing acknowledged after the promotion is lost',
    );
    assert.equal(d.count, d.set.size, 'no reading delivered twice');
    // The jobs delivered while the master was down were marked completed once the replica took over, under their
    // locks: none was handed out and delivered again (each job was delivered once).
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    const deliveries = Number(/iomt_delivery_jobs_total\{destination="ehr",outcome="delivered"\} (\d+)/.exec(metrics)?.[1]);
    const completed = (await gw.gateway.queue!.bull.getJobCounts()).completed;
    assert.equal(deliveries, completed, 'job deliveries against jobs completed (a job delivered twice counts twice)');
    // /readyz reports the queue ready again.
    await eventually(async () => (await fetch(`${gw.url}/readyz`)).status === 200, 30000, '/readyz 200 after the failover');
  });
});
