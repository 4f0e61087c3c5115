/**
 * End-to-end benchmark (not a test): device readings posted over HTTP → gateway (translate, validate, enqueue) →
 * Redis (bull, AOF on) → delivery worker → a fast FHIR sink that accepts transactions.
 *
 * Prints, in one run on this machine:
 *   - sustained throughput: readings/s and Observations/s delivered, with the gateway's peak RSS, for each request
 *     shape: 20 readings per request (a hub forwarding a batch) and 1 reading per request (a cuff, a scale, a wearable)
 *   - ingest-to-EHR latency p50/p99 at a fixed offered rate (below saturation)
 *   - open loop: one reading per request offered at --offer readings/s (default 3000; 0: not) as a fleet of devices
 *     sends them (no waiting for the answers to other requests): the delivered readings/s and the latency; the closed
 *     loop of the sustained runs measures 16 requests in flight, and so the latency of one as much as the throughput
 *   - the ceiling: bull no-op jobs/s on the same Redis (the median of three runs after a warm-up), measured just before
 *     each request shape's sustained phase and again at the end, and the ratio of delivered readings/s to each: to the
 *     one next to its phase, and to the one at the end. The shapes after the first (1 per request) run --repeat times
 *     (3 by default), each after a ceiling of its own, and the run of the median ratio is reported, with every run's
 *     figures
 *
 * Usage: npm run bench [-- --readings 20000 --batch 20,1 --rate 500 --offer 3000 --seconds 10 --concurrency 32 --batch-max N --split --profile
 *                         --fsync everysec|always|both --mllp 500,1500 --scale 1+1,2+2 --rounds 1 --warmup 40000 --repeat 3 --dist]
 * (--batch: readings per request in the sustained phase, one run per value, 20 then 1 by default; --batch-max:
 *  DELIVERY_BATCH_MAX, the gateway's default if absent; --warmup N: readings of each shape posted and delivered before
 *  anything is measured, not reported, 40000 by default: the figures are of a gateway that has run a while)
 * (--mllp R: afterwards (default 500,1500; 0: not), runs bench/hl7v2.ts with --rate R: ACKed PCD-01 messages/s over MLLP and the ACK latency
 *  p50/p99 at N messages/s offered, against a gateway in the ingest role)
 * (--split runs ingest and delivery as two processes, as a scaled deployment does)
 * (--dist runs the gateway built in dist/, as npm start does, instead of the sources through tsx; npm run build first)
 * (--scale 1+1,2+2: scale-out instead of the above. For each shape N+M, a fresh Redis (AOF on) with N --role ingest and
 *  M --role worker processes on it and one sink; the posts go round-robin over the ingest processes. Prints, per shape,
 *  delivered and ingest-accepted readings/s for each --batch value, latency ingest → EHR p50/p99 at --rate, and the
 *  summed peak RSS of the gateway processes, each as a ratio to the first shape. DELIVERY_CONCURRENCY applies per worker
 *  process. --rounds R runs the list R times, interleaved; the summary gives the median of each shape's rounds and of
 *  its ratios to the first shape of the same round. On a two-core machine every process competes with Redis, the sink
 *  and the load for the same cores: the ratios then show the cost of coordination, not a speed-up)
 * (--profile writes a CPU profile of the gateway process to <tmp>/gw-bench-profile/)
 * (--fsync: Redis's appendfsync for the sustained phase; both runs it with everysec, then with always, on the same
 *  Redis and gateway, and prints delivered readings/s for each: the cost of REDIS_APPENDFSYNC=always)
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Bull from 'bull';
import IORedis from 'ioredis';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import {
  type Arrival,
  args,
  gatewayShape,
  LoadConnection,
  opt,
  percentile,
  ROOT,
  reading,
  requestBytes,
  run,
  type Sink,
  spawnGateway,
  startSink,
} from './common.js';

const READINGS = opt('readings', 20000);
/** Readings posted per request shape before anything is measured, not reported: V8 optimises the path only after some thousands of requests. */
const WARMUP = opt('warmup', 40_000);
const BATCH_ARG = args.includes('--batch') ? args[args.indexOf('--batch') + 1] : '20,1';
const BATCHES = BATCH_ARG.split(',').map(Number);
if (!BATCHES.every((b) => Number.isInteger(b) && b > 0)) throw new Error('--batch: readings per request, e.g. 20 or 20,1');
const BATCH = BATCHES[0];
/** Offered rates of the MLLP run (bench/hl7v2.ts --rate), e.g. 500,1500; 0: no MLLP run. */
const MLLP_RATES = args.includes('--mllp') ? args[args.indexOf('--mllp') + 1] : args.includes('--scale') ? '0' : '500,1500';
const IN_FLIGHT = opt('in-flight', 16);
const RATE = opt('rate', 500);
/** One reading per request offered at this rate, open loop (as a fleet of devices sends), after the latency run; 0: not. */
const OFFER = opt('offer', 3000);
const SECONDS = opt('seconds', 10);
/** Runs of each request shape after the first, each after a ceiling of its own: the median is reported. */
const REPEAT = opt('repeat', 3);
if (!Number.isInteger(REPEAT) || REPEAT < 1) throw new Error('--repeat: runs of each request shape after the first, 1 or more');
const CONCURRENCY = opt('concurrency', 32);
const BATCH_MAX = opt('batch-max', 0); // 0: the gateway's default
const FSYNC_ARG = args.includes('--fsync') ? args[args.indexOf('--fsync') + 1] : 'everysec';
const FSYNC_MODES = FSYNC_ARG === 'both' ? ['everysec', 'always'] : [FSYNC_ARG];
if (!FSYNC_MODES.every((m) => m === 'everysec' || m === 'always')) throw new Error('--fsync: everysec, always or both');
/** An N+M shape of --scale: N processes in the ingest role, M in the worker role. */
interface Shape {
  ingest: number;
  workers: number;
}
const SCALE: Shape[] | undefined = args.includes('--scale')
  ? args[args.indexOf('--scale') + 1].split(',').map((s) => {
      const m = /^(\d+)\+(\d+)$/.exec(s.trim());
      if (!m || Number(m[1]) < 1 || Number(m[2]) < 1)
        throw new Error(`--scale: shapes N+M (ingest+worker processes), e.g. 1+1,2+2; not '${s}'`);
      return { ingest: Number(m[1]), workers: Number(m[2]) };
    })
  : undefined;

