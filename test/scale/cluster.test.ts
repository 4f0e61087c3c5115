/**
 * Redis Cluster: a real three-master cluster (redis-server --cluster-enabled, joined by redis-cli --cluster create),
 * a gateway with REDIS_CLUSTER_NODES and three destinations, each a real EHR. Every multi-key path of the gateway runs
 * through the API (a MULTI, a Lua script or an MGET over keys of different slots would be refused with CROSSSLOT):
 * delivery with its locks, device registration with an EUI-64 alias, credentials and their revocation, assignment,
 * refusals and their replay, dead letters and their replay, the audit trail, the rate limit, failed-authentication
 * counting and its summaries, adapter registration, decommissioning. The destinations' queues land on different
 * masters; WAIT goes to the master of the queue's slot. On a single Redis, the key names stay those of earlier
 * versions (an upgrade finds its data).
 */
import { strict as assert } from 'node:assert';
import type { AuditEvent, Bundle, Observation } from 'fhir/r4';
import { ConfigError, CORE_KEYS, loadConfig } from '../../src/config/index.js';
import { createRedis, keySlot } from '../../src/queue/connection.js';
import { DeviceRegistry } from '../../src/devices/registry.js';
import { CredentialStore } from '../../src/access/credentials.js';
import { DeadLetterStore } from '../../src/delivery/dead-letters.js';
import { KeyLocks } from '../../src/delivery/locks.js';
import { RefusalStore } from '../../src/pipeline/refusals.js';
import { RegistrationStore } from '../../src/registration/store.js';
import { destinationGroupPrefix, keyGroup } from '../../src/core/keys.js';
import { queuePrefix } from '../../src/queue/queue.js';
import { eventually, startEhr, startGateway, startRedis, type TestEhr, type TestGateway } from '../helpers/harness.js';
import { ADMIN, call } from '../devices/wire.js';
import { destinationsFile } from '../destinations/helpers.js';
import { startCluster, type TestCluster } from './cluster-procs.js';

const QUEUE = 'iomt-delivery';
const queueTag = (destination: string) => `{gw:${destination === 'ehr' ? QUEUE : `${QUEUE}.${destination}`}}`;

