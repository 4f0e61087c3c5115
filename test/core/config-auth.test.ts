/**
 * Configuration validation, the bootstrap admin key, and graceful shutdown.
 */
import { strict as assert } from 'node:assert';
import request from 'supertest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { gatewayConfigHelp } from '../../src/app/features.js';
import { connectRedis } from '../../src/queue/queue.js';
import { eventually, postJson, REPO_ROOT, startEhr, startGateway, startRedis } from '../helpers/harness.js';

describe('configuration', () => {
  it('has working defaults: sandbox EHR, private Redis, create-patient policy with the sandbox', () => {
    const c = loadConfig({});
    assert.equal(c.port, 8080);
    assert.equal(c.sandbox, true);
    assert.equal(c.redisUrl, undefined);
    assert.equal(c.unknownPatientPolicy, 'create');
  });

  it('defaults the unknown-patient policy to reject with a real EHR', () => {
    assert.equal(loadConfig({ FHIR_BASE_URL: 'https://ehr.example.org/fhir' }).unknownPatientPolicy, 'reject');
  });

  it('reports every error at once, each naming its variable', () => {
    try {
      loadConfig({
        PORT: 'eighty',
        FHIR_BASE_URL: 'not a url',
        UNKNOWN_PATIENT_POLICY: 'maybe',
        DELIVERY_CONCURRENCY: '0',
        FHIR_AUTH: 'bearer',
      });
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const text = err.errors.join('\n');
      for (const m of [
        /PORT: 'eighty' is not a whole number/,
        /FHIR_BASE_URL: 'not a url' is not a URL/,
        /UNKNOWN_PATIENT_POLICY: 'maybe' is not one of reject, create/,
        /DELIVERY_CONCURRENCY: 0 is below the minimum 1/,
        /FHIR_BEARER_TOKEN is required/,
      ]) {
        assert.match(text, m);
      }
      assert.equal(err.errors.length, 5);
    }
  });

  it('documents every key in the help table, without printing secrets', () => {
    const help = gatewayConfigHelp();
    for (const k of [
      'PORT',
      'REDIS_URL',
      'FHIR_BASE_URL',
      'FHIR_AUTH',
      'FHIR_BEARER_TOKEN',
      'RETRY_MAX_DELAY_MS',
      'DELIVERY_CONCURRENCY',
      'QUEUE_MAX_DEPTH',
      'UNKNOWN_PATIENT_POLICY',
    ])
      assert.match(help, new RegExp(`\\b${k}\\b`));
  });
});

describe('start-up checks', function () {
  it('exits with a clear message when REDIS_URL is unset and no redis-server is installed', async () => {
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', 'start'], {
      cwd: REPO_ROOT,
      env: { PATH: '/nonexistent', HOME: process.env.HOME ?? '/tmp', PORT: '0', LOG_LEVEL: 'silent' },
      encoding: 'utf8',
      timeout: 30000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /no redis-server is on PATH/);
    assert.match(r.stderr, /apt-get install redis-server/);
    assert.match(r.stderr, /REDIS_URL=redis:\/\/host:6379/);
  });

  for (const key of ['PORT', 'MLLP_PORT']) {
    it(`exits 1 with one clear line when ${key} is taken (no raw stack, no gateway without its listener)`, async () => {
      const { spawn } = await import('node:child_process');
      const net = await import('node:net');
      const redis = await startRedis();
      const busy = net.createServer();
      await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
      const port = String((busy.address() as { port: number }).port);
      try {
        const env = {
          ...process.env,
          REDIS_URL: redis.url,
          HOST: '127.0.0.1',
          PORT: '0',
          MLLP_PORT: '0',
          MLLP_HOST: '127.0.0.1',
          LOG_LEVEL: 'silent',
          [key]: port,
        };
        const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'start'], {
          cwd: REPO_ROOT,
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        const code = await new Promise<number | null>((r) => child.once('exit', r));
        assert.equal(code, 1, stderr);
        const lines = stderr.trim().split('\n');
        assert.equal(lines.length, 1, stderr);
        assert.match(lines[0], new RegExp(`${key}=${port}: the port is in use`));
      } finally {
        busy.close();
        await redis.stop();
      }
    });
  }

  it('warns loudly when Redis may evict queued jobs or keeps no AOF', async () => {
    const redis = await startRedis({ appendOnly: false });
    const ehr = await startEhr();
    const admin = connectRedis(redis.url);
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
    admin.disconnect();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url });
    try {
      assert.ok(
        gw.logs.some((l) => l.includes('"level":40') && l.includes("maxmemory-policy is 'allkeys-lru', not 'noeviction'")),
        'eviction warning',
      );
      assert.ok(
        gw.logs.some((l) => l.includes('"level":40') && l.includes('AOF off')),
        'AOF warning',
      );
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});