/** One run of a request shape: the ceiling measured just before it (three runs, sorted), its figures, their ratio. */
interface Tried {
  ceiling: number[];
  r: Sustained;
  ratio: number;
}

interface Gateway {
  child: ChildProcess;
  url: string;
  /** The highest RSS seen so far (bytes; sampled every 200 ms). */
  peakRss(): number;
  /** The highest RSS seen since the last call (bytes): one phase's peak. */
  phasePeak(): number;
}

async function startGateway(env: Record<string, string>, role = 'all'): Promise<Gateway> {
  const { child, url } = await spawnGateway(env, role);
  let peak = 0;
  let phase = 0;
  const timer = setInterval(async () => {
    try {
      const { readFileSync } = await import('node:fs');
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peak = Math.max(peak, kb * 1024);
      phase = Math.max(phase, kb * 1024);
    } catch {
      /* not on Linux */
    }
  }, 200);
  child.once('exit', () => clearInterval(timer));
  return {
    child,
    url,
    peakRss: () => peak,
    phasePeak: () => {
      const p = phase;
      phase = 0;
      return p;
    },
  };
}

// node:http with keep-alive rather than fetch: the load generator shares the machine's two cores with the gateway,
// Redis and the sink, and fetch costs several times more CPU per request.
const agent = new Agent({ keepAlive: true, maxSockets: 256 });

function post(url: string, body: unknown): Promise<void> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/ingest/measurements`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': data.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          res.statusCode === 202 ? resolve() : reject(new Error(`ingest answered ${res.statusCode}: ${Buffer.concat(chunks).toString()}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('benchmark timed out waiting for delivery');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function noopCeiling(redisUrl: string, jobs: number): Promise<number> {
  const q = new Bull('bench-noop', redisUrl, { prefix: 'bench' });
  await q.empty();
  let done = 0;
  let finished: () => void = () => undefined;
  const all = new Promise<void>((r) => (finished = r));
  void q.process(CONCURRENCY, async () => {
    if (++done === jobs) finished();
  });
  const t0 = performance.now();
  for (let i = 0; i < jobs; i += 500) {
    await q.addBulk(Array.from({ length: Math.min(500, jobs - i) }, (_, k) => ({ data: { n: i + k }, opts: { removeOnComplete: true } })));
  }
  await all;
  const rate = jobs / ((performance.now() - t0) / 1000);
  await q.close();
  return rate;
}