const reading = (deviceId: string, minute: number, value = 97, patientId = 'MRN-CL') => ({
  deviceId,
  patientId,
  timestamp: `2026-11-23T12:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});
const at = (minute: number) => `2026-11-23T12:${String(minute).padStart(2, '0')}:00Z`;
const hasReading = async (ehr: TestEhr, minute: number) =>
  (await ehr.search<Observation>('Observation', { _count: '1000' })).some((o) => o.effectiveDateTime === at(minute));
const isTransaction = (req: { method: string; path: string }) => req.method === 'POST' && (req.path === '/' || req.path === '');
const kindOf = (e: AuditEvent) => e.subtype?.find((s) => s.system === 'urn:iomt-gateway:audit')?.code;
const countOf = (e: AuditEvent) => e.entity?.flatMap((en) => en.detail ?? []).find((d) => d.type === 'count')?.valueString;

async function audit(url: string, q: string): Promise<AuditEvent[]> {
  const r = await call(url, 'GET', `/api/audit?${q}`, ADMIN);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return (r.body as Bundle).entry?.map((e) => e.resource as AuditEvent) ?? [];
}

describe('Redis Cluster settings', () => {
  it('takes host:port nodes, and refuses them with Sentinels, with a database number, or malformed', () => {
    const c = loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-b:7001,[::1]:7002', REDIS_URL: 'redis://:secret@x:6379' }, CORE_KEYS);
    assert.deepEqual(c.redisClusterNodes, ['10.0.0.1:7000', 'redis-b:7001', '[::1]:7002']);
    assert.deepEqual(loadConfig({}, CORE_KEYS).redisClusterNodes, []);
    const refused = (env: Record<string, string>, pattern: RegExp) =>
      assert.throws(
        () => loadConfig(env, CORE_KEYS),
        (e: unknown) => e instanceof ConfigError && pattern.test(e.message),
      );
    refused({ REDIS_CLUSTER_NODES: '10.0.0.1:7000,no-port' }, /REDIS_CLUSTER_NODES: 'no-port' is not host:port/);
    refused({ REDIS_CLUSTER_NODES: '10.0.0.1:7000', REDIS_SENTINELS: '10.0.0.2:26379' }, /cannot both be set/);
    refused({ REDIS_CLUSTER_NODES: '10.0.0.1:7000', REDIS_URL: 'redis://x:6379/2' }, /database other than 0/);
  });
});

describe('key names: hash tags on a cluster only, the names of earlier versions on a single Redis', () => {
  it('keeps every key name of a single Redis as it was', async () => {
    const redis = await startRedis();
    const c = createRedis(redis.url, { maxRetriesPerRequest: 2 });
    try {
      assert.equal(keyGroup('gw:dev', c), 'gw:dev');
      assert.equal(destinationGroupPrefix('gw:dlq', 'ehr', c), 'gw:dlq:');
      assert.equal(destinationGroupPrefix('gw:lock', 'research', c), 'gw:lock:research:');
      assert.equal(queuePrefix(QUEUE, false), 'gw');
      await new DeviceRegistry(c).create({
        id: 'DEV-OLD',
        identifiers: { eui64: '00-1B-C5-0C-00-00-00-01' },
        state: 'registered',
        createdAt: 'x',
        updatedAt: 'x',
        stateChangedAt: 'x',
      } as never);
      const { credential } = await new CredentialStore(c).issue({ role: 'device', owner: 'DEV-OLD', createdBy: 'test' });
      await new DeadLetterStore(c).put({
        id: 'j1',
        jobId: 'j1',
        reason: 'r',
        kind: 'rejected',
        attempts: 1,
        deadAt: at(0),
        job: {} as never,
      });
      await new RefusalStore(c).add({ channel: 'http', format: 'json', receivedAt: at(0), status: 422, reason: 'r', body: {} } as never);
      await new RegistrationStore(c).addVersion(
        'acme-x',
        'acme',
        { description: '', deviceMapping: {}, fhirMapping: {}, samples: [], registeredAt: at(0), registeredBy: 't' },
        true,
      );
      const release = await new KeyLocks(c).acquire(['device:1', 'patient:1'], 10_000, 100);
      const keys = (await c.keys('*')).sort();
      await release();
      assert.deepEqual(keys, [
        `gw:adapter:acme-x`,
        'gw:adapter:ids',
        'gw:adapters:version',
        `gw:cred:${credential.keyId}`,
        'gw:cred:owner:device:DEV-OLD',
        'gw:dev:alias:eui64:00-1B-C5-0C-00-00-00-01',
        'gw:dev:ids',
        'gw:dev:rec:DEV-OLD',
        'gw:dlq:index',
        'gw:dlq:j1',
        'gw:lock:device:1',
        'gw:lock:patient:1',
        'gw:refusals',
        'gw:refusals:bytes',
        `gw:refusals:e:${keys.find((k) => k.startsWith('gw:refusals:e:'))?.slice('gw:refusals:e:'.length)}`,
        'gw:refusals:sizes',
      ]);
      assert.equal(keys.filter((k) => k.includes('{')).length, 0, 'no hash tag on a single Redis');
    } finally {
      c.disconnect();
      await redis.stop();
    }
  });
});

describe('Redis Cluster: the gateway on three masters', function () {
  this.timeout(180000);
  let cluster: TestCluster;
  const ehrs: TestEhr[] = [];
  let gw: TestGateway;
  /** A second instance (ingest) on the same cluster, which caches verified keys for ten minutes. */
  let gwB: TestGateway;
  /** The destinations: ehr and two more, named so that the three queues hash to the three masters. */
  let names: string[] = [];
  /** The master that serves each destination's queue. */
  const portOf = new Map<string, number>();
  let operatorKey = '';

  before(async () => {
    cluster = await startCluster();
    for (let i = 0; i < 3; i++) ehrs.push(await startEhr());
    // A slot's master, from the cluster; names picked so that each queue's tag is on another master.
    const masterOf = (tag: string) => cluster.portOfSlot(keySlot(tag));
    names = ['ehr'];
    portOf.set('ehr', await masterOf(queueTag('ehr')));
    for (let i = 0; names.length < 3 && i < 200; i++) {
      const port = await masterOf(queueTag(`d${i}`));
      if (![...portOf.values()].includes(port)) {
        names.push(`d${i}`);
        portOf.set(`d${i}`, port);
      }
    }
    assert.equal(new Set(portOf.values()).size, 3);
    const file = destinationsFile({
      destinations: names.map((name, i) => ({ name, baseUrl: ehrs[i].url, writeMode: 'transaction' })),
    });
    gw = await startGateway({
      REDIS_CLUSTER_NODES: cluster.addresses.join(','),
      DESTINATIONS_FILE: file,
      ADMIN_API_KEY: ADMIN,
      UNKNOWN_DEVICE_POLICY: 'reject',
      UNKNOWN_PATIENT_POLICY: 'create',
      AUTH_FAILURE_LIMIT: '3',
      AUTH_FAILURE_WINDOW_S: '600',
      RATE_LIMIT_PER_MINUTE: '1',
      RATE_LIMIT_BURST: '4',
      LOG_LEVEL: 'info',
    });
    gwB = await startGateway(
      {
        REDIS_CLUSTER_NODES: cluster.addresses.join(','),
        DESTINATIONS_FILE: file,
        ADMIN_API_KEY: ADMIN,
        UNKNOWN_DEVICE_POLICY: 'reject',
        CREDENTIAL_CACHE_TTL_MS: '600000',
        RATE_LIMIT_PER_MINUTE: '0',
        LOG_LEVEL: 'info',
      },
      'ingest',
    );
  });
  after(async () => {
    await gwB?.stop();
    await gw?.stop();
    for (const e of ehrs) await e.stop();
    await cluster?.stop();
  });
  afterEach(function () {
    // Any command the cluster refused (keys of two slots in one MULTI, script or MGET), even where the gateway only logs it.
    const refused = [...(gw?.logs ?? []), ...(gwB?.logs ?? [])].filter((l) =>
      /CROSSSLOT|same slot|non local key|All keys in the pipeline|channel unavailable|could not subscribe/i.test(l),
    );
    assert.deepEqual(refused, [], `${this.currentTest?.title}: commands refused by the cluster`);
  });

  it('would see a command over two slots refused (the check the tests below rely on)', async () => {
    const c = createRedis({ clusterNodes: cluster.addresses });
    try {
      await assert.rejects(c.eval("redis.call('SET', KEYS[1], 1) redis.call('SET', KEYS[2], 1)", 2, 'a', 'b'), /CROSSSLOT/);
      await assert.rejects(c.mget('a', 'b'), /CROSSSLOT/);
    } finally {
      c.disconnect();
    }
  });

  it('starts no private redis-server and reports every destination ready', async () => {
    assert.ok(!gw.logs.some((l) => /started a private redis-server/.test(l)));
    assert.ok(gw.logs.some((l) => /Redis Cluster/.test(l)));
    const ready = await fetch(`${gw.url}/readyz`);
    assert.equal(ready.status, 200);
  });

  it('registers a device (with an EUI-64), activates and assigns it, and delivers its readings to every destination', async () => {
    const reg = await call(gw.url, 'POST', '/api/devices', ADMIN, {
      id: 'OXI-CL1',
      identifiers: { eui64: '00-1B-C5-0C-00-00-00-42' },
      type: 'pulse-oximeter',
      adapter: 'measurements',
    });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
    assert.equal((await call(gw.url, 'POST', '/api/devices/OXI-CL1/activate', ADMIN)).status, 200);
    const assign = await call(gw.url, 'PUT', '/api/devices/OXI-CL1/assignment', ADMIN, { patientId: 'MRN-CL' });
    assert.equal(assign.status, 200, JSON.stringify(assign.body));
    // A second device with the same EUI-64 is refused: the alias index answers.
    const dup = await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'OXI-CL2', identifiers: { eui64: '001BC50C00000042' } });
    assert.equal(dup.status, 409, JSON.stringify(dup.body));

    for (let m = 0; m < 5; m++) {
      const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('OXI-CL1', m));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    }
    for (const [i, ehr] of ehrs.entries())
      await eventually(
        async () => (await Promise.all([0, 1, 2, 3, 4].map((m) => hasReading(ehr, m)))).every(Boolean),
        30000,
        `the five readings on destination ${names[i]}`,
      );
    const dev = await call(gw.url, 'GET', '/api/devices/OXI-CL1', ADMIN);
    assert.equal(dev.body.telemetry.messages, 5, 'telemetry counted (pipeline of the device keys)');
    const list = await call(gw.url, 'GET', '/api/devices?state=active', ADMIN);
    assert.deepEqual(
      list.body.map((d: { id: string; telemetry?: { messages: number } }) => [d.id, d.telemetry?.messages]),
      [['OXI-CL1', 5]],
      'the list reads every record (MGET) and their telemetry (pipeline)',
    );
  });

  it('puts the destinations’ queues on three masters, each in its own slot', async () => {
    const holders = new Map<string, number[]>();
    for (const name of names) {
      const tag = queueTag(name);
      const ports: number[] = [];
      for (const m of cluster.masters) if ((await cluster.on(m.port, (c) => c.keys(`${tag}*`))).length) ports.push(m.port);
      holders.set(name, ports);
      assert.deepEqual(ports, [portOf.get(name)], `${name}: the queue's keys on the master of its slot only`);
      const slot = Number(await cluster.on(ports[0], (c) => c.cluster('KEYSLOT', `${tag}:${name}:wait`)));
      assert.equal(slot, keySlot(tag), 'CLUSTER KEYSLOT agrees with the tag');
    }
    assert.equal(new Set([...holders.values()].flat()).size, 3, 'three queues on three masters');
  });

  it('issues, uses and revokes a device credential; rate-limits a credential', async () => {
    const issued = await call(gw.url, 'POST', '/api/devices/OXI-CL1/credentials', ADMIN);
    assert.equal(issued.status, 201, JSON.stringify(issued.body));
    const listed = await call(gw.url, 'GET', '/api/devices/OXI-CL1/credentials', ADMIN);
    assert.ok(listed.body.some((c: { keyId: string }) => c.keyId === issued.body.keyId));
    const sent = await call(gw.url, 'POST', '/ingest/measurements', issued.body.key, reading('OXI-CL1', 10));
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    await eventually(() => hasReading(ehrs[0], 10), 30000, 'the reading sent with the device key');

    // Instance B verifies the key once and caches it for ten minutes: only the revocation announced over pub/sub (on the
    // cluster) makes it refuse the key at once.
    assert.equal((await call(gwB.url, 'POST', '/ingest/measurements', issued.body.key, reading('OXI-CL1', 11))).status, 202);
    assert.equal((await call(gw.url, 'DELETE', `/api/devices/OXI-CL1/credentials/${issued.body.keyId}`, ADMIN)).status, 204);
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', issued.body.key, reading('OXI-CL1', 12))).status, 401);
    await eventually(
      async () => (await call(gwB.url, 'POST', '/ingest/measurements', issued.body.key, reading('OXI-CL1', 12))).status === 401,
      10000,
      'instance B to drop the revoked key (pub/sub on the cluster)',
    );

    const op = await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'cluster-ops' });
    assert.equal(op.status, 201);
    operatorKey = op.body.key;
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await call(gw.url, 'GET', '/api/devices', operatorKey)).status);
    assert.deepEqual(statuses.slice(0, 4), [200, 200, 200, 200], 'the burst');
    assert.ok(statuses.slice(4).includes(429), `then the limit (${statuses})`);
  });

  it('keeps a refusal and replays it once the device is registered and active', async () => {
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('OXI-CL9', 20));
    assert.equal(r.status, 403, JSON.stringify(r.body));
    const id = r.headers.get('x-refused-id');
    assert.ok(id);
    const listed = await call(gw.url, 'GET', '/api/refusals?deviceId=OXI-CL9', ADMIN);
    assert.equal(listed.body.total, 1, JSON.stringify(listed.body));
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${id}`, ADMIN)).status, 200);

    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'OXI-CL9', adapter: 'measurements' })).status, 201);
    assert.equal((await call(gw.url, 'POST', '/api/devices/OXI-CL9/activate', ADMIN)).status, 200);
    const replay = await call(gw.url, 'POST', `/api/refusals/${id}/replay`, ADMIN);
    assert.ok(replay.status < 300, JSON.stringify(replay.body));
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${id}`, ADMIN)).status, 404, 'accepted: removed from the store');
    await eventually(() => hasReading(ehrs[1], 20), 30000, 'the replayed reading');
  });

  it('dead-letters a reading the EHR refuses for good, and delivers it when replayed', async () => {
    const refusal = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invariant', diagnostics: 'refused' }] };
    ehrs[0].faults.push({ status: 422, body: refusal, match: isTransaction });
    assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('OXI-CL1', 30, 91))).status, 202);
    const dl = await eventually(
      async () => {
        const l = await call(gw.url, 'GET', '/api/dead-letters', ADMIN);
        return l.body.total === 1 ? l.body.items[0] : undefined;
      },
      30000,
      'the dead letter',
    );
    assert.equal(dl.httpStatus, 422);
    assert.equal((await call(gw.url, 'GET', `/api/dead-letters/${dl.id}`, ADMIN)).status, 200);
    assert.equal((await call(gw.url, 'GET', `/api/dead-letters?destination=${names[1]}`, ADMIN)).body.total, 0, 'the others delivered it');
    const retry = await call(gw.url, 'POST', `/api/dead-letters/${dl.id}/retry`, ADMIN);
    assert.equal(retry.status, 202, JSON.stringify(retry.body));
    await eventually(() => hasReading(ehrs[0], 30), 30000, 'the replayed dead letter');
    assert.equal((await call(gw.url, 'GET', '/api/dead-letters', ADMIN)).body.total, 0);
  });

  it('registers and deletes an adapter', async () => {
    assert.equal((await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: 'acme' })).status, 201);
    const key = (await call(gw.url, 'POST', '/api/vendors/acme/credentials', ADMIN)).body.key;
    const template = {
      typeName: 'hr',
      typeMatchExpression: '$..[?(@heartRate)]',
      deviceIdExpression: '$.deviceId',
      patientIdExpression: '$.patientId',
      timestampExpression: '$.time',
      values: [{ valueName: 'hr', valueExpression: '$.heartRate', required: true }],
    };
    const fhir = {
      typeName: 'hr',
      periodInterval: 0,
      codes: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }],
      value: { valueName: 'hr', valueType: 'Quantity', unit: '/min', code: '/min', system: 'http://unitsofmeasure.org' },
    };
    const r = await call(gw.url, 'POST', '/api/adapters', key, {
      id: 'acme-hr',
      description: 'heart rate',
      deviceMapping: { templateType: 'CollectionContent', template: [{ templateType: 'JsonPathContent', template }] },
      fhirMapping: { templateType: 'CollectionFhir', template: [{ templateType: 'CodeValueFhir', template: fhir }] },
      samples: [{ deviceId: 'HR-1', heartRate: 71, time: at(40), patientId: 'MRN-CL' }],
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal((await call(gw.url, 'GET', '/api/adapters/acme-hr', key)).status, 200);
    assert.equal((await call(gw.url, 'DELETE', '/api/adapters/acme-hr', key)).status, 204);
    assert.equal((await call(gw.url, 'GET', '/api/adapters/acme-hr', key)).status, 404);
  });

  it('counts failed authentications, answers 429 over the limit, and summarises the window in the audit trail', async () => {
    const failures = gw.gateway.features?.devices.access.failures;
    assert.ok(failures);
    await failures.flush(Date.now() + 601_000); // the earlier 401s (the revoked key) end their window here
    const fake = 'gw_00000000000000aa_wrongwrongwrongwrongwrong';
    for (let i = 0; i < 3; i++) assert.equal((await call(gw.url, 'GET', '/api/devices', fake)).status, 401);
    assert.equal((await call(gw.url, 'GET', '/api/devices', ADMIN)).status, 429, 'the address is over its limit');
    await failures.flush(Date.now() + 601_000);
    assert.equal((await call(gw.url, 'GET', '/api/devices', ADMIN)).status, 200, 'a new window');
    const refused = await audit(gw.url, 'kind=access-refused&limit=1000');
    assert.ok(
      refused.some((e) => countOf(e) === '3'),
      `a summary of the three failures (${refused.map(countOf)})`,
    );
  });

  it('decommissions a device (its credentials revoked, its keys wiped) and keeps the audit trail', async () => {
    const issued = await call(gw.url, 'POST', '/api/devices/OXI-CL9/credentials', ADMIN);
    assert.equal(issued.status, 201);
    const d = await call(gw.url, 'POST', '/api/devices/OXI-CL9/decommission', ADMIN);
    assert.equal(d.status, 200, JSON.stringify(d.body));
    const report = await call(gw.url, 'GET', '/api/devices/OXI-CL9/decommission-report', ADMIN);
    assert.deepEqual(report.body.wiped.credentials, [issued.body.keyId]);
    assert.equal(report.body.wiped.telemetry, true);
    const kinds = new Set((await audit(gw.url, 'limit=1000')).map(kindOf));
    for (const k of [
      'device-registered',
      'device-activate',
      'device-assignment',
      'device-decommission',
      'credential-issued',
      'credential-revoked',
    ])
      assert.ok(kinds.has(k), `${k} in the audit trail (${[...kinds]})`);
  });

  it('keeps each group of keys used together under its own hash tag; the rest are single keys', async () => {
    const all = new Set<string>();
    for (const m of cluster.masters) for (const k of await cluster.on(m.port, (c) => c.keys('*'))) all.add(k);
    const keys = [...all];
    for (const tag of ['{gw:dev}:', '{gw:cred}:', '{gw:refusals}', ...names.map(queueTag)])
      assert.ok(
        keys.some((k) => k.startsWith(tag)),
        `keys under ${tag}`,
      );
    // Untagged: only keys that no command uses together with another.
    const single = /^gw:(adapters:version|vendor:|dev:fhirver:|hmac:seen:|rl:|audit|sub:|hl7:ack:|console:session:)/;
    const stray = keys.filter((k) => !k.startsWith('{') && !single.test(k));
    assert.deepEqual(stray, [], 'no key of a multi-key group without its tag');
  });
});

