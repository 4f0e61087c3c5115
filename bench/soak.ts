/**
 * Memory soak (not a test): one gateway process under a steady load for a long time, its RSS and V8 heap printed
 * every interval, and at the end the slope of each (least squares over the samples after the first interval, the
 * warm-up) and whether it is flat. The heap is also given as its floor: the least heap in use of the interval's
 * once-a-second reports, what the collector left live. One sample of the heap in use lands anywhere on the collector's
 * sawtooth (21–39 MiB at 300 readings/s in one run), and a straight line through such samples can slope by chance;
 * a heap that grows raises its floor.
 *
 * The gateway runs from the sources (as `npm run dev`; --dist: from dist/, as `npm start`) with a small preload that reports `process.memoryUsage()`
 * once a second on stdout.
 *
 * Load: readings posted over HTTP, `--batch` per request (default 1, the cuff/scale/wearable shape) at `--rate`
 * readings/s (default 200), delivered to a benchmark FHIR sink; `--sandbox` delivers to the gateway's own sandbox
 * EHR instead (FHIR_BASE_URL unset), so its memory counts. `--rate 0` measures an idle gateway.
 *
 * `--role worker` measures a worker process; an ingest process (not measured) takes the load and feeds it.
 *
 * Each line also gives the gateway's CPU time over the interval (user + system, % of one core): a setting that saves
 * memory by collecting garbage more often shows its price there. At the end: the readings the EHR received, so that
 * a run says whether delivery kept up. `--env KEY=VALUE` (repeatable) sets a gateway configuration key for the
 * measured process (e.g. `--env HEAP_GROWTH_PERCENT=0` for V8's own heap sizing), to compare settings back to back.
 * The gateways listen for MLLP on a port of their own (port 2575 may be another gateway's).
 *
 * Usage: npx tsx bench/soak.ts [--seconds 600] [--interval 30] [--rate 200] [--batch 1] [--role all|ingest|worker]
 *                               [--sandbox] [--env KEY=VALUE ...] [--dist]
 * (--dist: the build in dist/, as npm start runs it, instead of the sources; npm run build first)
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import { args, gatewayEntry, gatewayShape, opt, ROOT, run } from './common.js';

const SECONDS = opt('seconds', 600);
const INTERVAL = opt('interval', 30);
const RATE = opt('rate', 200);
const BATCH = opt('batch', 1);
const ROLE = args.includes('--role') ? args[args.indexOf('--role') + 1] : 'all';
const SANDBOX = args.includes('--sandbox');
/** Configuration keys for the measured gateway only (--env KEY=VALUE). */
const MEASURED_ENV: Record<string, string> = Object.fromEntries(
  args.flatMap((a, i) => (a === '--env' && args[i + 1]?.includes('=') ? [args[i + 1].split(/=(.*)/s).slice(0, 2)] : [])),
);
const MiB = 2 ** 20;

interface Mem {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** process.cpuUsage(): user + system CPU time since the process started, in microseconds. */
  cpu: number;
}

const PRELOAD = `
process.stdout.on('error', () => undefined);
setInterval(() => {
  const { user, system } = process.cpuUsage();
  process.stdout.write(JSON.stringify({ soakMemory: { ...process.memoryUsage(), cpu: user + system } }) + '\\n');
}, 1000).unref();
`;

/** Every child process started here, ended when the soak ends (also when it fails). */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
function exited(c: ChildProcess): Promise<void> {
  return c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', () => r()));
}

async function startGateway(
  env: Record<string, string>,
  role: string,
): Promise<{ child: ChildProcess; url: string; mem(): Mem | undefined; peak(): number; heapFloor(): number | undefined }> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-soak-'));
  const preload = join(dir, 'memory-report.mjs');
  writeFileSync(preload, PRELOAD);
  const child = spawn(process.execPath, ['--import', preload, ...gatewayEntry(), 'start', '--role', role], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  let last: Mem | undefined;
  let peak = 0;
  let floor: number | undefined;
  let buf = '';
  const url = await new Promise<string>((res, rej) => {
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        if (line.startsWith('{"soakMemory"')) {
          last = (JSON.parse(line) as { soakMemory: Mem }).soakMemory;
          peak = Math.max(peak, last.rss);
          floor = Math.min(floor ?? last.heapUsed, last.heapUsed);
          continue;
        }
        const m = /"url":"(http:[^"]+)"[^\n]*"msg":"gateway started"/.exec(line);
        if (m) res(m[1]);
      }
    });
    child.once('exit', (c) => rej(new Error(`gateway exited ${c}`)));
  });
  return {
    child,
    url,
    mem: () => last,
    peak: () => peak,
    heapFloor: () => {
      const f = floor;
      floor = undefined;
      return f;
    },
  };
}

