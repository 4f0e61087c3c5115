/**
 * Real parts for the HL7v2 channel tests: a throwaway redis-server on a random port, the real bull DeliveryQueue and
 * Pipeline with the hl7v2 adapter, the MLLP server on port 0 and the HTTP routes on port 0. Plus a small MLLP client.
 */
import express from 'express';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import IORedis, { type Redis } from 'ioredis';
import type { DeviceAdapter, TranslationContext } from '../../src/core/contract.js';
import { AdapterRegistry } from '../../src/adapters/registry.js';
import { createHl7Adapter } from '../../src/hl7v2/adapter.js';
import { defaultHl7Config, type Hl7Config } from '../../src/hl7v2/config.js';
import { MllpDecoder, MllpServer, type MllpServerOptions, mllpFrame } from '../../src/channels/mllp/server.js';
import { hl7Route } from '../../src/channels/mllp/http-route.js';
import { Hl7Session } from '../../src/channels/mllp/session.js';
import { RefusalStore } from '../../src/pipeline/refusals.js';
import { refusalRoutes } from '../../src/pipeline/routes.js';
import { errorHandler } from '../../src/http/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import { Pipeline } from '../../src/pipeline/pipeline.js';
import { EmbeddedRedis } from '../../src/queue/embedded-redis.js';
import { DeliveryQueue } from '../../src/queue/queue.js';

export const CTX: TranslationContext = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:mrn' };

export interface TestRedisServer {
  url: string;
  stop(): Promise<void>;
}

export async function startTestRedis(): Promise<TestRedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'hl7-redis-'));
  const server = new EmbeddedRedis({ dataDir: dir, appendOnly: false });
  const url = await server.start();
  return {
    url,
    stop: async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function newQueue(redisUrl: string, name = `hl7-test-${Math.random().toString(36).slice(2, 8)}`): DeliveryQueue {
  return new DeliveryQueue(
    {
      redisUrl,
      queueName: name,
      maxDepth: 100000,
      enqueueTimeoutMs: 2000,
      attempts: 1,
      lockDurationMs: 30000,
      stalledIntervalMs: 30000,
      retentionCompleted: 100,
      retryBaseDelayMs: 100,
      retryMaxDelayMs: 1000,
    },
    () => 100,
  );
}

export interface Stack {
  config: Hl7Config;
  redis: Redis;
  queue: DeliveryQueue;
  registry: AdapterRegistry;
  pipeline: Pipeline;
  /** The HL7 session (ACK rules, ACK cache, refusals) shared by MLLP and POST /hl7v2. */
  service: Hl7Session;
  refusals: RefusalStore;
  mllp: MllpServer;
  port: number;
  httpUrl: string;
  jobs(): Promise<{ id: string; data: import('../../src/queue/queue.js').DeliveryJob }[]>;
  stop(): Promise<void>;
}

export async function startStack(
  redisUrl: string,
  overrides: Partial<Hl7Config> = {},
  adapters?: DeviceAdapter[],
  serverOptions: Partial<Omit<MllpServerOptions, 'config' | 'session'>> = {},
): Promise<Stack> {
  const config = defaultHl7Config({ mllpPort: 0, mllpHost: '127.0.0.1', ...overrides });
  const redis = new IORedis.default(redisUrl, { maxRetriesPerRequest: 1 });
  const queue = newQueue(redisUrl);
  await queue.bull.isReady();
  const registry = new AdapterRegistry(adapters ?? [createHl7Adapter(config)]);
  const pipeline = new Pipeline(registry, queue, CTX);
  const refusals = new RefusalStore(redis);
  const service = new Hl7Session({ ingestor: pipeline, redis, refusals, config });
  refusals.replayWith('hl7v2', (entry) => service.replay(entry));
  const mllp = new MllpServer({ ...serverOptions, config, session: service });
  const { port } = await mllp.start();
  const app = express();
  const open = () => (_req: unknown, _res: unknown, next: () => void) => next();
  app.use(hl7Route({ session: service }));
  app.use(refusalRoutes({ refusals, requireRole: open, isReady: () => true, log: createLogger('silent') }));
  app.use(errorHandler(createLogger('silent')));
  const server: Server = await new Promise((res) => {
    const s = app.listen(0, '127.0.0.1', () => res(s));
  });
  const httpUrl = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    config,
    redis,
    queue,
    registry,
    pipeline,
    service,
    refusals,
    mllp,
    port,
    httpUrl,
    jobs: async () =>
      (await queue.bull.getJobs(['waiting', 'delayed', 'active', 'completed', 'failed'])).map((j) => ({ id: String(j.id), data: j.data })),
    stop: async () => {
      await mllp.stop();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await queue.close();
      redis.disconnect();
    },
  };
}