interface Sustained {
  readingsPerS: number;
  obsPerS: number;
  seconds: number;
  transactions: number;
  ingestPerS: number;
  /** Request → 202 latencies (ms), sorted. */
  ingestMs: number[];
  /** CPU time per reading (µs) of this process, the load generator (the sink's counts asked for included). */
  loadCpuUs: number;
  /** CPU time per reading (µs) of the gateway process(es) and of Redis, when measured. */
  gatewayCpuUs?: number;
  redisCpuUs?: number;
  /** The gateway's (the ingest process's, with --split) peak RSS during the run (bytes). */
  peakRss?: number;
}

const cpuLine = (r: Sustained) =>
  r.gatewayCpuUs === undefined
    ? ''
    : `  CPU per reading  gateway ${r.gatewayCpuUs.toFixed(0)} µs, Redis ${r.redisCpuUs?.toFixed(0)} µs, load generator ${r.loadCpuUs.toFixed(0)} µs (process CPU time: less at the mercy of other load than readings/s)`;

/**
 * Posts READINGS readings, `perRequest` in each request (a lone reading is posted as an object, as a device sends it),
 * as fast as ingest takes them (readings from `seq` on), round-robin over the ingest processes' `urls`, and measures
 * until the last is delivered.
 */
async function sustained(urls: string[], sink: Sink, seq: number, perRequest: number, count = READINGS): Promise<Sustained> {
  // The requests are built before the clock starts and sent on lean connections (common.ts LoadConnection), so that
  // the load takes as little as it can of the cores the gateway shares with it.
  const targets = urls.map((u) => new URL(u));
  const requests: Buffer[] = [];
  for (let i = 0; i < count; i += perRequest) {
    const readings = Array.from({ length: Math.min(perRequest, count - i) }, (_, k) => reading((i + k) % 2000, seq + i + k));
    const target = targets[requests.length % targets.length];
    requests.push(requestBytes(target, '/ingest/measurements', JSON.stringify(perRequest === 1 ? readings[0] : readings)));
  }
  const connections = Array.from({ length: IN_FLIGHT }, () => targets.map((t) => new LoadConnection(t)));
  const base = await sink.stats();
  let obs = 0;
  let transactions = 0;
  const load0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  const ingestMs: number[] = [];
  const posting = Promise.all(
    connections.map(async (mine) => {
      while (next < requests.length) {
        const t = performance.now();
        const n = next++;
        const { status, body } = await mine[n % targets.length].send(requests[n]);
        if (status !== 202) throw new Error(`ingest answered ${status}: ${body.toString()}`);
        ingestMs.push(performance.now() - t);
      }
    }),
  );
  const ingestDone = posting.then(() => performance.now());
  await waitFor(async () => {
    const s = await sink.stats();
    obs = s.observations - base.observations;
    transactions = s.transactions - base.transactions;
    return s.readings - base.readings >= count;
  }, 600_000);
  const seconds = (performance.now() - t0) / 1000;
  const load = process.cpuUsage(load0);
  const ingestSeconds = ((await ingestDone) - t0) / 1000;
  for (const c of connections.flat()) c.close();
  ingestMs.sort((a, b) => a - b);
  return {
    readingsPerS: count / seconds,
    obsPerS: obs / seconds,
    seconds,
    transactions,
    ingestPerS: count / ingestSeconds,
    ingestMs,
    loadCpuUs: (load.user + load.system) / count,
  };
}

/**
 * Warm-up, not reported: WARMUP readings of each request shape, posted and delivered as the sustained runs do (the
 * connections opened, the path through ingest and delivery optimised by V8). A gateway takes tens of thousands of
 * requests to settle: V8's collector keeps marking the old generation while the heap grows to its working size (the
 * collector's helper threads took 10–14 µs per reading after 2,000 one-reading requests, 3–4 µs after 40,000). Measured
 * after 4,000 one-reading requests, 20,000 more delivered 5,146 and 5,237 readings/s at 243–247 µs of gateway CPU per
 * reading; after 40,000, 6,273 and 6,361 at 199–201 µs (in turns, on the same day). Then a second of quiet.
 */
