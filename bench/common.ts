/** What the benchmarks share: their command-line options, a gateway child process, and how they run and exit. */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import { type Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(new URL('..', import.meta.url).pathname);
export const args = process.argv.slice(2);

/** The number after `--name`, or `def`. */
export function opt(name: string, def: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
}

/**
 * The gateway's entry as node's arguments: the sources through tsx (as `npm run dev`), or with --dist the build in
 * dist/ (as `npm start` runs it; `npm run build` first). The build costs less memory: no TypeScript compiled in each
 * JavaScript thread of the process.
 */
export function gatewayEntry(): string[] {
  if (!args.includes('--dist')) return ['--import', 'tsx', join(ROOT, 'src/main.ts')];
  const built = join(ROOT, 'dist/main.js');
  if (!existsSync(built)) throw new Error('--dist runs dist/main.js: run npm run build first');
  return [built];
}

/** How the gateway runs, for a bench's first line: from where, and whether role all delivers on its own thread. */
export function gatewayShape(): string {
  return `${args.includes('--dist') ? 'built (dist/)' : 'from the sources (tsx)'}, DELIVERY_THREAD=${process.env.DELIVERY_THREAD ?? 'auto'}`;
}

/**
 * Starts `src/main.ts start --role <role>` (or dist/main.js with --dist) as a child process (with a CPU profile in <tmp>/gw-bench-profile/ when
 * the bench was given --profile) and resolves with its URL once it logs that it has started.
 */
export function spawnGateway(env: Record<string, string>, role: string): Promise<{ child: ChildProcess; url: string }> {
  return spawnServer([...gatewayEntry(), 'start', '--role', role], env);
}

/** bench/floor.ts (the same stack's plumbing alone) as a child process, started and awaited as the gateway is. */
export function spawnFloor(env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  return spawnServer(['--import', 'tsx', join(ROOT, 'bench/floor.ts')], env);
}

/**
 * Two settings of the bench's own environment help find what V8 does with the gateway: BENCH_NODE_FLAGS, node options
 * for the gateway process that NODE_OPTIONS does not carry (V8's, such as --trace-gc or --trace-pretenuring-statistics),
 * and BENCH_STDOUT, a file that gets everything the gateway writes to its standard output (where V8 prints its traces).
 */
async function spawnServer(entry: string[], env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const profile = args.includes('--profile') ? ['--cpu-prof', '--cpu-prof-dir', join(tmpdir(), 'gw-bench-profile')] : [];
  const flags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...flags, ...profile, ...entry], {
    cwd: ROOT,
    // Two glibc malloc arenas, as npm start and the container image run the gateway (docs/scaling.md).
    env: { MALLOC_ARENA_MAX: '2', ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const url = await new Promise<string>((res, rej) => {
    child.stdout?.on('data', (b: Buffer) => {
      if (process.env.BENCH_STDOUT) appendFileSync(process.env.BENCH_STDOUT, b);
      out += b.toString();
      const m = /"url":"(http:[^"]+)"[^\n]*"msg":"gateway started"/.exec(out);
      if (m) res(m[1]);
      if (out.length > 100_000) out = out.slice(-10_000);
    });
    child.once('exit', (c) => rej(new Error(`gateway exited ${c}: ${out.slice(-2000)}`)));
  });
  return { child, url };
}

