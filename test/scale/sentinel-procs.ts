/**
 * A real Redis Sentinel deployment for tests: one master, one replica and three Sentinels, each a redis-server process
 * on a free port with its own temporary folder, failing over within a few seconds (down-after-milliseconds 1000).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { freePort } from '../../src/queue/embedded-redis.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const MASTER_NAME = 'gwmaster';

/** Runs `f` on a fresh connection to 127.0.0.1:`port` (one retry per command) and closes it. */
export async function onPort<T>(port: number, f: (c: InstanceType<typeof IORedis.default>) => Promise<T>): Promise<T> {
  const c = new IORedis.default(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  c.on('error', () => undefined);
  try {
    return await f(c);
  } finally {
    c.disconnect();
  }
}

export interface RedisProc {
  port: number;
  child: ChildProcess;
  /** SIGKILL, waiting for the exit. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and folder with the same arguments. */
  restart(): Promise<void>;
}

async function ping(port: number): Promise<boolean> {
  const c = new IORedis.default(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return (await c.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    c.disconnect();
  }
}

/** Starts a redis-server with `args` and waits until it answers PING on `port` (restart() starts it again). */
export async function startProc(args: string[], port: number): Promise<RedisProc> {
  let child!: ChildProcess;
  const launch = async () => {
    let out = '';
    child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
    child.stderr?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) throw new Error(`redis-server ${args.join(' ')} exited: ${out}`);
      if (await ping(port)) return;
      await sleep(50);
    }
    throw new Error(`redis-server on ${port} did not start: ${out}`);
  };
  await launch();
  const proc: RedisProc = {
    port,
    get child() {
      return child;
    },
    kill: () =>
      new Promise<void>((res) => {
        if (child.exitCode !== null || child.signalCode !== null) return res();
        child.once('exit', () => res());
        child.kill('SIGKILL');
      }),
    restart: launch,
  };
  return proc;
}

export interface SentinelSet {
  master: RedisProc;
  replica: RedisProc;
  sentinels: RedisProc[];
  /** host:port of each Sentinel, as REDIS_SENTINELS wants them. */
  addresses: string[];
  /** The port of the master the Sentinels name now. */
  masterPort(): Promise<number>;
  /** Waits until the Sentinels name a master other than `port` (a failover has happened). */
  waitForFailover(fromPort: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

function serverArgs(dir: string, port: number, extra: string[] = []): string[] {
  return ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', ...extra];
}

/** Starts the master, its replica and three Sentinels, and waits until the Sentinels know the replica and each other. */
export async function startSentinelSet(): Promise<SentinelSet> {
  const dirs: string[] = [];
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), 'gw-sentinel-'));
    dirs.push(d);
    return d;
  };
  const procs: RedisProc[] = [];
  try {
    const mPort = await freePort();
    const master = await startProc(serverArgs(tmp(), mPort), mPort);
    procs.push(master);
    const rPort = await freePort();
    const replica = await startProc(serverArgs(tmp(), rPort, ['--replicaof', '127.0.0.1', String(mPort)]), rPort);
    procs.push(replica);
    const sentinels: RedisProc[] = [];
    for (let i = 0; i < 3; i++) {
      const dir = tmp();
      const port = await freePort();
      const conf = join(dir, 'sentinel.conf');
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${mPort} 2`,
          `sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
          `sentinel failover-timeout ${MASTER_NAME} 3000`,
          `sentinel parallel-syncs ${MASTER_NAME} 1`,
          '',
        ].join('\n'),
      );
      const s = await startProc([conf, '--sentinel'], port);
      sentinels.push(s);
      procs.push(s);
    }
    const addresses = sentinels.map((s) => `127.0.0.1:${s.port}`);
    const ask = async <T>(port: number, ...args: string[]): Promise<T> => {
      const c = new IORedis.default(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
      c.on('error', () => undefined);
      try {
        return (await c.call('SENTINEL', ...args)) as T;
      } finally {
        c.disconnect();
      }
    };
    const masterPort = async () => {
      for (const s of sentinels) {
        try {
          const [, port] = await ask<[string, string]>(s.port, 'get-master-addr-by-name', MASTER_NAME);
          return Number(port);
        } catch {
          /* the next one */
        }
      }
      throw new Error('no Sentinel answered');
    };
    // Ready: the replica is in sync, and every Sentinel knows the replica and the two other Sentinels.
    const deadline = Date.now() + 30000;
    for (;;) {
      const ready = await Promise.all(
        sentinels.map(async (s) => {
          try {
            const replicas = await ask<unknown[]>(s.port, 'replicas', MASTER_NAME);
            const others = await ask<unknown[]>(s.port, 'sentinels', MASTER_NAME);
            return replicas.length >= 1 && others.length >= 2;
          } catch {
            return false;
          }
        }),
      );
      const c = new IORedis.default(rPort, '127.0.0.1', { maxRetriesPerRequest: 1 });
      c.on('error', () => undefined);
      const info = await c.info('replication').catch(() => '');
      c.disconnect();
      if (ready.every(Boolean) && /master_link_status:up/.test(info)) break;
      if (Date.now() > deadline) throw new Error('the Sentinels did not discover the replica and each other');
      await sleep(200);
    }
    return {
      master,
      replica,
      sentinels,
      addresses,
      masterPort,
      async waitForFailover(fromPort, timeoutMs = 30000) {
        const end = Date.now() + timeoutMs;
        for (;;) {
          const p = await masterPort().catch(() => fromPort);
          if (p !== fromPort) return p;
          if (Date.now() > end) throw new Error('the Sentinels did not fail over');
          await sleep(100);
        }
      },
      async stop() {
        await Promise.all(procs.map((p) => p.kill()));
        for (const d of dirs) rmSync(d, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await Promise.all(procs.map((p) => p.kill()));
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    throw err;
  }
}