describe('Redis Cluster: WAIT goes to the master of the queue’s slot', function () {
  this.timeout(120000);
  let cluster: TestCluster;
  let ehr: TestEhr;
  let gw: TestGateway;

  before(async () => {
    cluster = await startCluster();
    ehr = await startEhr();
    gw = await startGateway({
      REDIS_CLUSTER_NODES: cluster.addresses.join(','),
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      REDIS_WAIT_REPLICAS: '1',
      REDIS_WAIT_TIMEOUT_MS: '300',
      RATE_LIMIT_PER_MINUTE: '0',
      LOG_LEVEL: 'info',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await cluster?.stop();
  });

  it('refuses (503) while the master has no replica, then acknowledges once one has the job', async () => {
    const waits = async (port: number) =>
      Number(/cmdstat_wait:calls=(\d+)/.exec(await cluster.on(port, (c) => c.info('commandstats')))?.[1] ?? 0);
    const master = await cluster.portOfSlot(keySlot(queueTag('ehr')));
    const before = await Promise.all(cluster.masters.map((m) => waits(m.port)));
    const r = await call(gw.url, 'POST', '/ingest/measurements', undefined, reading('OXI-W1', 50));
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.match(JSON.stringify(r.body), /0 of the 1 replicas/);
    const after = await Promise.all(cluster.masters.map((m) => waits(m.port)));
    const waited = cluster.masters.map((m, i) => ({ port: m.port, waits: after[i] - before[i] }));
    assert.deepEqual(
      waited,
      cluster.masters.map((m) => ({ port: m.port, waits: m.port === master ? 1 : 0 })),
      'one WAIT, on the master of the queue’s slot, none on the others',
    );

    await cluster.addReplica(master);
    const again = await eventually(
      async () => {
        const x = await call(gw.url, 'POST', '/ingest/measurements', undefined, reading('OXI-W1', 50));
        return x.status === 202 ? x : undefined;
      },
      30000,
      'the resend acknowledged once the replica has it',
    );
    assert.equal(again.status, 202);
    await eventually(() => hasReading(ehr, 50), 30000, 'the reading delivered');
  });
});
