/**
 * A real Redis Cluster for tests: three masters (redis-server --cluster-enabled yes, each on a free port with its own
 * temporary folder and cluster config file), joined by `redis-cli --cluster create`, and optionally a replica added to
 * one master. Stopped (every process, every folder) by stop().
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type IORedis from 'ioredis';
import { freePort } from '../../src/queue/embedded-redis.js';
import { onPort, type RedisProc, startProc } from './sentinel-procs.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface TestCluster {
  masters: RedisProc[];
  /** host:port of each master, as REDIS_CLUSTER_NODES wants them. */
  addresses: string[];
  /** A command on one node (a plain connection, not a cluster client). */
  on<T>(port: number, f: (c: InstanceType<typeof IORedis.default>) => Promise<T>): Promise<T>;
  /** The port of the master that serves a slot. */
  portOfSlot(slot: number): Promise<number>;
  /** Adds a replica of the master on `masterPort`; resolves once it is in sync. */
  addReplica(masterPort: number): Promise<RedisProc>;
  stop(): Promise<void>;
}

function clusterArgs(dir: string, port: number, nodeTimeoutMs: number): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    join(dir, 'nodes.conf'),
    '--cluster-node-timeout',
    String(nodeTimeoutMs),
    '--save',
    '',
    '--appendonly',
    'no',
  ];
}

/** `nodeTimeoutMs`: how long a node may not answer before the others count it as failed (a failover test's pace). */
export async function startCluster(options: { nodeTimeoutMs?: number } = {}): Promise<TestCluster> {
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 5000;
  const dirs: string[] = [];
  const procs: RedisProc[] = [];
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), 'gw-cluster-'));
    dirs.push(d);
    return d;
  };
  const stop = async () => {
    await Promise.all(procs.map((p) => p.kill()));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  const on = onPort;
  const state = (port: number) => on(port, (c) => c.cluster('INFO') as Promise<string>).catch(() => '');
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      procs.push(await startProc(clusterArgs(tmp(), port, nodeTimeoutMs), port));
    }
    const masters = [...procs];
    const addresses = masters.map((m) => `127.0.0.1:${m.port}`);
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30000 });
    const deadline = Date.now() + 30000;
    for (;;) {
      const infos = await Promise.all(masters.map((m) => state(m.port)));
      if (infos.every((s) => /cluster_state:ok/.test(s) && /cluster_known_nodes:3/.test(s))) break;
      if (Date.now() > deadline) throw new Error(`the cluster did not reach cluster_state:ok: ${infos.join(' | ')}`);
      await sleep(100);
    }
    const portOfSlot = async (slot: number) => {
      const slots = (await on(masters[0].port, (c) => c.cluster('SLOTS'))) as unknown as [number, number, [string, number]][];
      const range = slots.find(([from, to]) => slot >= from && slot <= to);
      if (!range) throw new Error(`no node serves slot ${slot}`);
      return Number(range[2][1]);
    };
    return {
      masters,
      addresses,
      on,
      portOfSlot,
      async addReplica(masterPort) {
        const port = await freePort();
        const replica = await startProc(clusterArgs(tmp(), port, nodeTimeoutMs), port);
        procs.push(replica);
        const masterId = String(await on(masterPort, (c) => c.cluster('MYID')));
        await run(
          'redis-cli',
          ['--cluster', 'add-node', `127.0.0.1:${port}`, `127.0.0.1:${masterPort}`, '--cluster-slave', '--cluster-master-id', masterId],
          { timeout: 30000 },
        );
        const end = Date.now() + 30000;
        for (;;) {
          const info = await on(port, (c) => c.info('replication')).catch(() => '');
          if (/master_link_status:up/.test(info) && /cluster_state:ok/.test(await state(port))) return replica;
          if (Date.now() > end) throw new Error(`the replica on ${port} did not sync with ${masterPort}: ${info}`);
          await sleep(100);
        }
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
