/**
 * What the HTTP stack costs per request on the ingest path (not a test): the same one-reading POST answered 202 by
 *   1. node:http alone (read the body, JSON.parse, answer),
 *   2. express 5 routing with the body read and parsed by hand (as 1 does),
 *   3. express 5 with express.json() (body-parser),
 *   4. express 5 with helmet() and express.json() (the gateway's stack in front of its routes),
 *   5. the same with express's ETag off (express hashes every response body it sends to make one),
 * each measured as process CPU µs per request over the same keep-alive load (the load generator runs in the same
 * process and costs the same in every variant, so the differences are the stack's cost). No Redis, no pipeline.
 *
 * Usage: npx tsx bench/http-stack.ts [--requests 20000] [--in-flight 32]
 */
import { Agent, createServer, request, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import helmet from 'helmet';
import { opt, run } from './common.js';

const REQUESTS = opt('requests', 20000);
const IN_FLIGHT = opt('in-flight', 32);

const body = Buffer.from(
  JSON.stringify({
    deviceId: 'BENCH-1',
    patientId: 'MRN-1',
    timestamp: '2026-11-23T00:00:00.000Z',
    measurements: [
      { code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' },
      { code: 'MDC_PULS_OXIM_PULS_RATE', value: 70, unit: 'bpm' },
    ],
  }),
);
const answer = { status: 'queued', jobIds: ['0123456789abcdef0123456789abcdef'], observations: 2 };

const raw: RequestListener = (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    JSON.parse(Buffer.concat(chunks).toString());
    const out = JSON.stringify(answer);
    res.writeHead(202, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(out) });
    res.end(out);
  });
};

function app(withHelmet: boolean, bodyParser = true, etag = true): RequestListener {
  const a = express();
  if (!etag) a.set('etag', false);
  if (withHelmet) a.use(helmet());
  if (bodyParser) a.post('/ingest/measurements', express.json(), (_req, res) => void res.status(202).json(answer));
  else
    a.post('/ingest/measurements', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        JSON.parse(Buffer.concat(chunks).toString());
        res.status(202).json(answer);
      });
    });
  return a as unknown as RequestListener;
}

async function measure(name: string, handler: RequestListener): Promise<number> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest/measurements`;
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        url,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 202 ? resolve() : reject(new Error(`answered ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const load = async (n: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next++ < n) await post();
      }),
    );
  };
  await load(2000); // warm-up (JIT, sockets)
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await load(REQUESTS);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  agent.destroy();
  await new Promise((r) => server.close(r));
  const us = (cpu.user + cpu.system) / REQUESTS;
  console.log(
    `  ${name.padEnd(34)} ${(REQUESTS / seconds).toFixed(0).padStart(6)} requests/s, ${us.toFixed(0).padStart(4)} µs CPU per request`,
  );
  return us;
}

async function main(): Promise<void> {
  console.log(`${REQUESTS} one-reading POSTs, ${IN_FLIGHT} in flight, load generator in the same process:`);
  const a = await measure('node:http + JSON.parse', raw);
  const r = await measure('express routing + JSON.parse', app(false, false));
  const b = await measure('express + express.json()', app(false));
  const c = await measure('express + helmet() + express.json()', app(true));
  const d = await measure('… and etag off', app(true, true, false));
  console.log(
    `per request: ETag +${(c - d).toFixed(0)} µs, express routing and response +${(r - a).toFixed(0)} µs, body-parser +${(b - r).toFixed(0)} µs, helmet +${(c - b).toFixed(0)} µs`,
  );
}

run(main);
