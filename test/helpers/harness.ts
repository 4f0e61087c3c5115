/**
 * Test harness: real parts only. A throwaway redis-server on a random port, a real sandbox EHR (the medplum FHIR engine
 * over HTTP, with a fault injector in front so tests can make it answer 503/400/429), and the real gateway on port 0.
 */
import express from 'express';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import type { Bundle, Resource } from 'fhir/r4';
import { EmbeddedRedis } from '../../src/queue/embedded-redis.js';
import { DeliveryQueue, type QueueSettings } from '../../src/queue/queue.js';
import { createSandboxEhr, type SandboxEhr } from '../../src/sandbox/sandbox.js';
import type { Role } from '../../src/config/index.js';
import { Gateway } from '../../src/app/gateway.js';
import { createLogger } from '../../src/observability/logger.js';
import { loadGatewayConfig } from '../../src/app/features.js';

export const REPO_ROOT = resolve(new URL('../..', import.meta.url).pathname);

export interface TestRedis {
  url: string;
  redis: EmbeddedRedis;
  stop(): Promise<void>;
}

export async function startRedis(options: { appendOnly?: boolean } = {}): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-redis-'));
  const redis = new EmbeddedRedis({ dataDir: dir, appendOnly: options.appendOnly ?? false });
  const url = await redis.start();
  return {
    url,
    redis,
    stop: async () => {
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fault the sandbox answers with instead of processing the request. */
export interface Fault {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Only requests that match (method, path, parsed JSON body). */
  match?: (req: express.Request) => boolean;
  /** Hold the request this long, then answer normally (status 200) or with the fault (an error status). */
  delayMs?: number;
  /**
   * Hold the request until this settles, then answer normally (status 200) or with the fault (an error status): the
   * test decides when, no timing involved.
   */
  gate?: Promise<unknown>;
}

export interface TestEhr {
  url: string;
  sandbox: SandboxEhr;
  /** Faults consumed one per matching request, in order. */
  faults: Fault[];
  /** Every request the EHR received (method + path, and its parsed JSON body). */
  requests: { method: string; path: string; body?: unknown }[];
  search<T extends Resource>(type: string, params: Record<string, string>): Promise<T[]>;
  stop(): Promise<void>;
}

export async function startEhr(): Promise<TestEhr> {
  const sandbox = await createSandboxEhr();
  const faults: Fault[] = [];
  const requests: { method: string; path: string; body?: unknown }[] = [];
  const app = express();
  // Parsed here so that a fault can match on the body (the sandbox's own parser sees it is done and skips).
  app.use('/fhir', express.json({ type: ['application/json', 'application/fhir+json'], limit: '20mb' }));
  app.use(
    '/fhir',
    async (req, res, next) => {
      requests.push({ method: req.method, path: req.path, body: req.body });
      const i = faults.findIndex((f) => !f.match || f.match(req));
      if (i >= 0) {
        const [f] = faults.splice(i, 1);
        if (f.gate) await f.gate;
        if (f.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
        if ((f.gate || f.delayMs) && f.status < 300) return next();
        for (const [k, v] of Object.entries(f.headers ?? {})) res.setHeader(k, v);
        res
          .status(f.status)
          .type('application/fhir+json')
          .send(
            JSON.stringify(
              f.body ?? {
                resourceType: 'OperationOutcome',
                issue: [{ severity: 'error', code: 'transient', diagnostics: 'injected fault' }],
              },
            ),
          );
        return;
      }
      next();
    },
    sandbox.router,
  );
  const server: Server = await new Promise((res) => {
    const s = app.listen(0, '127.0.0.1', () => res(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return {
    url,
    sandbox,
    faults,
    requests,
    async search<T extends Resource>(type: string, params: Record<string, string>): Promise<T[]> {
      // Bounded, so that a search that never returns fails naming itself rather than as the test's timeout.
      const r = await fetch(`${url}/${type}?${new URLSearchParams(params)}`, { signal: AbortSignal.timeout(30_000) }).catch((e: Error) => {
        throw new Error(`search ${type}: ${e.name === 'TimeoutError' ? 'no answer within 30 s' : e.message}`, { cause: e });
      });
      const b = (await r.json()) as Bundle;
      return (b.entry ?? []).map((e) => e.resource as T);
    },
    stop: () =>
      new Promise((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  };
}

/** Fast settings for tests: short backoff, short locks, quick stalled-job detection. */
export const FAST_ENV: Record<string, string> = {
  PORT: '0',
  HOST: '127.0.0.1',
  LOG_LEVEL: 'debug',
  MLLP_PORT: '0',
  MAPPINGS_WATCH: 'false',
  UNKNOWN_DEVICE_POLICY: 'accept',
  RETRY_BASE_DELAY_MS: '50',
  RETRY_MAX_DELAY_MS: '500',
  DELIVERY_ATTEMPTS: '6',
  QUEUE_LOCK_DURATION_MS: '1000',
  QUEUE_STALLED_INTERVAL_MS: '500',
  FHIR_TIMEOUT_MS: '3000',
  ENQUEUE_TIMEOUT_MS: '5000',
  SANDBOX_PERSIST: 'false',
  // Tests that send the same content twice expect one job: a window longer than any run.
  DEDUPE_WINDOW_S: '86400',
  SHUTDOWN_TIMEOUT_MS: '5000',
  // Tests look at the workers of the gateway they started (gateway.worker): role all delivers on the gateway's own
  // thread. The delivery thread has its tests (test/delivery/thread.test.ts).
  DELIVERY_THREAD: 'off',
};

export interface TestGateway {
  gateway: Gateway;
  url: string;
  /** Every log line the gateway wrote (JSON text). */
  logs: string[];
  stop(): Promise<void>;
}

/**
 * The one way tests start a gateway: in this process, with the production feature list (app/features.ts) and the
 * whole configuration schema, on port 0, its log lines captured. `env` is laid over FAST_ENV.
 */
export async function startGateway(env: Record<string, string | undefined>, role: Role = 'all'): Promise<TestGateway> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...FAST_ENV, ...env })) if (v !== undefined) merged[k] = v;
  const config = loadGatewayConfig(merged);
  const gateway = new Gateway(config, role, { logger: createLogger(config.logLevel, sink) });
  await gateway.start();
  return { gateway, url: gateway.url, logs, stop: () => gateway.stop() };
}

/** A throwaway Redis, the sandbox EHR behind its fault injector, and a gateway delivering to it. */
export interface Stack {
  redis: TestRedis;
  ehr: TestEhr;
  gw: TestGateway;
}

/**
 * A Stack for the enclosing describe block: started before its tests, stopped after them, the EHR emptied (data,
 * faults, request log) before each test. The fields are set once the block's `before` has run.
 */
export function useStack(env: Record<string, string> = {}): Stack {
  const stack = {} as Stack;
  before(async () => {
    stack.redis = await startRedis();
    stack.ehr = await startEhr();
    stack.gw = await startGateway({ REDIS_URL: stack.redis.url, FHIR_BASE_URL: stack.ehr.url, ...env });
  });
  after(async () => {
    await stack.gw?.stop();
    await stack.ehr?.stop();
    await stack.redis?.stop();
  });
  beforeEach(() => {
    stack.ehr.sandbox.clear();
    stack.ehr.faults.length = 0;
    stack.ehr.requests.length = 0;
  });
  return stack;
}

/** Polls until `check` returns a truthy value or the deadline passes (behaviour, not timing: a generous deadline). */
export async function eventually<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface ChildGateway {
  child: ChildProcess;
  url: Promise<string>;
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Runs the gateway as a separate process (the CLI, from source), as operators run it; `nodeArgs` go before the script. */
export function spawnGateway(env: Record<string, string>, role: Role, nodeArgs: string[] = []): ChildGateway {
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', join(REPO_ROOT, 'src/main.ts'), 'start', '--role', role], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...FAST_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const url = new Promise<string>((res, rej) => {
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /"url":"(http:[^"]+)"[^\n]*"msg":"gateway started"/.exec(out);
      if (m) res(m[1]);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    child.once('exit', (code) => rej(new Error(`gateway (${role}) exited ${code}: ${out.slice(-2000)}`)));
  });
  url.catch(() => undefined);
  return {
    child,
    url,
    output: () => out,
    stop: (signal: NodeJS.Signals = 'SIGTERM') =>
      new Promise((res) => {
        if (child.exitCode !== null || child.signalCode !== null) return res(child.exitCode);
        child.once('exit', (code) => res(code));
        child.kill(signal);
      }),
  };
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: parsed, headers: r.headers };
}

/** A delivery queue on a test Redis with short timings (retries in tens of ms), as the queue tests use it. */
export function testQueue(redisUrl: string, queueName: string, extra: Partial<QueueSettings> = {}): DeliveryQueue {
  return new DeliveryQueue(
    {
      redisUrl,
      queueName,
      maxDepth: 10_000,
      enqueueTimeoutMs: 2000,
      attempts: 3,
      lockDurationMs: 1000,
      stalledIntervalMs: 500,
      retentionCompleted: 100,
      dedupeWindowS: 86400,
      retryBaseDelayMs: 50,
      retryMaxDelayMs: 500,
      ...extra,
    },
    () => 50,
  );
}