describe('bootstrap admin key and graceful shutdown', function () {
  it('guards /api, /ingest and /metrics with ADMIN_API_KEY; /healthz and /readyz stay open', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, ADMIN_API_KEY: 'k-0123456789abcdef' });
    try {
      assert.equal((await request(gw.url).get('/healthz')).status, 200);
      assert.equal((await request(gw.url).get('/readyz')).status, 200);
      for (const [method, path] of [
        ['get', '/api/status'],
        ['get', '/api/dead-letters'],
        ['get', '/metrics'],
        ['post', '/ingest/measurements'],
      ] as const) {
        const none = await request(gw.url)[method](path).send({});
        assert.equal(none.status, 401, `${method} ${path} without a credential`);
        assert.equal(none.body.resourceType, 'OperationOutcome');
        assert.equal(none.headers['www-authenticate'], 'Bearer');
        const wrong = await request(gw.url)[method](path).set('authorization', 'Bearer nope').send({});
        assert.equal(wrong.status, 401, `${method} ${path} with a wrong key`);
      }
      const ok = await request(gw.url).get('/api/status').set('authorization', 'Bearer k-0123456789abcdef');
      assert.equal(ok.status, 200);
      assert.ok(!JSON.stringify(ok.body).includes('k-0123456789abcdef'), 'the key is never echoed');
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });

  it('finishes in-flight jobs on stop, stop is safe to call twice, and leaves no Redis connection behind', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_PATIENT_POLICY: 'create' });
    ehr.faults.push({ status: 200, delayMs: 800, match: (r) => r.method === 'POST' });
    const r = await postJson(`${gw.url}/ingest/measurements`, {
      deviceId: 'SHUT-1',
      patientId: 'MRN-1',
      timestamp: '2026-11-23T10:00:00Z',
      measurements: [{ code: 'MDC_TEMP_BODY', value: 37.2, unit: 'degC' }],
    });
    assert.equal(r.status, 202);
    await eventually(() => ehr.requests.some((q) => q.method === 'POST'), 10000, 'the job to be in flight');
    assert.ok(gw.gateway.queue!.openConnections() > 0);
    await Promise.all([gw.stop(), gw.stop()]);
    await gw.stop();
    // bull leaves connections made by createClient open: a stopped gateway must close them itself, or they reconnect for ever.
    assert.equal(gw.gateway.queue!.openConnections(), 0);
    const obs = await ehr.search('Observation', {});
    assert.equal(obs.length, 1, 'the in-flight job completed before shutdown');
    assert.ok(gw.logs.some((l) => l.includes('"msg":"delivered"')));
    await ehr.stop();
    await redis.stop();
  });
});

describe('configuration for a person at a terminal', () => {
  it('.env.example lists every key at its default and is what `config --env` prints (it cannot drift)', async () => {
    const { readFileSync } = await import('node:fs');
    const { ALL_KEYS, gatewayEnvFile } = await import('../../src/app/features.js');
    const file = readFileSync(`${REPO_ROOT}/.env.example`, 'utf8');
    assert.equal(file, gatewayEnvFile(), 'regenerate it: npx tsx src/main.ts config --env > .env.example');
    for (const k of ALL_KEYS) assert.match(file, new RegExp(`^# ${k.env}=${k.secret ? '$' : ''}`, 'm'), k.env);
    assert.doesNotMatch(file, /^[A-Z_]+=/m, 'nothing is set: a copy changes nothing until a line is uncommented');
  });

  it('LOG_FORMAT=pretty prints readable lines, with the same PHI redaction as JSON', async () => {
    const { Writable } = await import('node:stream');
    const { createLogger } = await import('../../src/observability/logger.js');
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const log = createLogger('info', sink, 'pretty');
    log.info({ jobId: 'J-1', patientId: 'MRN-SECRET' }, 'delivered');
    const text = lines.join('');
    assert.match(text, /INFO.*delivered/);
    assert.match(text, /jobId: "J-1"/);
    assert.doesNotMatch(text, /MRN-SECRET/);
    assert.throws(() => JSON.parse(text.trim()), 'not JSON');
    assert.equal(loadConfig({ LOG_FORMAT: 'pretty' }).logFormat, 'pretty');
  });
});
