/**
 * The processes a fault scenario kills: a redis-server with AOF on a fixed port and data folder (restarted on the same
 * port and folder after SIGTERM or SIGKILL, as an operator's service manager would), and gateway processes started
 * from the CLI on fixed ports (so senders reconnect to the same address after a restart).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { freePort } from '../../src/queue/embedded-redis.js';
import { REPO_ROOT } from '../helpers/harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (exited(child)) return res();
    child.once('exit', () => res());
  });
}

export interface FaultRedis {
  url: string;
  port: number;
  dir: string;
  fsync: 'always' | 'everysec';
  pid(): number | undefined;
  /** Ends the server with a signal and waits for it to exit. */
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and folder (it loads the AOF). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * redis-server with AOF, `appendfsync` as given (the gateway's private Redis uses everysec; `always` makes every
 * acknowledged write survive a SIGKILL of Redis itself) and `maxmemory-policy noeviction`, as the gateway requires.
 */
export async function startFaultRedis(fsync: 'always' | 'everysec' = 'everysec'): Promise<FaultRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-faults-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let out = '';
  const start = async () => {
    out = '';
    const c = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        'yes',
        '--appendfsync',
        fsync,
        '--maxmemory-policy',
        'noeviction',
        '--logfile',
        '',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = c;
    c.stdout?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
    c.stderr?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
    const deadline = Date.now() + 20000;
    for (;;) {
      if (exited(c)) throw new Error(`redis-server exited: ${out}`);
      const r = new IORedis.default(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => undefined);
      try {
        await r.connect();
        if (!/loading:1/.test(await r.info('persistence'))) return;
      } catch {
        /* not up yet */
      } finally {
        r.disconnect();
      }
      if (Date.now() > deadline) throw new Error(`redis-server not ready on ${port}: ${out}`);
      await sleep(50);
    }
  };
  await start();
  const kill = async (signal: NodeJS.Signals) => {
    if (!child || exited(child)) return;
    const c = child;
    c.kill(signal);
    await waitExit(c);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    fsync,
    pid: () => child?.pid,
    kill,
    start,
    async stop() {
      await kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type Role = 'all' | 'ingest' | 'worker';

export interface FaultGateway {
  role: Role;
  url: string;
  mllpPort?: number;
  /** The last lines the process wrote (for a failure message). */
  output(): string;
  /** Whether the process is running. */
  alive(): boolean;
  /** Starts the process (again) on the same ports; resolves once /healthz answers. */
  start(): Promise<void>;
  kill(signal: NodeJS.Signals): Promise<void>;
}

/**
 * The gateway as operators run it: `node --import tsx src/main.ts start --role <role>`, from source. HTTP on a fixed
 * port, MLLP too for the roles that ingest.
 */
export async function gatewayProcess(role: Role, env: Record<string, string>): Promise<FaultGateway> {
  const port = await freePort();
  const mllpPort = role === 'worker' ? undefined : await freePort();
  let child: ChildProcess | undefined;
  let out = '';
  const url = `http://127.0.0.1:${port}`;
  const gw: FaultGateway = {
    role,
    url,
    mllpPort,
    output: () => out,
    alive: () => !!child && !exited(child),
    async start() {
      if (child && !exited(child)) throw new Error(`gateway (${role}) is already running`);
      const c = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/main.ts'), 'start', '--role', role], {
        cwd: REPO_ROOT,
        env: {
          ...process.env,
          ...env,
          HOST: '127.0.0.1',
          PORT: String(port),
          MLLP_ENABLED: mllpPort ? 'true' : 'false',
          MLLP_PORT: String(mllpPort ?? 0),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = c;
      let started = false;
      let run = '';
      const onData = (b: Buffer) => {
        out = (out + b.toString()).slice(-20000);
        // Started: the log line says so once every channel listens (the HTTP port alone opens earlier).
        if (!started) {
          run += b.toString();
          started = run.includes('"msg":"gateway started"');
        }
      };
      c.stdout?.on('data', onData);
      c.stderr?.on('data', onData);
      const deadline = Date.now() + 60000;
      for (;;) {
        if (exited(c)) throw new Error(`gateway (${role}) exited ${c.exitCode ?? c.signalCode}: ${out.slice(-3000)}`);
        if (started) {
          const r = await fetch(`${url}/healthz`).catch(() => undefined);
          if (r?.ok) return;
        }
        if (Date.now() > deadline) throw new Error(`gateway (${role}) did not start: ${out.slice(-3000)}`);
        await sleep(50);
      }
    },
    async kill(signal) {
      if (!child || exited(child)) return;
      const c = child;
      c.kill(signal);
      await waitExit(c);
    },
  };
  return gw;
}
