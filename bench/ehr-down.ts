/**
 * An EHR outage under a trickle of readings (not a test): what the gateway sends an EHR that answers 503 to everything.
 * A throwaway Redis (AOF on), a stand-in EHR that counts the requests it gets and answers each with 503, and the
 * gateway (a child process, default delivery settings) fed one reading per request at a fixed rate. Prints the EHR
 * requests in all, per second (mean, and the last ten seconds), the dead letters made, and the breaker's state.
 *
 * Usage: npx tsx bench/ehr-down.ts [--rate 20] [--seconds 60] [--breaker on|off|both]
 * (off: BREAKER_FAILURE_THRESHOLD=0, the gateway without a circuit breaker; both: off, then on, each on a fresh Redis)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import { args, opt, postMeasurements as post, run, spawnGateway } from './common.js';

const RATE = opt('rate', 20);
const SECONDS = opt('seconds', 60);
const BREAKER_ARG = args.includes('--breaker') ? args[args.indexOf('--breaker') + 1] : 'both';
const MODES = BREAKER_ARG === 'both' ? ['off', 'on'] : [BREAKER_ARG];

function getJson(url: string): Promise<any> {
  return fetch(url).then((r) => r.json());
}

async function outage(mode: string): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-ehr-down-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
  const redisUrl = await redis.start();
  const perSecond: number[] = [];
  let t0 = 0;
  const ehr = createServer((req, res) => {
    req.resume();
    if (t0) {
      const s = Math.floor((Date.now() - t0) / 1000);
      perSecond[s] = (perSecond[s] ?? 0) + 1;
    }
    res.writeHead(503, { 'content-type': 'application/fhir+json' });
    res.end('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"down"}]}');
  });
  await new Promise<void>((r) => ehr.listen(0, '127.0.0.1', r));
  const ehrUrl = `http://127.0.0.1:${(ehr.address() as AddressInfo).port}/fhir`;
  const { child, url } = await spawnGateway(
    {
      PORT: '0',
      REDIS_URL: redisUrl,
      FHIR_BASE_URL: ehrUrl,
      UNKNOWN_PATIENT_POLICY: 'create',
      UNKNOWN_DEVICE_POLICY: 'accept',
      MLLP_ENABLED: 'false',
      MAPPINGS_WATCH: 'false',
      LOG_LEVEL: 'info',
      ...(mode === 'off' ? { BREAKER_FAILURE_THRESHOLD: '0' } : {}),
    },
    'all',
  );
  try {
    t0 = Date.now();
    const refused: number[] = [];
    for (let i = 0; i < RATE * SECONDS; i++) {
      const wait = t0 + (i * 1000) / RATE - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const reading = {
        deviceId: `DOWN-${i % 50}`,
        patientId: `MRN-${i % 10}`,
        timestamp: new Date(Date.UTC(2026, 10, 23) + i * 1000).toISOString(),
        measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (i % 10), unit: '%' }],
      };
      void post(url, reading).then((s) => s !== 202 && refused.push(s));
    }
    const counts = Array.from({ length: SECONDS }, (_, s) => perSecond[s] ?? 0);
    const total = counts.reduce((a, b) => a + b, 0);
    const status = await getJson(`${url}/api/status`);
    const breaker = status.destinations?.[0];
    const last10 = counts.slice(-10).reduce((a, b) => a + b, 0) / 10;
    console.log(`breaker ${mode}: ${RATE * SECONDS} readings at ${RATE}/s for ${SECONDS} s, the EHR answering 503 to everything`);
    console.log(
      `  EHR requests      ${total} (${(total / SECONDS).toFixed(1)}/s mean, ${last10.toFixed(1)}/s in the last 10 s, ${Math.max(...counts)}/s at most)`,
    );
    console.log(`  dead letters      ${status.deadLetters} (readings refused at ingest: ${refused.length})`);
    console.log(
      `  queue             ${JSON.stringify(status.queue && { waiting: status.queue.waiting, active: status.queue.active, delayed: status.queue.delayed, failed: status.queue.failed })}`,
    );
    if (breaker?.breakerEnabled)
      console.log(
        `  breaker           ${breaker.state}, opened ${breaker.opened}x, probes ${JSON.stringify(breaker.probes)}, refused unsent ${breaker.refused}`,
      );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    ehr.closeAllConnections();
    ehr.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run(async () => {
  console.log(
    `machine: ${(await import('node:os')).cpus().length} cores, node ${process.version}; gateway defaults (DELIVERY_ATTEMPTS, RETRY_*, BREAKER_*)`,
  );
  for (const mode of MODES) await outage(mode);
});
