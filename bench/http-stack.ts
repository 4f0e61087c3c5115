/**
 * What the HTTP stack costs per request on the ingest path (not a test): the same one-reading POST answered 202 by
 *   1. node:http alone (read the body, JSON.parse, answer),
 *   2. express 5 routing with the body read and parsed by hand (as 1 does),
 *   3. express 5 with express.json() (body-parser),
 *   4. express 5 with helmet() and express.json() (the gateway's stack in front of its routes),
 *   5. the same with express's ETag off (express hashes every response body it sends to make one),
 *   6. the gateway's own shell (http/app.ts createApp: helmet's headers set once, /healthz, /readyz, then the route),
 *      the route found by express's router,
 *   7. the same shell with the route dispatched before express (withHotRoutes, node's request and response left as
 *      they are), as the gateway serves ingest,
 * each measured as process CPU µs per request over the same keep-alive load (the load generator runs in the same
 * process and costs the same in every variant, so the differences are the stack's cost). No Redis, no pipeline.
 * The variants take turns, in `--rounds` rounds each (default 5), so that load from elsewhere on the machine falls on
 * all of them alike; the figure is the median round.
 *
 * Usage: npx tsx bench/http-stack.ts [--requests 20000] [--in-flight 32] [--rounds 5]
 */
import { Agent, createServer, request, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import helmet from 'helmet';
import { createApp, withHotRoutes } from '../src/http/app.js';
import { errorHandler, sendJson } from '../src/http/errors.js';
import { createLogger } from '../src/observability/logger.js';
import { opt, run } from './common.js';

const REQUESTS = opt('requests', 20000);
const IN_FLIGHT = opt('in-flight', 32);
const ROUNDS = opt('rounds', 5);

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

/** The gateway's shell around one ingest route, routed by express or dispatched as a hot route. */
function shell(hot: boolean): RequestListener {
  const log = createLogger('error');
  const handlers: express.RequestHandler[] = [express.json(), (_req, res) => sendJson(res, 202, answer)];
  const router = express.Router();
  router.post('/ingest/:adapter', ...handlers);
  const a = createApp({ log, readiness: async () => ({ problems: [] }), routers: [router] });
  if (!hot) return a as unknown as RequestListener;
  return withHotRoutes(a, [{ method: 'POST', path: /^\/ingest\/([^/]+)\/?$/i, params: ['adapter'], handlers }], errorHandler(log));
}

interface Variant {
  name: string;
  post(): Promise<void>;
  close(): Promise<void>;
  rounds: number[];
}

async function serve(name: string, handler: RequestListener): Promise<Variant> {
  const server = createServer(handler);
  server.keepAliveTimeout = 600_000; // the variants take turns: a socket waits for its next round
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
  const close = async () => {
    agent.destroy();
    await new Promise((r) => server.close(r));
  };
  return { name, post, close, rounds: [] };
}

async function load(v: Variant, n: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next++ < n) await v.post();
    }),
  );
}

/** One round of a variant: process CPU µs per request. */
async function round(v: Variant, n: number): Promise<void> {
  const cpu0 = process.cpuUsage();
  await load(v, n);
  const cpu = process.cpuUsage(cpu0);
  v.rounds.push((cpu.user + cpu.system) / n);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  console.log(
    `${REQUESTS} one-reading POSTs per variant, ${IN_FLIGHT} in flight, load generator in the same process, ${ROUNDS} rounds in turn:`,
  );
  const variants = [
    await serve('node:http + JSON.parse', raw),
    await serve('express routing + JSON.parse', app(false, false)),
    await serve('express + express.json()', app(false)),
    await serve('express + helmet() + express.json()', app(true)),
    await serve('… and etag off', app(true, true, false)),
    await serve('gateway shell, express router', shell(false)),
    await serve('gateway shell, hot route', shell(true)),
  ];
  for (const v of variants) await load(v, 2000); // warm-up (JIT, sockets)
  const per = Math.ceil(REQUESTS / ROUNDS);
  for (let k = 0; k < ROUNDS; k++) for (const v of variants) await round(v, per);
  const [a, r, b, c, d, e, f] = variants.map((v) => median(v.rounds));
  for (const v of variants)
    console.log(
      `  ${v.name.padEnd(38)} ${median(v.rounds).toFixed(0).padStart(4)} µs CPU per request (rounds: ${v.rounds.map((x) => x.toFixed(0)).join(' ')})`,
    );
  console.log(
    `per request: ETag +${(c - d).toFixed(0)} µs, express routing and response +${(r - a).toFixed(0)} µs, body-parser +${(b - r).toFixed(0)} µs, helmet +${(c - b).toFixed(0)} µs; the gateway shell ${e.toFixed(0)} µs routed by express, ${f.toFixed(0)} µs as a hot route (${(e - f).toFixed(0)} µs saved)`,
  );
  for (const v of variants) await v.close();
}

run(main);