async function startSink(): Promise<{ child: ChildProcess; url: string }> {
  const child = fork(join(ROOT, 'bench/sink.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const port = await new Promise<number>((res) =>
    child.on('message', (m: { type: string; port: number }) => m.type === 'listening' && res(m.port)),
  );
  return { child, url: `http://127.0.0.1:${port}/fhir` };
}

/** The readings the sink has received so far. */
function sinkReadings(sink: ChildProcess): Promise<number> {
  return new Promise((res) => {
    const on = (m: { type: string; readings: number }) => {
      if (m.type !== 'stats') return;
      sink.off('message', on);
      res(m.readings);
    };
    sink.on('message', on);
    sink.send({ type: 'stats' });
  });
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });
let refused = 0;
function post(url: string, body: unknown): Promise<void> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve) => {
    const req = request(
      `${url}/ingest/measurements`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': data.length } },
      (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode !== 202) refused++;
          resolve();
        });
      },
    );
    req.on('error', () => {
      refused++;
      resolve();
    });
    req.end(data);
  });
}

function reading(seq: number) {
  const device = seq % 2000;
  return {
    deviceId: `SOAK-${device}`,
    patientId: `MRN-${device % 500}`,
    timestamp: new Date(Date.UTC(2026, 10, 23) + seq * 1000).toISOString(),
    measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (seq % 10), unit: '%' }],
  };
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den ? num / den : 0;
}