async function warmUp(urls: string[], sink: Sink, seq: number): Promise<void> {
  for (const [k, perRequest] of BATCHES.entries()) if (WARMUP > 0) await sustained(urls, sink, seq + k * WARMUP, perRequest, WARMUP);
  await new Promise((r) => setTimeout(r, 1000));
  await sink.stats();
}

/**
 * Ingest-to-EHR latencies (ms, sorted) at RATE readings/s offered for SECONDS s: one reading per request, spread evenly
 * in time and round-robin over `urls`; timed from the post to the reading's arrival at the sink (readings from `seq` on).
 */
async function latencyAt(urls: string[], sink: Sink, seq: number, rate = RATE, span?: { first: number; last: number }): Promise<number[]> {
  const total = rate * SECONDS;
  const sent = new Map<string, number>();
  const tl0 = Date.now();
  const inflight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = tl0 + (i * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const r = reading(5000 + (i % 500), seq + i);
    sent.set(`${r.deviceId}|${r.timestamp}`, Date.now());
    inflight.push(post(urls[i % urls.length], r));
  }
  await Promise.all(inflight);
  const arrivals: Arrival[] = [];
  await waitFor(async () => {
    arrivals.push(...(await sink.stats()).arrivals.filter(([k]) => sent.has(k)));
    return arrivals.length >= total;
  }, 120_000);
  if (span) {
    span.first = tl0;
    span.last = Math.max(...arrivals.map(([, t]) => t));
  }
  return arrivals
    .map(([k, t]) => t - (sent.get(k) ?? t))
    .filter((x) => x >= 0)
    .sort((a, b) => a - b);
}

/** The environment of every gateway process of the bench. */
function gatewayEnv(redisUrl: string, sinkUrl: string): Record<string, string> {
  return {
    PORT: '0',
    REDIS_URL: redisUrl,
    FHIR_BASE_URL: sinkUrl,
    UNKNOWN_PATIENT_POLICY: 'create',
    LOG_LEVEL: 'info',
    UNKNOWN_DEVICE_POLICY: 'accept',
    MLLP_ENABLED: 'false',
    MAPPINGS_WATCH: 'false',
    DELIVERY_CONCURRENCY: String(CONCURRENCY),
    ...(BATCH_MAX ? { DELIVERY_BATCH_MAX: String(BATCH_MAX) } : {}),
    // Room for every reading of the largest phase (jobs are never more than readings): a refusal would end the bench.
    QUEUE_MAX_DEPTH: String(Math.max(READINGS, WARMUP, Math.max(OFFER, RATE) * SECONDS) * 2),
    JOB_RETENTION_COMPLETED: '1000',
  };
}

/** One run of an N+M shape of --scale: per --batch value what it delivered and accepted; latency; summed peak RSS. */
interface ScaleRun {
  shape: Shape;
  sustained: Map<number, Sustained>;
  latency: number[];
  rss: number;
}

const shapeName = (s: Shape) => `${s.ingest}+${s.workers}`;

/**
 * --scale: for each N+M shape, a fresh Redis (AOF on) with N `--role ingest` and M `--role worker` processes on it and
 * the one sink; the load goes round-robin over the ingest processes. Each shape is measured as `main` measures one
 * gateway (sustained throughput for each --batch value, then latency at --rate) and compared with the first shape of
 * its round; --rounds R repeats the list R times, interleaved, and the summary takes the median of the rounds.
 */
