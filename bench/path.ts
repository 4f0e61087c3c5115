/**
 * Where a reading's cost and latency go (not a test), on one gateway (role all, or --split: an ingest and a worker
 * process), a private Redis with AOF and the bench sink:
 *
 *  1. cost: posts --requests messages of --batch readings (16 in flight) after a warm-up, waits until the sink has
 *     them all, and prints delivered readings/s, readings per EHR transaction, the gateway's CPU per reading (from
 *     /proc, per process, and per thread: the gateway's thread, the delivery thread, V8's helpers that collect
 *     garbage), its read and write system calls per reading (sockets included; per process and per thread), Redis's CPU per reading (INFO cpu),
 *     Redis commands per request by command with the microseconds Redis spent in them (INFO commandstats; the
 *     commands run inside Lua scripts are counted too, and their time again under the script's eval/evalsha), and the
 *     bytes a job carries per reading;
 *  2. latency: one reading per request at --rate per second for --seconds, spread evenly, and prints p50/p90/p99/max
 *     of: post → arrival at the sink, post → 202, and per job (bull's own timestamps of the completed jobs): received →
 *     in Redis, in Redis → taken by the worker, taken → completed; and the readings per job.
 *
 * Usage: npx tsx bench/path.ts [--requests 4000] [--batch 1] [--warmup 40000] [--warmup-batch N] [--rate 500] [--seconds 10] [--split] [--only cost|latency]
 *   [--floor] [--dist] [NAME=value ...] (gateway settings, e.g. DELIVERY_TRANSACTIONS=1)
 * --floor runs bench/floor.ts instead of the gateway (cost only): the same stack's plumbing without the gateway's own
 * work, a baseline to read the gateway's figures against.
 * Compare two settings back to back, several times: on a shared machine one run of either is within the noise of the
 * other (the figures move by 10 % from run to run on two cores).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import {
  args,
  LoadConnection,
  opt,
  percentile,
  postMeasurements,
  reading,
  requestBytes,
  run,
  spawnFloor,
  spawnGateway,
  startSink,
} from './common.js';

const REQUESTS = opt('requests', 4000);
const BATCH = opt('batch', 1);
const RATE = opt('rate', 500);
const SECONDS = opt('seconds', 10);
const IN_FLIGHT = 16;
/** Readings posted and delivered before anything is measured: a gateway settles over tens of thousands (bench/run.ts, warmUp). */
const WARMUP = opt('warmup', 40_000);
/** Readings per request during the warm-up (--batch by default): a gateway warmed up on another shape than it is measured on. */
const WARMUP_BATCH = opt('warmup-batch', BATCH);
/** --floor: bench/floor.ts (the stack's plumbing without the gateway's work) in place of the gateway; cost only. */
const FLOOR = args.includes('--floor');
const ONLY = FLOOR ? 'cost' : args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
const SETTINGS = Object.fromEntries(
  args.filter((a) => /^[A-Z][A-Z0-9_]*=/.test(a)).map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]),
);
function show(name: string, a: number[]): void {
  a.sort((x, y) => x - y);
  const p = (q: number) => percentile(a, q);
  console.log(`  ${name.padEnd(30)} p50 ${p(50)}  p90 ${p(90)}  p99 ${p(99)}  max ${a[a.length - 1]}  (n ${a.length})`);
}

/** CPU time (ms) of a process so far, from /proc (Linux). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** A thread's CPU time (ms) and its read and write system calls so far. */
interface ThreadUse {
  cpuMs: number;
  reads: number;
  writes: number;
}

/**
 * CPU time (ms) and system calls of each thread of a process so far, by thread name (/proc/PID/task/TID/comm: node's
 * main thread and a worker thread are both "node" until named; libuv's pool "libuv-worker"; V8's GC and compiler
 * helpers "V8 DefaultWorke"), keyed name#n in the order of their ids.
 */
