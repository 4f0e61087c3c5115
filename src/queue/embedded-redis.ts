/**
 * A private redis-server for the one-command start: when REDIS_URL is unset the gateway runs its own Redis as a child
 * process, with AOF on (appendfsync everysec: at most about one second of acknowledged jobs can be lost if the whole
 * machine fails; a crash of the gateway or of Redis alone loses nothing) and `maxmemory-policy noeviction`, data in
 * REDIS_DATA_DIR, on a free port. It is stopped with the gateway.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import IORedis from 'ioredis';

export class RedisNotInstalledError extends Error {
  constructor() {
    super(
      'REDIS_URL is not set and no redis-server is on PATH.\n' +
        '  Either install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)\n' +
        '  or point the gateway at one: REDIS_URL=redis://host:6379',
    );
    this.name = 'RedisNotInstalledError';
  }
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/**
 * A private redis-server left running by a gateway that was killed (SIGKILL cannot be caught) still owns the data
 * folder: two Redis processes must never write one AOF. Stop it (it flushes its AOF on SIGTERM) before starting anew.
 */
async function stopOrphan(pidfile: string): Promise<void> {
  if (!existsSync(pidfile)) return;
  const pid = Number(readFileSync(pidfile, 'utf8').trim());
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    /* not running (or not Linux: the pid is then checked with a signal below) */
  }
  const alive = (() => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  })();
  if (!pid || !alive || (cmdline && !cmdline.includes('redis-server'))) {
    rmSync(pidfile, { force: true });
    return;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`an earlier redis-server (pid ${pid}) still holds ${pidfile}; stop it and start again`);
}

export function redisServerAvailable(bin = 'redis-server'): boolean {
  const r = spawnSync(bin, ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

export interface EmbeddedRedisOptions {
  dataDir: string;
  /** AOF on (durable) unless false (throwaway test instances). */
  appendOnly?: boolean;
  port?: number;
}

export class EmbeddedRedis {
  private child?: ChildProcess;
  private stopping?: Promise<void>;
  port = 0;

  constructor(private readonly options: EmbeddedRedisOptions) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<string> {
    if (!redisServerAvailable()) throw new RedisNotInstalledError();
    const dir = resolve(this.options.dataDir);
    mkdirSync(dir, { recursive: true });
    const pidfile = join(dir, 'redis.pid');
    await stopOrphan(pidfile);
    this.port = this.options.port ?? (await freePort());
    const aof = this.options.appendOnly !== false;
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      aof ? 'yes' : 'no',
      '--appendfsync',
      'everysec',
      '--maxmemory-policy',
      'noeviction',
      '--protected-mode',
      'yes',
      '--daemonize',
      'no',
      '--logfile',
      '',
      '--pidfile',
      pidfile,
    ];
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    // If the gateway exits without stop() (a crash), its Redis goes with it rather than living on as an orphan.
    const onExit = () => child.kill('SIGTERM');
    process.once('exit', onExit);
    child.once('exit', () => process.off('exit', onExit));
    let output = '';
    child.stdout?.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-4000)));
    child.stderr?.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-4000)));
    const exited = new Promise<never>((_, rej) =>
      child.once('exit', (code) => rej(new Error(`redis-server exited (${code}): ${output.trim().split('\n').slice(-3).join(' ')}`))),
    );
    await Promise.race([this.waitReady(), exited]);
    return this.url;
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + 15000;
    for (;;) {
      const c = new IORedis.default(this.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => undefined);
      try {
        await c.connect();
        if ((await c.ping()) === 'PONG') {
          // Loading a large AOF answers LOADING; wait until the data is in.
          const info = await c.info('persistence');
          if (!/loading:1/.test(info)) return;
        }
      } catch {
        /* not up yet */
      } finally {
        c.disconnect();
      }
      if (Date.now() > deadline) throw new Error('redis-server did not become ready in 15 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops Redis (SIGTERM: it flushes the AOF). Safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= new Promise<void>((res) => {
      const c = this.child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return res();
      const t = setTimeout(() => c.kill('SIGKILL'), 10000);
      c.once('exit', () => {
        clearTimeout(t);
        res();
      });
      c.kill('SIGTERM');
    });
    return this.stopping;
  }
}