async function scale(shapes: Shape[]): Promise<void> {
  const rounds = opt('rounds', 1);
  const sink = await startSink();
  const cores = (await import('node:os')).cpus().length;
  console.log(
    `machine: ${cores} cores, node ${process.version}; per run a fresh Redis with AOF (appendfsync everysec), one sink; DELIVERY_CONCURRENCY=${CONCURRENCY} per worker process, DELIVERY_BATCH_MAX=${BATCH_MAX || 'default'}; ${READINGS} readings per run, ${IN_FLIGHT} requests in flight round-robin over the ingest processes; ${rounds} round(s)`,
  );
  const caveat = `on ${cores} cores, where every process shares them with Redis, the sink and this load generator, this measures the cost of coordination (more processes, Redis round trips, locks, context switches), not a speed-up`;
  if (cores <= 2) console.log(`Note: ${caveat}.`);
  const runs: ScaleRun[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [si, shape] of shapes.entries()) {
        // Reading times are seconds after DAY0: small offsets keep them behind the clock (READING_TIME_MAX_AHEAD_MS).
        const run = await scaleRun(shape, sink, 300_000 + si * 100_000);
        runs.push(run);
        printScaleRun(run, runs[round * shapes.length], rounds > 1 ? ` (round ${round + 1})` : '');
      }
    }
  } finally {
    sink.child.send({ type: 'stop' });
  }
  // Per shape, the median of its rounds; the ratio to the first shape is taken in each round (the two ran back to back)
  // and its median printed.
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = Math.floor(s.length / 2);
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  const firsts = runs.filter((_, i) => i % shapes.length === 0);
  const metrics: [string, (r: ScaleRun) => number][] = [
    ...BATCHES.map((b): [string, (r: ScaleRun) => number] => [
      `delivered readings/s, ${b}/request`,
      (r) => r.sustained.get(b)?.readingsPerS ?? 0,
    ]),
    ...BATCHES.map((b): [string, (r: ScaleRun) => number] => [
      `ingest accepted readings/s, ${b}/request`,
      (r) => r.sustained.get(b)?.ingestPerS ?? 0,
    ]),
    ['latency ingest → EHR p50, ms', (r) => percentile(r.latency, 50)],
    ['latency ingest → EHR p99, ms', (r) => percentile(r.latency, 99)],
    ['summed peak RSS, MiB', (r) => r.rss / 1048576],
  ];
  console.log('');
  console.log(
    `summary${rounds > 1 ? ` (medians of ${rounds} rounds)` : ''}: each shape, and in brackets its ratio to ${shapeName(shapes[0])} in the same round`,
  );
  for (const [si, shape] of shapes.entries()) {
    const of = runs.filter((_, i) => i % shapes.length === si);
    console.log(`  ${shapeName(shape)}`);
    for (const [name, get] of metrics) {
      const ratios = of.map((r, k) => get(r) / get(firsts[k]));
      console.log(`    ${name.padEnd(38)} ${median(of.map(get)).toFixed(0).padStart(6)} (${median(ratios).toFixed(2)}x)`);
    }
  }
  if (cores <= 2) console.log(`Note: ${caveat}.`);
}

/** One shape measured on a fresh Redis: its processes started, warmed up, loaded, and stopped. */
async function scaleRun(shape: Shape, sink: Sink, seq: number): Promise<ScaleRun> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
  const env = gatewayEnv(await redis.start(), sink.url);
  const gws = await Promise.all([
    ...Array.from({ length: shape.ingest }, () => startGateway(env, 'ingest')),
    ...Array.from({ length: shape.workers }, () => startGateway(env, 'worker')),
  ]);
  const urls = gws.slice(0, shape.ingest).map((g) => g.url);
  try {
    await warmUp(urls, sink, seq + 4_000_000);
    const run: ScaleRun = { shape, sustained: new Map(), latency: [], rss: 0 };
    for (const [k, perRequest] of BATCHES.entries())
      run.sustained.set(perRequest, await sustained(urls, sink, seq + 1000 + k * READINGS, perRequest));
    run.latency = await latencyAt(urls, sink, seq + 1000 + BATCHES.length * READINGS);
    run.rss = gws.reduce((sum, g) => sum + g.peakRss(), 0);
    return run;
  } finally {
    for (const g of gws) g.child.kill('SIGTERM');
    await Promise.all(gws.map((g) => new Promise((r) => g.child.once('exit', r))));
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a && b ? `${(a / b).toFixed(2)}x` : '-';
}

