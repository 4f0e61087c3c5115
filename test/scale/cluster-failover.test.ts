/**
 * Redis Cluster failover: a real three-master cluster in which the master that serves the delivery queue's slot has a
 * replica. Under load from four senders the master is killed (SIGKILL); the cluster promotes the replica by itself.
 * While the slot has no master, ingest holds requests (the cluster client retries) or refuses them with 503, never
 * anything else; then it resumes on the promoted replica, and so does delivery (a bull worker whose blocking
 * connection died with the master must take jobs again). The run prints what
 * acknowledged data asynchronous replication lost and how long each step took.
 */
import { strict as assert } from 'node:assert';
import { keySlot } from '../../src/queue/connection.js';
import { eventually, postJson, startEhr, startGateway, type TestEhr, type TestGateway } from '../helpers/harness.js';
import { startCluster, type TestCluster } from './cluster-procs.js';
import { assertFailoverRun, deliveredReadings, describeRun, failoverReadings, loadThroughFailover } from './failover-load.js';
import type { RedisProc } from './sentinel-procs.js';

const BASE = Date.parse('2026-11-24T10:00:00Z');
const reading = failoverReadings(BASE, { deviceId: 'OXI-CLFO-1', patientId: 'MRN-CLFO' });

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
    for (let i = 0; i < 10; i++) {
      const r = await postJson(`${gw.url}/ingest/measurements`, reading(i));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    await eventually(async () => (await deliveredReadings(ehr, BASE)).set.size === 10, 30000, 'the first readings delivered');
    const run = await loadThroughFailover(gw, ehr, reading, BASE, async () => {
      await queueMaster.kill();
      await eventually(
        async () => ((await cluster.on(replica.port, (c) => c.role())) as unknown[])[0] === 'master',
        60000,
        'the replica promoted by the cluster',
      );
    });
    const q = gw.gateway.queue!;
    console.log(
      describeRun(
        'Cluster failover',
        run,
        `; settlements retried ${q.settlementsRetried}, lock renewals taken over from bull ${q.locksKept}`,
      ),
    );
    assertFailoverRun(run);
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