/** A raw MLLP client: write anything, read frames in order. */
export class TestClient {
  private readonly decoder = new MllpDecoder(64 << 20);
  private readonly frames: string[] = [];
  private waiters: (() => void)[] = [];
  closed = false;
  readonly done: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      for (const e of this.decoder.push(c)) if (e.type === 'frame') this.frames.push(e.data.toString('latin1'));
      this.wake();
    });
    this.done = new Promise((r) =>
      socket.on('close', () => {
        this.closed = true;
        this.wake();
        r();
      }),
    );
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** `localAddress`: the source address (any of 127/8 routes to the loopback on Linux: a different peer). */
  static connect(port: number, tlsOptions?: tls.ConnectionOptions, localAddress?: string): Promise<TestClient> {
    return new Promise((resolve, reject) => {
      const from = localAddress ? { localAddress } : {};
      const s: net.Socket = tlsOptions
        ? tls.connect({ host: '127.0.0.1', port, ...from, ...tlsOptions }, () => resolve(new TestClient(s)))
        : net.connect({ host: '127.0.0.1', port, ...from }, () => resolve(new TestClient(s)));
      s.once('error', reject);
    });
  }

  write(data: Buffer | string): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  send(message: string | Buffer): void {
    this.socket.write(mllpFrame(typeof message === 'string' ? Buffer.from(message, 'utf8') : message));
  }

  /** The next frame (in arrival order); rejects after the deadline. */
  async next(timeoutMs = 10000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!this.frames.length) {
      if (this.closed) throw new Error('connection closed before a frame arrived');
      if (Date.now() > deadline) throw new Error('no frame in time');
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.frames.shift() as string;
  }

  /** Frames that arrived so far and were not read. */
  pending(): number {
    return this.frames.length;
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }
}

/** A message with a given control id, from the PCD-01 fixture style, in original mode unless told. */
export function pcdMessage(controlId: string, opts: { accept?: string; app?: string; value?: number; pid?: boolean } = {}): string {
  return (
    [
      `MSH|^~\\&|GW-TEST^0A1B2C3D4E5F6071^EUI-64|WARD-7|IOMT|HOSP|20261123101500+0100||ORU^R01^ORU_R01|${controlId}|P|2.6|||${opts.accept ?? ''}|${opts.app ?? ''}||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO`,
      ...(opts.pid === false ? [] : ['PID|||MRN-4711^^^HOSP&1.2.276.0.99.1&ISO^MR||Muster^Erika']),
      'OBR|1|||182777000^monitoring of patient^SCT|||20261123101400+0100',
      'OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||00A0C914C8290001^EUI-64',
      `OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|${opts.value ?? 97}|262688^MDC_DIM_PERCENT^MDC|||||R|||20261123101405+0100`,
    ].join('\r') + '\r'
  );
}

/**
 * Writes a test CA (ca.pem, ca.key), a server certificate for localhost and 127.0.0.1 (server.pem, server.key) and a
 * client certificate (client.pem, client.key) into `dir` with the openssl CLI. False when openssl is not there.
 */
export function makeTestCerts(dir: string): boolean {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  try {
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test-ca');
    for (const who of ['server', 'client']) {
      ssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        `${who}.key`,
        '-out',
        `${who}.csr`,
        '-subj',
        `/CN=${who === 'server' ? 'localhost' : 'device-1'}`,
      );
      writeFileSync(
        join(dir, `${who}.ext`),
        who === 'server' ? 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' : 'extendedKeyUsage=clientAuth\n',
      );
      ssl(
        'x509',
        '-req',
        '-in',
        `${who}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${who}.pem`,
        '-days',
        '2',
        '-extfile',
        `${who}.ext`,
      );
    }
    return true;
  } catch {
    return false;
  }
}
