/**
 * A private redis-server for the one-command start: when REDIS_URL is unset the gateway runs its own Redis as a child
 * process, with AOF on and `maxmemory-policy noeviction`, data in REDIS_DATA_DIR, on a free port. The AOF is written to
 * disk every second by default (REDIS_APPENDFSYNC=everysec: a crash of the whole machine can lose about the last second
 * of acknowledged jobs; a crash of the gateway or of Redis alone loses nothing) or before Redis answers each write
 * (always: nothing acknowledged is lost, at a cost in throughput measured by `npm run bench -- --fsync both`).
 *
 * Several gateway processes may use one data folder (`--role ingest` beside `--role worker`, or `npm run dev` beside
 * `npm start`): the first starts the redis-server, the others share it. Each process using it registers its pid in
 * `users/`; the last one to stop stops Redis. A redis-server whose users are all gone (their gateways were killed) is
 * an orphan: it is stopped (it flushes its AOF) and started anew, never run twice on one AOF. The decision is taken
 * under an exclusive lock file (`start.lock`), so two processes starting together cannot both start a Redis.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

const isAlive = (pid: number): boolean => {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** The live gateway processes registered as users of the data folder's Redis (stale entries are removed). */
function liveUsers(dir: string): number[] {
  const users = join(dir, 'users');
  if (!existsSync(users)) return [];
  const live: number[] = [];
  for (const name of readdirSync(users)) {
    const pid = Number(name);
    if (isAlive(pid)) live.push(pid);
    else rmSync(join(users, name), { force: true });
  }
  return live;
}

/** Runs `fn` holding the data folder's start lock (a file created exclusively; a lock of a dead process is broken). */
async function withStartLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, 'start.lock');
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      const fd = openSync(lock, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(lock, 'utf8').trim() || '0');
      if (owner && !isAlive(owner)) rmSync(lock, { force: true });
      else if (Date.now() > deadline) throw new Error(`the data folder ${dir} is locked by process ${owner}; is another gateway starting?`);
      else await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/** The pid of the data folder's redis-server when it is running (and is a redis-server). */
function runningRedis(pidfile: string): number | undefined {
  if (!existsSync(pidfile)) return undefined;
  const pid = Number(readFileSync(pidfile, 'utf8').trim());
  if (!isAlive(pid)) return undefined;
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server')) return undefined;
  } catch {
    /* not Linux: trust the pid */
  }
  return pid;
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
  /** When the AOF is written to disk: every second (default) or before each write is answered. */
  appendFsync?: 'everysec' | 'always';
  port?: number;
}

export class EmbeddedRedis {
  private child?: ChildProcess;
  private stopping?: Promise<void>;
  private dir = '';
  port = 0;
  /** Set when this process uses a redis-server another gateway process started on the same data folder. */
  sharedWith?: number;

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
    this.dir = dir;
    mkdirSync(join(dir, 'users'), { recursive: true });
    return withStartLock(dir, async () => {
      const pidfile = join(dir, 'redis.pid');
      const running = runningRedis(pidfile);
      const portFile = join(dir, 'redis.port');
      if (running && liveUsers(dir).length && existsSync(portFile)) {
        // Another gateway process runs it: share it.
        this.port = Number(readFileSync(portFile, 'utf8').trim());
        await this.waitReady();
        // The stronger setting wins: a process that asks for appendfsync always gets it on the shared Redis too.
        if (this.options.appendFsync === 'always') await this.configSet('appendfsync', 'always');
        this.sharedWith = running;
        this.register();
        return this.url;
      }
      await stopOrphan(pidfile);
      const url = await this.spawn(dir, pidfile);
      writeFileSync(portFile, String(this.port));
      this.register();
      return url;
    });
  }

  private register(): void {
    writeFileSync(join(this.dir, 'users', String(process.pid)), '');
  }

  private unregister(): void {
    if (this.dir) rmSync(join(this.dir, 'users', String(process.pid)), { force: true });
  }

  private async spawn(dir: string, pidfile: string): Promise<string> {
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
      this.options.appendFsync ?? 'everysec',
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
    // If the gateway exits without stop() (a crash), its Redis goes with it rather than living on as an orphan, unless
    // another gateway process still uses it.
    const onExit = () => {
      this.unregister();
      if (!liveUsers(dir).length) child.kill('SIGTERM');
    };
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

  private async configSet(name: string, value: string): Promise<void> {
    const c = new IORedis.default(this.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 1 });
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.config('SET', name, value);
    } finally {
      c.disconnect();
    }
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

  /**
   * Leaves the data folder's Redis; the last process using it stops it (SIGTERM: it flushes the AOF). Safe to call
   * twice.
   */
  stop(): Promise<void> {
    this.stopping ??= new Promise<void>((res) => {
      this.unregister();
      if (this.dir && liveUsers(this.dir).length) {
        // Others still use it: leave it running, and let this process exit without waiting for it.
        this.child?.stdout?.destroy();
        this.child?.stderr?.destroy();
        this.child?.unref();
        return res();
      }
      if (this.sharedWith) {
        // The process that started it has gone: this one was the last user.
        const pid = this.sharedWith;
        if (isAlive(pid)) process.kill(pid, 'SIGTERM');
        const deadline = Date.now() + 10000;
        const wait = () => (!isAlive(pid) || Date.now() > deadline ? res() : void setTimeout(wait, 50));
        return wait();
      }
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
