/**
 * Ingest cost (not a test): CPU time of a gateway process in the ingest role per accepted request, for a given number
 * of readings per request. Delivery is not running; Redis (AOF on) is a private throwaway one.
 *
 * Usage: npx tsx bench/ingest.ts [--requests 10000] [--batch 1] [--in-flight 32] [--combine true|false|both] [--profile]
 * (--profile writes a CPU profile of the gateway process to <tmp>/gw-bench-profile/)
 * Prints requests/s, gateway CPU µs per request (from /proc, Linux only), Redis CPU µs and Redis commands per request
 * (INFO) and the jobs queued per request, for the shape given, and for one reading per request and 20 per request when
 * no --batch is given, so the per-message and per-reading costs can be told apart. `--combine both` (the default) runs
 * it all with INGEST_COMBINE=false, then true, on the same Redis: the baseline and the combined jobs in one run.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import { args, opt, run, spawnGateway } from './common.js';

const REQUESTS = opt('requests', 10000);
const IN_FLIGHT = opt('in-flight', 32);
const SHAPES = args.includes('--batch') ? [opt('batch', 1)] : [1, 20];
const COMBINE_ARG = args.includes('--combine') ? args[args.indexOf('--combine') + 1] : 'both';
const COMBINE = COMBINE_ARG === 'both' ? ['false', 'true'] : [COMBINE_ARG];

/** Redis's own CPU (ms), commands processed, and jobs added so far (the queue's id counter is not used: ids are given). */
async function redisCounters(r: IORedis.default): Promise<{ cpuMs: number; commands: number; jobs: number }> {
  const info = (await r.info()) as string;
  const num = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  const jobs = (await r.llen('gw:iomt-delivery:wait')) + (await r.llen('gw:iomt-delivery:active'));
  return { cpuMs: 1000 * (num('used_cpu_sys') + num('used_cpu_user')), commands: num('total_commands_processed'), jobs };
}

const reading = (i: number) => ({
  deviceId: `D-${i % 2000}`,
  patientId: `MRN-${i % 500}`,
  timestamp: new Date(Date.UTC(2026, 10, 23) + i * 1000).toISOString(),
  measurements: [
    { code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (i % 10), unit: '%' },
    { code: 'MDC_PULS_OXIM_PULS_RATE', value: 60 + (i % 40), unit: 'bpm' },
  ],
});

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-ingest-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
  const redisUrl = await redis.start();
  const env = {
    PORT: '0',
    REDIS_URL: redisUrl,
    FHIR_BASE_URL: 'http://127.0.0.1:9/fhir',
    UNKNOWN_DEVICE_POLICY: 'accept',
    MLLP_ENABLED: 'false',
    MAPPINGS_WATCH: 'false',
    QUEUE_MAX_DEPTH: '10000000',
    LOG_LEVEL: 'info',
  };
  const admin = new IORedis.default(redisUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  let child: Awaited<ReturnType<typeof spawnGateway>>['child'] | undefined;
  let url = '';
  const post = (body: unknown) =>
    new Promise<void>((resolve, reject) => {
      const data = Buffer.from(JSON.stringify(body));
      const req = request(
        `${url}/ingest/measurements`,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': data.length } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 202 ? resolve() : reject(new Error(`ingest answered ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(data);
    });
  const cpuMs = () => {
    const f = readFileSync(`/proc/${child?.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // utime + stime, in clock ticks of 10 ms
  };
  let seq = 0;
  const run = async (requests: number, batch: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next++ < requests) await post(batch === 1 ? reading(seq++) : Array.from({ length: batch }, () => reading(seq++)));
      }),
    );
  };
  try {
    console.log(
      `machine: ${(await import('node:os')).cpus().length} cores, node ${process.version}; gateway role ingest, Redis AOF on; ${IN_FLIGHT} requests in flight`,
    );
    for (const combine of COMBINE) {
      ({ child, url } = await spawnGateway({ ...env, INGEST_COMBINE: combine }, 'ingest'));
      console.log(`INGEST_COMBINE=${combine}:`);
      for (const batch of SHAPES) {
        const requests = Math.max(200, Math.round(REQUESTS / batch));
        await run(Math.min(2000, requests), batch); // warm-up
        const c0 = cpuMs();
        const r0 = await redisCounters(admin);
        const t0 = performance.now();
        await run(requests, batch);
        const seconds = (performance.now() - t0) / 1000;
        const perRequest = ((cpuMs() - c0) * 1000) / requests;
        const r1 = await redisCounters(admin);
        console.log(
          `${String(batch).padStart(5)} reading(s) per request: ${(requests / seconds).toFixed(0).padStart(6)} requests/s, ${((requests * batch) / seconds).toFixed(0).padStart(6)} readings/s, gateway CPU ${perRequest.toFixed(0)} µs per request (${(perRequest / batch).toFixed(0)} µs per reading)`,
        );
        console.log(
          `      Redis: ${(((r1.cpuMs - r0.cpuMs) * 1000) / requests).toFixed(0)} µs CPU and ${((r1.commands - r0.commands - 3) / requests).toFixed(1)} commands per request; ${((r1.jobs - r0.jobs) / requests).toFixed(2)} jobs queued per request`,
        );
      }
      child.kill('SIGTERM');
      await new Promise((r) => child?.once('exit', r));
    }
  } finally {
    if (child?.exitCode === null) child.kill('SIGTERM');
    admin.disconnect();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run(main);