function threadUse(pid: number): Map<string, ThreadUse> {
  const out = new Map<string, ThreadUse>();
  const seen = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`).sort((a, b) => Number(a) - Number(b))) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      const n = (seen.get(name) ?? 0) + 1;
      seen.set(name, n);
      const io = ioCalls(readFileSync(`/proc/${pid}/task/${tid}/io`, 'utf8'));
      out.set(`${name}#${n}`, { cpuMs: (Number(f[11]) + Number(f[12])) * 10, ...io });
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** Read and write system calls of a process so far (syscr, syscw), from /proc (Linux): sockets included. */
function syscalls(pid: number): { reads: number; writes: number } {
  return ioCalls(readFileSync(`/proc/${pid}/io`, 'utf8'));
}

/** syscr and syscw of a /proc io file. */
function ioCalls(io: string): { reads: number; writes: number } {
  const num = (k: string) => Number(new RegExp(`${k}: (\\d+)`).exec(io)?.[1] ?? 0);
  return { reads: num('syscr'), writes: num('syscw') };
}

/** Redis's CPU time (ms) so far, from INFO cpu (it runs as its own process; the main thread and its helpers). */
async function redisCpuMs(r: IORedis.default): Promise<number> {
  const info = (await r.info('cpu')) as string;
  const num = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return 1000 * (num('used_cpu_sys') + num('used_cpu_user'));
}

/** Calls and microseconds per command (a script's time counts under eval/evalsha, and again under its commands). */
async function commandStats(r: IORedis.default): Promise<Map<string, { calls: number; usec: number }>> {
  const m = new Map<string, { calls: number; usec: number }>();
  for (const l of ((await r.info('commandstats')) as string).split('\n')) {
    const x = /cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(l);
    if (x) m.set(x[1], { calls: Number(x[2]), usec: Number(x[3]) });
  }
  return m;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-path-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
  const redisUrl = await redis.start();
  const sink = await startSink();
  const env: Record<string, string> = {
    PORT: '0',
    REDIS_URL: redisUrl,
    FHIR_BASE_URL: sink.url,
    UNKNOWN_PATIENT_POLICY: 'create',
    UNKNOWN_DEVICE_POLICY: 'accept',
    MLLP_ENABLED: 'false',
    MAPPINGS_WATCH: 'false',
    DELIVERY_CONCURRENCY: '32',
    QUEUE_MAX_DEPTH: '10000000',
    JOB_RETENTION_COMPLETED: '100000',
    ...SETTINGS,
    LOG_LEVEL: 'info',
  };
  const split = args.includes('--split');
  let procs: Awaited<ReturnType<typeof spawnGateway>>[];
  try {
    procs = FLOOR
      ? [await spawnFloor(env)]
      : split
        ? [await spawnGateway(env, 'ingest'), await spawnGateway(env, 'worker')]
        : [await spawnGateway(env, 'all')];
  } catch (err) {
    // A gateway that does not start (a bad setting) must not leave the sink and Redis behind.
    sink.child.kill();
    await redis.stop();
    throw err;
  }
  const url = procs[0].url;
  const admin = new IORedis.default(redisUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const post = (body: unknown) => postMeasurements(url, body, agent);
  let seq = 0;
  const body = (batch = BATCH) => {
    const rs = Array.from({ length: batch }, () => {
      seq++;
      return reading(seq % 2000, seq);
    });
    return batch === 1 ? rs[0] : rs;
  };
  // The cost phase's load: requests built before it starts, sent on lean connections (common.ts LoadConnection).
  const target = new URL(url);
  const connections = Array.from({ length: IN_FLIGHT }, () => new LoadConnection(target));
  const prepare = (n: number, batch = BATCH) =>
    Array.from({ length: n }, () => requestBytes(target, '/ingest/measurements', JSON.stringify(body(batch))));
  const drive = async (requests: Buffer[]) => {
    let i = 0;
    await Promise.all(
      connections.map(async (c) => {
        while (i < requests.length) {
          const { status, body: answer } = await c.send(requests[i++]);
          if (status !== 202) throw new Error(`the gateway answered ${status}: ${answer.toString().slice(0, 500)}`);
        }
      }),
    );
  };
  const delivered = async (target: number) => {
    for (;;) {
      const s = await sink.stats();
      if (s.readings >= target) return s;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  console.log(
    `machine: node ${process.version}; ${FLOOR ? 'the floor (bench/floor.ts) in place of the gateway' : `gateway ${split ? 'ingest + worker processes' : 'role all'}`}, Redis AOF on, the bench sink${
      Object.keys(SETTINGS).length
        ? `; ${Object.entries(SETTINGS)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')}`
        : ''
    }`,
  );
  try {
    await drive(prepare(Math.ceil(WARMUP / WARMUP_BATCH), WARMUP_BATCH));
    await delivered(seq);
    if (ONLY !== 'latency') {
      const requests = prepare(REQUESTS);
      const c0 = procs.map((p) => cpuMs(p.child.pid as number));
      const sinkCpu0 = cpuMs(sink.child.pid as number);
      const load0 = process.cpuUsage();
      const io0 = procs.map((p) => syscalls(p.child.pid as number));
      const t0s = procs.map((p) => threadUse(p.child.pid as number));
      const r0 = await commandStats(admin);
      const redisCpu0 = await redisCpuMs(admin);
      const s0 = await sink.stats();
      const t0 = Date.now();
      await drive(requests);
      const s1 = await delivered(seq);
      const seconds = (Date.now() - t0) / 1000;
      const c1 = procs.map((p) => cpuMs(p.child.pid as number));
      const sinkCpu1 = cpuMs(sink.child.pid as number);
      const load1 = process.cpuUsage(load0);
      const io1 = procs.map((p) => syscalls(p.child.pid as number));
      const t1s = procs.map((p) => threadUse(p.child.pid as number));
      const r1 = await commandStats(admin);
      const redisCpu1 = await redisCpuMs(admin);
      const readings = REQUESTS * BATCH;
      const transactions = s1.transactions - s0.transactions;
      console.log(`\ncost: ${REQUESTS} requests of ${BATCH} reading(s), ${IN_FLIGHT} in flight, until all were delivered`);
      console.log(
        `  delivered ${(readings / seconds).toFixed(0)} readings/s; ${transactions} EHR transactions (${(readings / transactions).toFixed(1)} readings each)`,
      );
      console.log(
        `  gateway CPU per reading: ${procs.map((_, i) => `${((1000 * (c1[i] - c0[i])) / readings).toFixed(0)} µs`).join(' + ')}`,
      );
      console.log(
        `  gateway system calls per reading: ${procs
          .map(
            (_, i) =>
              `${((io1[i].reads - io0[i].reads) / readings).toFixed(2)} reads, ${((io1[i].writes - io0[i].writes) / readings).toFixed(2)} writes`,
          )
          .join(' + ')} (/proc/PID/io)`,
      );
      procs.forEach((_, i) => {
        const rows = [...t1s[i]]
          .map(([k, v]) => {
            const before = t0s[i].get(k) ?? { cpuMs: 0, reads: 0, writes: 0 };
            return [
              k,
              (1000 * (v.cpuMs - before.cpuMs)) / readings,
              (v.reads - before.reads) / readings,
              (v.writes - before.writes) / readings,
            ] as const;
          })
          .filter(([, us]) => us >= 1)
          .sort((a, b) => b[1] - a[1]);
        const calls = rows.filter(([, , r, w]) => r + w >= 0.01);
        console.log(
          `  ${procs.length > 1 ? `process ${i + 1}, ` : ''}by thread (µs per reading): ${rows.map(([k, us]) => `${k} ${us.toFixed(0)}`).join(', ')}`,
        );
        console.log(
          `  ${procs.length > 1 ? `process ${i + 1}, ` : ''}by thread (reads, writes per reading): ${calls.map(([k, , r, w]) => `${k} ${r.toFixed(2)}, ${w.toFixed(2)}`).join('; ')}`,
        );
      });
      console.log(
        `  the sink (the EHR's stand-in): ${((1000 * (sinkCpu1 - sinkCpu0)) / readings).toFixed(0)} µs of CPU and ${((s1.bytes - s0.bytes) / readings).toFixed(0)} bytes of transaction per reading`,
      );
      console.log(`  the load generator (this process): ${((load1.user + load1.system) / readings).toFixed(0)} µs of CPU per reading`);
      console.log(`  Redis CPU per reading: ${((1000 * (redisCpu1 - redisCpu0)) / readings).toFixed(0)} µs (INFO cpu)`);
      const rows = [...r1]
        .map(([k, v]) => [k, v.calls - (r0.get(k)?.calls ?? 0), v.usec - (r0.get(k)?.usec ?? 0)] as const)
        .filter(([k, d]) => d > 0 && k !== 'info')
        .sort((a, b) => b[1] - a[1]);
      const total = rows.reduce((n, [, d]) => n + d, 0);
      console.log(`  Redis commands per request: ${(total / REQUESTS).toFixed(2)} (and µs per request inside Redis)`);
      for (const [k, d, us] of rows.slice(0, 15))
        console.log(`    ${k.padEnd(18)} ${(d / REQUESTS).toFixed(3).padStart(8)} ${(us / REQUESTS).toFixed(1).padStart(7)} µs`);
      if (!FLOOR) {
        // The size of what a job carries, per reading: stored, logged to the AOF, read back by the worker.
        let bytes = 0;
        let count = 0;
        for (const id of await admin.zrevrange('gw:iomt-delivery:completed', 0, 199)) {
          const [data] = (await admin.hmget(`gw:iomt-delivery:${id}`, 'data')) as [string | null];
          if (!data) continue;
          bytes += Buffer.byteLength(data);
          count += (JSON.parse(data) as { translations: unknown[] }).translations.length;
        }
        if (count) console.log(`  job data: ${(bytes / count).toFixed(0)} bytes per reading (the last 200 completed jobs)`);
      }
    }
    if (ONLY !== 'cost') {
      const total = RATE * SECONDS;
      const sent = new Map<string, number>();
      const acks: number[] = [];
      const inflight: Promise<void>[] = [];
      await sink.stats();
      const t0 = Date.now();
      for (let i = 0; i < total; i++) {
        const wait = t0 + (i * 1000) / RATE - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const r = reading(5000 + (i % 500), 1_000_000 + i);
        const at = Date.now();
        sent.set(`${r.deviceId}|${r.timestamp}`, at);
        inflight.push(post(r).then(() => void acks.push(Date.now() - at)));
      }
      await Promise.all(inflight);
      const arrivals: [string, number][] = [];
      while (arrivals.length < total) {
        arrivals.push(...(await sink.stats()).arrivals.filter(([k]) => sent.has(k)));
        if (arrivals.length < total) await new Promise((r) => setTimeout(r, 100));
      }
      console.log(`\nlatency: one reading per request at ${RATE}/s for ${SECONDS} s (ms)`);
      show(
        'post → sink',
        arrivals.map(([k, t]) => t - (sent.get(k) as number)),
      );
      show('post → 202', acks);
      const added: number[] = [];
      const waited: number[] = [];
      const worked: number[] = [];
      const sizes: number[] = [];
      for (const id of await admin.zrangebyscore('gw:iomt-delivery:completed', t0, '+inf')) {
        const h = await admin.hgetall(`gw:iomt-delivery:${id}`);
        const data = JSON.parse(h.data) as { receivedAt: string; translations: unknown[] };
        added.push(Number(h.timestamp) - Date.parse(data.receivedAt));
        waited.push(Number(h.processedOn) - Number(h.timestamp));
        worked.push(Number(h.finishedOn) - Number(h.processedOn));
        sizes.push(data.translations.length);
      }
      show('job: received → in Redis', added);
      show('job: in Redis → taken', waited);
      show('job: taken → completed', worked);
      show('job: readings', sizes);
    }
  } finally {
    for (const p of procs) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => new Promise((r) => (p.child.exitCode === null ? p.child.once('close', r) : r(null)))));
    sink.child.kill();
    await admin.quit();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run(main);
