/**
 * What authentication costs (a benchmark, not a test): requests/s that a gateway answers for
 *   - a valid device key (verified once, then from the verification cache),
 *   - a wrong secret on a known key id (scrypt each time, until the address reaches AUTH_FAILURE_LIMIT),
 *   - a made-up key id (the same scrypt: a decoy hash),
 * each for --seconds with --concurrency requests in flight from one address, against GET /api/devices/me/config (a
 * 404 there is an authenticated answer too: concurrent fetches of one device's configuration contend).
 * It also prints the median time of one refusal for a wrong secret and for an unknown key id (one at a time).
 *
 * Usage: npx tsx bench/auth.ts [--seconds 5 --concurrency 16 --limit 20]
 * (--limit: AUTH_FAILURE_LIMIT for the gateway; 0 switches the limit off, to see the raw scrypt ceiling)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbeddedRedis } from '../src/queue/embedded-redis.js';
import { opt, run, spawnGateway } from './common.js';

const SECONDS = opt('seconds', 5);
const CONCURRENCY = opt('concurrency', 16);
const LIMIT = opt('limit', 20);
const ADMIN = 'bench-admin-key-0123456789abcdef';
const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function call(url: string, method: string, key: string, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      url,
      { method, agent, headers: { authorization: `Bearer ${key}`, ...(data ? { 'content-type': 'application/json' } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function load(url: string, key: () => string): Promise<{ perSecond: number; statuses: Record<number, number> }> {
  const statuses: Record<number, number> = {};
  const end = Date.now() + SECONDS * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < end) {
        const r = await call(url, 'GET', key());
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        done++;
      }
    }),
  );
  return { perSecond: Math.round(done / SECONDS), statuses };
}

async function median(url: string, key: string, n = 15): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await call(url, 'GET', key);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return times.sort((a, b) => a - b)[Math.floor(n / 2)];
}

run(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-auth-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: false });
  const redisUrl = await redis.start();
  const base = {
    REDIS_URL: redisUrl,
    PORT: '0',
    MLLP_PORT: '0',
    LOG_LEVEL: 'info',
    ADMIN_API_KEY: ADMIN,
    SANDBOX_PERSIST: 'false',
    RATE_LIMIT_PER_MINUTE: '0',
  };
  const { child, url } = await spawnGateway({ ...base, AUTH_FAILURE_LIMIT: String(LIMIT) }, 'all');
  try {
    await call(`${url}/api/devices`, 'POST', ADMIN, { id: 'BENCH-1', adapter: 'measurements' });
    await call(`${url}/api/devices/BENCH-1/config`, 'PUT', ADMIN, { samplingIntervalS: 5 });
    const { key, keyId } = JSON.parse((await call(`${url}/api/devices/BENCH-1/credentials`, 'POST', ADMIN)).body) as {
      key: string;
      keyId: string;
    };
    const secret = key.slice(20);
    // A different secret (and key id) on each request, as a guesser sends: identical concurrent keys share one scrypt.
    const wrong = () => `gw_${keyId}_${randomBytes(32).toString('base64url')}`;
    const unknown = () => `gw_${randomBytes(8).toString('hex')}_${secret}`;
    const target = `${url}/api/devices/me/config`;
    console.log(`AUTH_FAILURE_LIMIT=${LIMIT}, ${CONCURRENCY} in flight, ${SECONDS} s each, GET /api/devices/me/config`);
    const valid = await load(target, () => key);
    console.log(`valid device key:         ${valid.perSecond} requests/s  ${JSON.stringify(valid.statuses)}`);
    if (LIMIT === 0) {
      console.log(`one wrong secret (median of 15, one at a time): ${(await median(target, wrong())).toFixed(1)} ms`);
      console.log(`one unknown key id (median of 15, one at a time): ${(await median(target, unknown())).toFixed(1)} ms`);
    }
    const bad = await load(target, wrong);
    console.log(`wrong secret, known key:  ${bad.perSecond} requests/s  ${JSON.stringify(bad.statuses)}`);
    const made = await load(target, unknown);
    console.log(`made-up key id:           ${made.perSecond} requests/s  ${JSON.stringify(made.statuses)}`);
    const health = await median(`${url}/healthz`, key, 15);
    console.log(`/healthz after the load (median of 15): ${health.toFixed(1)} ms`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
