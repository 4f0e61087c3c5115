/**
 * Ingest cost (not a test): CPU time of a gateway process in the ingest role per accepted request, for a given number
 * of readings per request. Delivery is not running; Redis (AOF on) is a private throwaway one.
 *
 * Usage: npx tsx bench/ingest.ts [--requests 10000] [--batch 1] [--in-flight 32] [--profile]
 * (--profile writes a CPU profile of the gateway process to <tmp>/gw-bench-profile/)
 * Prints requests/s and gateway CPU µs per request (from /proc, Linux only) for the shape given, and for one reading
 * per request and 20 per request when no --batch is given, so the per-message and per-reading costs can be told apart.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import { args, opt, run, spawnGateway } from './common.js';

const REQUESTS = opt('requests', 10000);
const IN_FLIGHT = opt('in-flight', 32);
const SHAPES = args.includes('--batch') ? [opt('batch', 1)] : [1, 20];

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
  const { child, url } = await spawnGateway(env, 'ingest');
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
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
    const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
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
    for (const batch of SHAPES) {
      const requests = Math.max(200, Math.round(REQUESTS / batch));
      await run(Math.min(2000, requests), batch); // warm-up
      const c0 = cpuMs();
      const t0 = performance.now();
      await run(requests, batch);
      const seconds = (performance.now() - t0) / 1000;
      const perRequest = ((cpuMs() - c0) * 1000) / requests;
      console.log(
        `${String(batch).padStart(3)} reading(s) per request: ${(requests / seconds).toFixed(0).padStart(6)} requests/s, ${((requests * batch) / seconds).toFixed(0).padStart(6)} readings/s, gateway CPU ${perRequest.toFixed(0)} µs per request (${(perRequest / batch).toFixed(0)} µs per reading)`,
      );
    }
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run(main);