async function main(): Promise<void> {
  const redis = new EmbeddedRedis({ dataDir: mkdtempSync(join(tmpdir(), 'gw-soak-redis-')), appendOnly: true });
  const redisUrl = await redis.start();
  const sink = SANDBOX ? undefined : await startSink();
  const env: Record<string, string> = {
    PORT: '0',
    REDIS_URL: redisUrl,
    LOG_LEVEL: 'warn',
    UNKNOWN_PATIENT_POLICY: 'create',
    UNKNOWN_DEVICE_POLICY: 'accept',
    MAPPINGS_WATCH: 'false',
    MLLP_PORT: '0',
    QUEUE_MAX_DEPTH: '10000000',
    JOB_RETENTION_COMPLETED: '1000',
    ...(sink ? { FHIR_BASE_URL: sink.url } : {}),
  };
  // 'info' would print a line per request; the start line is at info, so the gateway logs at info but the soak
  // reads only the start line and its own reports.
  env.LOG_LEVEL = 'info';
  const gw = await startGateway({ ...env, ...MEASURED_ENV }, ROLE);
  // A worker takes its jobs from an ingest process (not measured).
  const feeder = ROLE === 'worker' ? await startGateway(env, 'ingest') : undefined;
  const ingestUrl = feeder?.url ?? gw.url;
  let seq = 0;
  let stop = false;
  const loadDone = (async () => {
    if (RATE <= 0) return;
    const t0 = Date.now();
    const inflight = new Set<Promise<void>>();
    while (!stop) {
      const due = t0 + (seq * 1000 * BATCH) / RATE;
      const wait = due - Date.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const body = BATCH === 1 ? reading(seq) : Array.from({ length: BATCH }, (_, k) => reading(seq * BATCH + k));
      seq++;
      const p = post(ingestUrl, body).finally(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size > 256) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  })();
  await new Promise((r) => setTimeout(r, 2000));
  const started = gw.mem();
  console.log(
    `gateway role ${ROLE} (${gatewayShape()})${SANDBOX ? ' with the sandbox EHR' : ', FHIR_BASE_URL set (benchmark sink)'}; ${RATE} readings/s offered, ${BATCH} per request; ${SECONDS} s${
      Object.keys(MEASURED_ENV).length
        ? `; ${Object.entries(MEASURED_ENV)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')}`
        : ''
    }`,
  );
  if (started) console.log(`after start: rss ${(started.rss / MiB).toFixed(0)} MiB, heap used ${(started.heapUsed / MiB).toFixed(0)} MiB`);
  console.log('   t (s)   rss MiB   heapUsed MiB   heap floor MiB   heapTotal MiB   external MiB   cpu %   readings posted');
  const t0 = Date.now();
  const cpu0 = started?.cpu ?? 0;
  let cpuBefore = cpu0;
  const xs: number[] = [];
  const rss: number[] = [];
  const heap: number[] = [];
  const floors: number[] = [];
  gw.heapFloor();
  while ((Date.now() - t0) / 1000 < SECONDS) {
    await new Promise((r) => setTimeout(r, INTERVAL * 1000));
    const m = gw.mem();
    const floor = gw.heapFloor();
    if (!m || floor === undefined) continue;
    const t = (Date.now() - t0) / 1000;
    const cpu = ((m.cpu - cpuBefore) / 1e4 / INTERVAL).toFixed(0);
    cpuBefore = m.cpu;
    console.log(
      `${t.toFixed(0).padStart(8)}${(m.rss / MiB).toFixed(0).padStart(10)}${(m.heapUsed / MiB).toFixed(0).padStart(15)}${(floor / MiB).toFixed(0).padStart(17)}${(m.heapTotal / MiB).toFixed(0).padStart(16)}${(m.external / MiB).toFixed(0).padStart(15)}${cpu.padStart(8)}${String(seq * BATCH).padStart(18)}`,
    );
    if (t > INTERVAL * 1.5) {
      xs.push(t / 60);
      rss.push(m.rss / MiB);
      heap.push(m.heapUsed / MiB);
      floors.push(floor / MiB);
    }
  }
  stop = true;
  await loadDone;
  const end = gw.mem();
  const cpuSeconds = ((end?.cpu ?? cpu0) - cpu0) / 1e6;
  const sr = slope(xs, rss);
  const sh = slope(xs, heap);
  const sf = slope(xs, floors);
  // Flat: the fitted growth over the run is under 5% of the level (or 5 MiB), i.e. no leak visible at this length.
  const flat = (s: number, ys: number[]) => Math.abs(s * (xs[xs.length - 1] - xs[0] || 1)) < Math.max(5, 0.05 * (ys[0] ?? 0));
  console.log(`peak rss ${(gw.peak() / MiB).toFixed(0)} MiB; ${refused} requests not accepted`);
  console.log(
    `gateway cpu ${cpuSeconds.toFixed(0)} s over the run (${((cpuSeconds / ((Date.now() - t0) / 1000)) * 100).toFixed(0)}% of one core)`,
  );
  if (sink && ROLE !== 'ingest') {
    // Delivery drains what was posted: wait up to 30 s for it to catch up.
    const posted = seq * BATCH - refused * BATCH;
    let got = await sinkReadings(sink.child);
    for (let i = 0; i < 30 && got < posted; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      got = await sinkReadings(sink.child);
    }
    console.log(`readings delivered to the EHR: ${got} of ${posted} accepted`);
  }
  console.log(
    `rss slope ${sr.toFixed(2)} MiB/min (${flat(sr, rss) ? 'flat' : 'NOT flat'}); heap slope ${sh.toFixed(2)} MiB/min (${flat(sh, heap) ? 'flat' : 'NOT flat'}); heap floor slope ${sf.toFixed(2)} MiB/min (${flat(sf, floors) ? 'flat' : 'NOT flat'})`,
  );
  gw.child.stdout?.resume();
  feeder?.child.stdout?.resume();
  // The gateways stop before their Redis does (a gateway whose Redis vanishes mid-shutdown fails its last commands).
  gw.child.kill('SIGTERM');
  feeder?.child.kill('SIGTERM');
  await Promise.all([exited(gw.child), feeder ? exited(feeder.child) : undefined]);
  sink?.child.kill();
  await redis.stop();
}

run(main);