/** Runs the bench and exits: 0 when it finished, 1 with the error otherwise (children and timers must not keep it alive). */
export function run(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/**
 * POST one body to the gateway's /ingest/measurements; resolves with the HTTP status (the body is discarded).
 * `agent`: a keep-alive pool, for a load generator (node's default agent otherwise).
 */
export function postMeasurements(url: string, body: unknown, agent?: Agent): Promise<number> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/ingest/measurements`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': data.length } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * A load generator's connection: one keep-alive HTTP/1.1 socket with one request in flight, each request written as one
 * buffer built ahead (requestBytes) and each answer read for no more than its status and its end (Content-Length, or
 * a chunked body's last chunk), as wrk and autocannon do. node:http's client costs about 50 µs of CPU per request
 * (bench/path.ts prints it), and every microsecond the load takes is taken from the cores the gateway, Redis and the
 * sink share; this costs a fraction of that. The gateway sees the same requests either way.
 */
export class LoadConnection {
  private socket?: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiting?: { resolve(r: { status: number; body: Buffer }): void; reject(err: Error): void };

  constructor(private readonly url: URL) {}

  /** Sends a request built by requestBytes; resolves with the answer's status and body. */
  async send(request: Buffer): Promise<{ status: number; body: Buffer }> {
    if (this.waiting) throw new Error('one request at a time per connection');
    const socket = this.socket ?? (await this.open());
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      socket.write(request);
    });
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  private open(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect(Number(this.url.port), this.url.hostname, () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.setNoDelay(true);
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => this.read(chunk));
      socket.on('close', () => {
        if (this.socket === socket) this.socket = undefined;
        this.fail(new Error('the connection closed before the answer'));
      });
      socket.on('error', (err) => this.fail(err));
      this.socket = socket;
      this.buf = Buffer.alloc(0);
    });
  }

  private fail(err: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(err);
  }

  private read(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const headEnd = this.buf.indexOf('\r\n\r\n');
    if (headEnd < 0) return;
    const head = this.buf.toString('latin1', 0, headEnd).toLowerCase();
    const length = /\r\ncontent-length: *(\d+)/.exec(head);
    let end: number;
    if (length) end = headEnd + 4 + Number(length[1]);
    else if (/\r\ntransfer-encoding: *chunked/.test(head)) {
      const last = this.buf.indexOf('\r\n0\r\n\r\n', headEnd + 2);
      if (last < 0) return;
      end = last + 7;
    } else end = headEnd + 4;
    if (this.buf.length < end) return;
    const status = Number(this.buf.toString('latin1', 9, 12));
    const body = this.buf.subarray(headEnd + 4, end);
    this.buf = this.buf.subarray(end);
    if (/\r\nconnection: *close/.test(head)) this.close();
    const w = this.waiting;
    this.waiting = undefined;
    w?.resolve({ status, body });
  }
}

/** A POST of a JSON body to `path` at `url`, as the bytes LoadConnection sends. */
export function requestBytes(url: URL, path: string, body: string): Buffer {
  const payload = Buffer.from(body);
  const head = `POST ${path} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: ${payload.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), payload]);
}

export type Arrival = [string, number];
export interface SinkStats {
  /** Bytes of the transaction Bundles received. */
  bytes: number;
  observations: number;
  transactions: number;
  readings: number;
  arrivals: Arrival[];
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** The bench sink (bench/sink.ts) as a child process: its FHIR base URL and its counts, asked for over IPC. */
export type Sink = { child: ChildProcess; url: string; stats(): Promise<SinkStats> };

export async function startSink(): Promise<Sink> {
  const child = fork(join(ROOT, 'bench/sink.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((res) =>
    child.on('message', (m: { type: string; port: number }) => m.type === 'listening' && res(m.port)),
  );
  return {
    child,
    url: `http://127.0.0.1:${port}/fhir`,
    stats: () =>
      new Promise((res) => {
        const on = (m: { type: string } & SinkStats) => {
          if (m.type !== 'stats') return;
          child.off('message', on);
          res(m);
        };
        child.on('message', on);
        child.send({ type: 'stats' });
      }),
  };
}

/** Reading times are seconds after a day 60 days back: every offset the runs use stays behind the clock. */
export const DAY0 = Math.floor(Date.now() / 86_400_000 - 60) * 86_400_000;

export function reading(device: number, seq: number) {
  const t = new Date(DAY0 + seq * 1000).toISOString();
  return {
    deviceId: `BENCH-${device}`,
    patientId: `MRN-${device % 500}`,
    timestamp: t,
    measurements: [
      { code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (seq % 10), unit: '%' },
      { code: 'MDC_PULS_OXIM_PULS_RATE', value: 60 + (seq % 40), unit: 'bpm' },
    ],
  };
}