function printScaleRun(r: ScaleRun, first: ScaleRun, label: string): void {
  const f = (n: number) => n.toFixed(0);
  const { ingest, workers } = r.shape;
  console.log('');
  console.log(
    `${shapeName(r.shape)}${label}: ${ingest} ingest process${ingest > 1 ? 'es' : ''} + ${workers} worker process${workers > 1 ? 'es' : ''}`,
  );
  for (const [perRequest, s] of r.sustained) {
    const b = first.sustained.get(perRequest);
    console.log(
      `  ${String(perRequest).padStart(2)} per request: delivered ${f(s.readingsPerS)} readings/s (${ratio(s.readingsPerS, b?.readingsPerS)} of ${shapeName(first.shape)}), ingest accepted ${f(s.ingestPerS)} readings/s (${ratio(s.ingestPerS, b?.ingestPerS)}), ${s.transactions} EHR transactions, ${s.seconds.toFixed(1)} s`,
    );
  }
  const p = (l: number[], x: number) => f(percentile(l, x));
  console.log(
    `  latency ingest → EHR at ${RATE} readings/s offered for ${SECONDS} s: p50 ${p(r.latency, 50)} ms, p99 ${p(r.latency, 99)} ms (${shapeName(first.shape)}: p50 ${p(first.latency, 50)}, p99 ${p(first.latency, 99)})`,
  );
  console.log(`  summed peak RSS ${(r.rss / 1048576).toFixed(0)} MiB (${ratio(r.rss, first.rss)})`);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
  const redisUrl = await redis.start();
  const sink = await startSink();
  const split = args.includes('--split');
  const env = gatewayEnv(redisUrl, sink.url);
  const gw = await startGateway(env, split ? 'ingest' : 'all');
  const worker = split ? await startGateway(env, 'worker') : undefined;
  try {
    const roles = split ? 'one ingest process + one worker process' : 'one process (role all)';
    console.log(
      `machine: ${(await import('node:os')).cpus().length} cores, node ${process.version}; Redis with AOF (appendfsync ${FSYNC_MODES.join(', then ')}); gateway: ${roles}, ${gatewayShape()}, DELIVERY_CONCURRENCY=${CONCURRENCY}, DELIVERY_BATCH_MAX=${BATCH_MAX || 'default'}`,
    );

    await warmUp([gw.url], sink, 4_000_000);

    // 1. Sustained throughput: post everything as fast as ingest takes it, measure until the last delivery; once per
    // appendfsync setting asked for (set on the running Redis: the same gateway, Redis and sink for each).
    const admin = new IORedis.default(redisUrl);
    // CPU time per reading of the gateway process(es) and of Redis: less at the mercy of other load than readings/s.
    const cpuMs = (pid?: number) => {
      if (!pid) return 0;
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(f[11]) + Number(f[12])) * 10;
    };
    const redisCpuMs = async () => {
      const info = (await admin.info('cpu')) as string;
      const num = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
      return 1000 * (num('used_cpu_sys') + num('used_cpu_user'));
    };
    const cpuPerReading = async (phase: () => Promise<Sustained>): Promise<Sustained> => {
      const g0 = cpuMs(gw.child.pid) + cpuMs(worker?.child.pid);
      const r0 = await redisCpuMs();
      gw.phasePeak();
      const out = await phase();
      out.peakRss = gw.phasePeak();
      out.gatewayCpuUs = ((cpuMs(gw.child.pid) + cpuMs(worker?.child.pid) - g0) * 1000) / READINGS;
      out.redisCpuUs = (((await redisCpuMs()) - r0) * 1000) / READINGS;
      return out;
    };
    // The ceiling next to each shape's phase as well as at the end: the machine's speed drifts during a run (the
    // ceiling's three runs at the end moved by up to a fifth on a busy day), and a ratio is truest to the ceiling
    // measured next to what it divides. Once to warm bull up in this process, then the median of three.
    await noopCeiling(redisUrl, 2000);
    const ceilingNow = async (): Promise<number[]> =>
      [await noopCeiling(redisUrl, 20000), await noopCeiling(redisUrl, 20000), await noopCeiling(redisUrl, 20000)].sort((a, b) => a - b);
    const before = new Map<number, number[]>([[BATCH, await ceilingNow()]]);
    const runs: [string, Sustained][] = [];
    for (const [k, mode] of FSYNC_MODES.entries()) {
      await admin.config('SET', 'appendfsync', mode);
      runs.push([mode, await cpuPerReading(() => sustained([gw.url], sink, k === 0 ? 1000 : 1_000_000 + k * READINGS, BATCH))]);
    }
    // The other request shapes, with the first setting (distinct timestamps: no run's readings are another's duplicates).
    await admin.config('SET', 'appendfsync', FSYNC_MODES[0]);
    // Each of them REPEAT times, each run right after a ceiling of its own; the run of the median ratio is reported,
    // with every run's figures (one run of a few seconds moved its ratio by a fifth on a day of drifting speed).
    const shapes: [number, Sustained, Tried[]][] = [];
    for (const [k, perRequest] of BATCHES.slice(1).entries()) {
      const tries: Tried[] = [];
      for (let j = 0; j < REPEAT; j++) {
        const ceiling = await ceilingNow();
        const r = await cpuPerReading(() => sustained([gw.url], sink, 200_000 + (k * REPEAT + j) * READINGS, perRequest));
        tries.push({ ceiling, r, ratio: r.readingsPerS / ceiling[1] });
      }
      const median = [...tries].sort((a, b) => a.ratio - b.ratio)[Math.floor(tries.length / 2)];
      before.set(perRequest, median.ceiling);
      shapes.push([perRequest, median.r, tries]);
    }
    admin.disconnect();
    const { readingsPerS, obsPerS, seconds, transactions, ingestPerS } = runs[0][1];

    // 2. Latency at a fixed offered rate (readings posted one per request, spread evenly).
    gw.phasePeak();
    const lat = await latencyAt([gw.url], sink, 100000);
    const latPeak = gw.phasePeak();

    // 2b. Open loop at OFFER readings/s, one per request: each device posts when its reading is due, whatever the
    // answers to the others. The closed loop above keeps 16 requests in flight, so its rate is 16 ÷ the latency of one;
    // devices do not wait for each other, and the gateway groups what arrives together (group commit, shared jobs).
    const span = { first: 0, last: 0 };
    const open = OFFER > 0 ? await latencyAt([gw.url], sink, 3_000_000, OFFER, span) : [];
    const openPeak = gw.phasePeak();

    // 3. Ceiling: bull no-op jobs on the same Redis, the median of three runs (one run alone moved by a fifth between runs).
    const ceilings = await ceilingNow();
    const ceiling = ceilings[1];

    const f = (n: number) => n.toFixed(0);
    const ms = (l: number[]) => `p50 ${percentile(l, 50).toFixed(1)} ms   p99 ${percentile(l, 99).toFixed(1)} ms (request → 202)`;
    console.log('');
    console.log(`sustained (${READINGS} readings, ${BATCH} per request, ${IN_FLIGHT} requests in flight, appendfsync ${runs[0][0]}):`);
    console.log(`  delivered        ${f(readingsPerS)} readings/s, ${f(obsPerS)} Observations/s (${seconds.toFixed(1)} s)`);
    console.log(`  EHR transactions ${transactions} (${(READINGS / Math.max(1, transactions)).toFixed(1)} readings per transaction)`);
    console.log(`  ingest accepted  ${f(ingestPerS)} readings/s (202 after the durable enqueue)`);
    console.log(`  ingest latency   ${ms(runs[0][1].ingestMs)}`);
    console.log(cpuLine(runs[0][1]));
    console.log(
      `  gateway peak RSS ${(gw.peakRss() / 1048576).toFixed(0)} MiB over the whole bench${worker ? ` (ingest), ${(worker.peakRss() / 1048576).toFixed(0)} MiB (worker)` : ''}`,
    );
    const mib = (b?: number) => (b ? `${(b / 1048576).toFixed(0)} MiB` : 'not sampled (shorter than 200 ms)');
    console.log(
      `  peak RSS by phase ${[
        ...runs.map(([mode, r]) => `${BATCH} per request${runs.length > 1 ? ` (${mode})` : ''} ${mib(r.peakRss)}`),
        ...shapes.map(([n, r]) => `${n} per request ${mib(r.peakRss)}`),
        `${RATE}/s ${mib(latPeak)}`,
        ...(OFFER > 0 ? [`open loop ${mib(openPeak)}`] : []),
      ].join(', ')}${worker ? ' (the ingest process)' : ''}`,
    );
    for (const [mode, r] of runs.slice(1)) {
      console.log(`sustained again with appendfsync ${mode}:`);
      console.log(`  delivered        ${f(r.readingsPerS)} readings/s, ${f(r.obsPerS)} Observations/s (${r.seconds.toFixed(1)} s)`);
      console.log(`  ingest accepted  ${f(r.ingestPerS)} readings/s (202 after the durable enqueue)`);
    }
    if (runs.length > 1)
      console.log(`appendfsync: ${runs.map(([mode, r]) => `${mode} ${f(r.readingsPerS)}`).join(', ')} delivered readings/s`);
    console.log(`latency ingest → EHR at ${RATE} readings/s offered for ${SECONDS} s (${lat.length} readings):`);
    console.log(`  p50 ${f(percentile(lat, 50))} ms   p99 ${f(percentile(lat, 99))} ms   max ${f(lat.at(-1) ?? NaN)} ms`);
    if (OFFER > 0) {
      // Delivered at the offered rate when the last reading arrives within the latency of the others: a gateway that
      // cannot keep up builds a backlog that grows through the run, and its delivered rate is the readings over the span.
      const rate = open.length / ((span.last - span.first) / 1000);
      console.log(
        `open loop: 1 reading per request offered at ${OFFER}/s for ${SECONDS} s (${open.length} readings, up to 256 connections):`,
      );
      console.log(
        `  delivered ${f(rate)} readings/s (${(rate / OFFER).toFixed(2)} of offered); post → EHR p50 ${f(percentile(open, 50))} ms   p99 ${f(percentile(open, 99))} ms   max ${f(open.at(-1) ?? NaN)} ms`,
      );
    }
    console.log(
      `ceiling: bull no-op jobs on the same Redis (concurrency ${CONCURRENCY}): ${f(ceiling)} jobs/s (median of three runs: ${ceilings.map(f).join(', ')})`,
    );
    const ratioLine = (perRequest: number, readingsPerS: number) => {
      const next = before.get(perRequest) as number[];
      return `ratio delivered readings/s ÷ no-op jobs/s: ${(readingsPerS / next[1]).toFixed(2)} to the ceiling measured just before the phase (${f(next[1])} jobs/s; runs ${next.map(f).join(', ')}), ${(readingsPerS / ceiling).toFixed(2)} to the one at the end`;
    };
    console.log(`${ratioLine(BATCH, readingsPerS)} (${BATCH} per request)`);
    for (const [perRequest, r, tries] of shapes) {
      console.log(
        `sustained (${READINGS} readings, ${perRequest} per request, ${IN_FLIGHT} requests in flight, appendfsync ${runs[0][0]}${tries.length > 1 ? `; the run of the median ratio of ${tries.length}` : ''}):`,
      );
      if (tries.length > 1)
        console.log(
          `  runs (delivered readings/s, ratio to the ceiling just before it) ${tries.map((t) => `${f(t.r.readingsPerS)} (${t.ratio.toFixed(2)})`).join(', ')}`,
        );
      console.log(`  delivered        ${f(r.readingsPerS)} readings/s, ${f(r.obsPerS)} Observations/s (${r.seconds.toFixed(1)} s)`);
      console.log(`  EHR transactions ${r.transactions} (${(READINGS / Math.max(1, r.transactions)).toFixed(1)} readings per transaction)`);
      console.log(`  ingest accepted  ${f(r.ingestPerS)} readings/s, ${f(r.ingestPerS / perRequest)} requests/s`);
      console.log(`  ingest latency   ${ms(r.ingestMs)}`);
      console.log(cpuLine(r));
      console.log(`  ${ratioLine(perRequest, r.readingsPerS)}`);
    }
  } finally {
    for (const g of [gw, worker]) g?.child.kill('SIGTERM');
    sink.child.send({ type: 'stop' });
    await Promise.all([gw, worker].map((g) => g && new Promise((r) => g.child.once('exit', r))));
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  if (MLLP_RATES !== '0') {
    console.log(`\nMLLP (bench/hl7v2.ts --rate ${MLLP_RATES}):`);
    const child = fork(join(ROOT, 'bench/hl7v2.ts'), ['--rate', MLLP_RATES, ...(args.includes('--dist') ? ['--dist'] : [])], {
      execArgv: ['--import', 'tsx'],
      stdio: 'inherit',
    });
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    if (code !== 0) throw new Error(`bench/hl7v2.ts exited ${code}`);
  }
}

run(SCALE ? () => scale(SCALE) : main);
