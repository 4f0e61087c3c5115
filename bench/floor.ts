/**
 * The floor of the gateway's path (not a test, not a product): the least a service on the same stack can do and still
 * be a queue in front of an EHR. Run by `bench/path.ts --floor` in place of the gateway, on the same Redis (AOF), the
 * same sink and the same load, so that the gateway's figures can be read against it.
 *
 * It does what the gateway's path does in its plumbing and nothing else:
 *   - ingest (the main thread): node:http, the body read and JSON.parse'd; the messages of one turn of the event loop
 *     queued as one bull job (a group commit, as INGEST_COMBINE does); each 202 sent once its job is in Redis;
 *   - delivery (a worker thread, as role all's delivery thread): bull's worker, concurrency 32; each job sent to the
 *     sink as one FHIR transaction (a Device and an Observation per measurement, built from the message as it came).
 * Nothing the gateway adds is here: no adapter, translation, coding or validation, no device registry or guard, no
 * credentials, no audit trail, no idempotency (job ids from the content), no locks, no retry policy, no metrics, no
 * helmet headers, no limits on size or depth. The difference between the two is what those cost.
 *
 * Usage (by path.ts): REDIS_URL=... FHIR_BASE_URL=... node --import tsx bench/floor.ts
 * It prints one JSON line with its URL and "msg":"gateway started" once it listens, as the gateway logs.
 */
import { Agent, createServer, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isMainThread, Worker, workerData } from 'node:worker_threads';
import Bull from 'bull';
import { threadEntry } from '../src/core/threads.js';

interface Message {
  deviceId: string;
  timestamp: string;
  measurements: { code: string; value: number; unit: string }[];
}

const QUEUE = 'floor';
const redisUrl = isMainThread ? (process.env.REDIS_URL ?? 'redis://127.0.0.1:6379') : (workerData as { redisUrl: string }).redisUrl;
const queue = new Bull<{ messages: Message[] }>(QUEUE, redisUrl, { prefix: 'floor' });

function transaction(messages: Message[]): string {
  const entry: unknown[] = [];
  messages.forEach((m, i) => {
    const device = `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    entry.push({
      fullUrl: device,
      resource: { resourceType: 'Device', identifier: [{ value: m.deviceId }] },
      request: { method: 'POST', url: 'Device' },
    });
    for (const x of m.measurements)
      entry.push({
        resource: {
          resourceType: 'Observation',
          status: 'final',
          code: { coding: [{ system: 'urn:iso:std:iso:11073:10101', code: x.code }] },
          device: { reference: device },
          effectiveDateTime: m.timestamp,
          valueQuantity: { value: x.value, unit: x.unit },
        },
        request: { method: 'POST', url: 'Observation' },
      });
  });
  return JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry });
}

if (isMainThread) {
  const pending: { message: Message; res: ServerResponse }[] = [];
  let scheduled = false;
  const answer = (res: ServerResponse, status: number, body: string) => {
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const flush = () => {
    scheduled = false;
    const batch = pending.splice(0);
    queue.add({ messages: batch.map((p) => p.message) }, { removeOnComplete: true }).then(
      (job) => {
        const body = JSON.stringify({ status: 'queued', jobId: String(job.id) });
        for (const p of batch) answer(p.res, 202, body);
      },
      () => {
        for (const p of batch) answer(p.res, 503, '{"status":"unavailable"}');
      },
    );
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let message: Message;
      try {
        message = JSON.parse(Buffer.concat(chunks).toString()) as Message;
      } catch {
        return answer(res, 400, '{"status":"invalid"}');
      }
      pending.push({ message, res });
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  const { entry, eval: isEval } = threadEntry(new URL(import.meta.url));
  const worker = new Worker(entry, { eval: isEval, workerData: { redisUrl, sink: process.env.FHIR_BASE_URL } });
  worker.on('error', (err) => {
    console.error(err);
    process.exit(1);
  });
  server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    console.log(JSON.stringify({ url, msg: 'gateway started' }));
  });
  process.on('SIGTERM', () => {
    void worker.terminate().then(() => queue.close().finally(() => process.exit(0)));
  });
} else {
  const sink = new URL((workerData as { sink: string }).sink);
  const agent = new Agent({ keepAlive: true, maxSockets: 32 });
  void queue.process(32, (job) => {
    const body = Buffer.from(transaction(job.data.messages));
    return new Promise<void>((resolve, reject) => {
      const req = request(
        sink,
        { method: 'POST', agent, headers: { 'content-type': 'application/fhir+json', 'content-length': body.length } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`the sink answered ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  });
}
