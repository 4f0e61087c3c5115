/**
 * Readings/s delivered to one destination versus two at once (each destination its own queue and worker), in the
 * same run: a gateway child process (role all) with a destinations file naming one or two fast FHIR sinks (they answer
 * every transaction at once and store nothing, so the gateway is the bottleneck). `--readings N` (default 4000) are
 * posted, 32 requests in flight; the figure is readings delivered per second from the first post until every
 * destination has every reading.
 *
 *   npx tsx bench/destinations.ts [--readings 4000]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import { opt, postMeasurements as post, run, spawnGateway } from './common.js';

const READINGS = opt('readings', 4000);

/** A sink: counts the Observations of each transaction it is sent. */
async function sink(): Promise<{ url: string; count: () => number; close: () => void }> {
  let observations = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      if (req.method === 'GET') return void res.end('{"resourceType":"CapabilityStatement","status":"active","kind":"instance"}');
      const entries = (JSON.parse(Buffer.concat(chunks).toString()) as { entry?: { resource?: { resourceType?: string } }[] }).entry ?? [];
      observations += entries.filter((e) => e.resource?.resourceType === 'Observation').length;
      res.end(
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'transaction-response',
          entry: entries.map((e, i) => ({ response: { status: '201 Created', location: `${e.resource?.resourceType}/${i}/_history/1` } })),
        }),
      );
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`,
    count: () => observations,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function measure(destinations: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-dest-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
  const redisUrl = await redis.start();
  const sinks = await Promise.all(Array.from({ length: destinations }, () => sink()));
  const file = join(dir, 'destinations.json');
  writeFileSync(
    file,
    JSON.stringify({ destinations: sinks.map((s, i) => ({ name: i ? `d${i}` : 'ehr', baseUrl: s.url, writeMode: 'transaction' })) }),
  );
  const { child, url } = await spawnGateway(
    {
      PORT: '0',
      REDIS_URL: redisUrl,
      DESTINATIONS_FILE: file,
      UNKNOWN_PATIENT_POLICY: 'create',
      UNKNOWN_DEVICE_POLICY: 'accept',
      MLLP_ENABLED: 'false',
      MAPPINGS_WATCH: 'false',
      LOG_LEVEL: 'info',
    },
    'all',
  );
  try {
    const t0 = Date.now();
    let next = 0;
    const refused: number[] = [];
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < READINGS) {
          const i = next++;
          const s = await post(url, {
            deviceId: `DEST-${i % 200}`,
            patientId: `MRN-${i % 20}`,
            timestamp: new Date(Date.UTC(2026, 10, 23) + i * 1000).toISOString(),
            measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (i % 10), unit: '%' }],
          });
          if (s !== 202) refused.push(s);
        }
      }),
    );
    const accepted = READINGS - refused.length;
    while (sinks.some((s) => s.count() < accepted)) await new Promise((r) => setTimeout(r, 20));
    const seconds = (Date.now() - t0) / 1000;
    const rate = accepted / seconds;
    console.log(
      `${destinations} destination${destinations > 1 ? 's' : ''}: ${accepted} readings delivered to each in ${seconds.toFixed(1)} s: ` +
        `${rate.toFixed(0)} readings/s per destination, ${(rate * destinations).toFixed(0)} deliveries/s in all (refused at ingest: ${refused.length})`,
    );
    return rate;
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    for (const s of sinks) s.close();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

run(async () => {
  console.log(`machine: ${cpus().length} cores, node ${process.version}; ${READINGS} readings, gateway defaults`);
  const one = await measure(1);
  const two = await measure(2);
  console.log(`two destinations at once deliver ${((two / one) * 100).toFixed(0)} % of the readings/s of one (to each)`);
});
