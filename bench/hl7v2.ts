/**
 * HL7v2 benchmark (not a test). Prints, in one run on this machine:
 *
 *  1. Parse + translate, one core: messages/s of the gateway's path (bytes → decode → parse through the wrapped
 *     `hl7v2` package → PCD-01/lab/ADT translation), compared in the same run with `@medplum/core`'s
 *     `Hl7Message.parse` alone on the same messages (parse only: it does not translate).
 *  2. Against a real gateway (test harness: throwaway redis-server with AOF, sandbox EHR, gateway on port 0 with the
 *     HL7v2 extension, started as a process of its own like \`npm start\`): ACKed PCD-01 messages/s over 8 concurrent MLLP connections (closed loop: each connection sends
 *     its next message when the ACK of the previous one arrives), and ACK latency p50/p99 at fixed offered rates
 *     (default 500 then 1,500 msg/s, open loop, spread over the 8 connections). An ACK (AA) means the job is in Redis.
 *     With the closed loop: Redis commands per message (INFO commandstats), the round trips an ACK waits for.
 *
 * Part 2 runs the gateway in the ingest role by default (the ACK path: translate, validate, enqueue), as a separate
 * ingest process would, and prints its CPU per message; `--all` runs the all-in-one role, where the delivery worker
 * shares the gateway's core and writes to the sandbox EHR (an in-memory FHIR engine, not a benchmark sink), which runs in
 * the bench's own process.
 *
 * Part 1 prints, in interleaved rounds of the same run: medplum's parse, the gateway's parse (fast path), the
 * gateway's parse always through the package, and the whole path (decode + split + parse + translate), each also as
 * a ratio to medplum. `--parse-only` stops after part 1; `--gateway-only` runs part 2 alone. `--whole-only` runs only
 * the whole path, for --seconds, and stops: a loop to profile (`node --cpu-prof --import tsx bench/hl7v2.ts --whole-only
 * --seconds 10`).
 *
 * Usage: npx tsx bench/hl7v2.ts [--seconds 5] [--rate 500,1500] [--connections 8] [--warmup 3] [--all] [--parse-only] [--gateway-only] [--whole-only]
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Hl7Message as MedplumHl7 } from '@medplum/core';
import { initValidation } from '../src/fhir/validate.js';
import { readAck } from '../src/hl7v2/ack.js';
import { hl7v2Adapter } from '../src/hl7v2/adapter.js';
import { decodeBytes, loadHl7Package, parseMessage, parseMessageWithPackage, splitMessages } from '../src/hl7v2/parse.js';
import { freePort } from '../src/queue/embedded-redis.js';
import { FAST_ENV, startEhr, startRedis } from '../test/helpers/harness.js';
import { pcdMessage, TestClient } from '../test/hl7v2/helpers.js';
import IORedis from 'ioredis';
import { args, opt, ROOT, spawnGateway } from './common.js';

/** Calls per command so far (INFO commandstats; the commands Lua scripts run are counted too). */
async function commandStats(r: IORedis.default): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for (const l of ((await r.info('commandstats')) as string).split('\n')) {
    const x = /cmdstat_([^:]+):calls=(\d+)/.exec(l);
    if (x) m.set(x[1], Number(x[2]));
  }
  return m;
}

const SECONDS = opt('seconds', 5);
/** Offered rates of the open loop (--rate 500,1500: one run each, in order). */
const RATES = (args.includes('--rate') ? args[args.indexOf('--rate') + 1] : '500,1500').split(',').map(Number);
if (!RATES.every((r) => r > 0)) throw new Error('--rate: messages/s offered, e.g. 500 or 500,1500');
const CONNECTIONS = opt('connections', 8);
/** Seconds of closed loop before part 2 measures (0: twenty messages per connection only). */
const WARMUP_S = opt('warmup', 3);
const ROLE = (args.includes('--all') ? 'all' : 'ingest') as 'all' | 'ingest';

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
}

function corpus(): { name: string; bytes: Buffer }[] {
  const out: { name: string; bytes: Buffer }[] = [];
  const dirs = [resolve(ROOT, 'test/hl7v2/fixtures'), resolve(ROOT, '../shared/samples/hl7v2')];
  const ctx = { deviceIdentifierSystem: 'urn:bench:device', patientIdentifierSystem: 'urn:bench:mrn' };
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.hl7'))) {
      const bytes = readFileSync(resolve(dir, f));
      const { text, charset } = decodeBytes(bytes);
      const msgs = splitMessages(text).messages;
      if (msgs.length !== 1) continue;
      try {
        hl7v2Adapter.translate({ body: parseMessage(msgs[0], { charset }), channel: 'bench', receivedAt: '' }, ctx);
        out.push({ name: f, bytes });
      } catch {
        /* only messages the gateway translates */
      }
    }
  }
  return out;
}

function loop(ms: number, fn: () => void): number {
  let n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    for (let i = 0; i < 20; i++) fn();
    n += 20;
  }
  return n / (ms / 1000);
}

async function parseBench(): Promise<void> {
  const msgs = corpus();
  const ctx = { deviceIdentifierSystem: 'urn:bench:device', patientIdentifierSystem: 'urn:bench:mrn' };
  const texts = msgs.map((m) => decodeBytes(m.bytes));
  const crTexts = texts.map((t) => t.text.replace(/\r\n|\n/g, '\r'));
  let i = 0;
  const ours = () => {
    const m = msgs[i++ % msgs.length];
    const { text, charset } = decodeBytes(m.bytes);
    hl7v2Adapter.translate({ body: parseMessage(splitMessages(text).messages[0], { charset }), channel: 'bench', receivedAt: '' }, ctx);
  };
  let j = 0;
  const medplum = () => {
    MedplumHl7.parse(crTexts[j++ % crTexts.length]);
  };
  let k = 0;
  const oursParseOnly = () => {
    const t = texts[k++ % texts.length];
    parseMessage(t.text, { charset: t.charset });
  };
  const oursWithPackage = () => {
    const t = texts[k++ % texts.length];
    parseMessageWithPackage(t.text, { charset: t.charset });
  };
  if (args.includes('--whole-only')) {
    const rate = loop(SECONDS * 1000, ours);
    console.log(`gateway: decode + split + parse + translate, alone: ${rate.toFixed(0)} msg/s (${msgs.length} messages)`);
    return;
  }
  // Warm up (JIT, dictionaries).
  loop(500, ours);
  loop(500, medplum);
  loop(300, oursParseOnly);
  loop(300, oursWithPackage);
  // Interleaved rounds, so that a machine whose load changes during the run weighs on every figure alike.
  const runs = { ours: 0, parse: 0, pkg: 0, medplum: 0 };
  const rounds = Math.max(1, Math.round(SECONDS * 4));
  const slice = (SECONDS * 1000) / rounds;
  for (let r = 0; r < rounds; r++) {
    runs.ours += loop(slice, ours) / rounds;
    runs.parse += loop(slice, oursParseOnly) / rounds;
    runs.pkg += loop(slice, oursWithPackage) / rounds;
    runs.medplum += loop(slice, medplum) / rounds;
  }
  const f = (n: number) => n.toFixed(0).padStart(8);
  const x = (n: number) => `${n.toFixed(2).padStart(8)} x medplum`;
  console.log(`\n1. parse + translate on one core (${msgs.length} messages: ${msgs.map((m) => m.name).join(', ')})`);
  console.log(`   (${rounds} interleaved rounds of ${slice.toFixed(0)} ms per figure)`);
  console.log(`   @medplum/core Hl7Message.parse only                       ${f(runs.medplum)} msg/s`);
  console.log(`   gateway: parse only (fast path)                           ${f(runs.parse)} msg/s ${x(runs.parse / runs.medplum)}`);
  console.log(`   gateway: parse only, always through the hl7v2 package     ${f(runs.pkg)} msg/s ${x(runs.pkg / runs.medplum)}`);
  console.log(`   gateway: decode + split + parse + translate               ${f(runs.ours)} msg/s ${x(runs.ours / runs.medplum)}`);
}

async function gatewayBench(): Promise<void> {
  const redis = await startRedis({ appendOnly: true });
  const ehr = await startEhr();
  const mllpPort = await freePort();
  // The gateway is a process of its own, as deployed: the load generator's event loop is not the gateway's.
  const { child } = await spawnGateway(
    {
      ...FAST_ENV,
      LOG_LEVEL: 'info',
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      QUEUE_MAX_DEPTH: '1000000',
      QUEUE_LOCK_DURATION_MS: '30000',
      MLLP_PORT: String(mllpPort),
      MLLP_HOST: '127.0.0.1',
      // With an EHR configured MLLP answers AR to every sender it does not know: the load generator is local.
      MLLP_ALLOWED_SENDERS: '*=127.0.0.1',
    },
    ROLE,
  );
  const cpuMs = () => {
    const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  };
  /** The gateway's read and write system calls so far (Linux /proc: writev and sendmsg count as writes). */
  const syscalls = () => {
    const io = readFileSync(`/proc/${child.pid}/io`, 'utf8');
    const n = (k: string) => Number(new RegExp(`${k}: (\\d+)`).exec(io)?.[1] ?? NaN);
    return { reads: n('syscr'), writes: n('syscw') };
  };
  let seq = 0;
  const next = () => {
    seq++;
    return pcdMessage(`B-${process.pid}-${seq}`, { value: 50 + (seq % 50) });
  };
  try {
    const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => TestClient.connect(mllpPort)));
    // Warm up, closed loop, for --warmup seconds: V8 optimises the gateway's path after thousands of messages, not
    // twenty, and its compiler's threads count in the gateway's CPU (the HTTP runs warm up with 40,000 readings).
    const warmEnd = Date.now() + WARMUP_S * 1000;
    await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < 20 || Date.now() < warmEnd; i++) {
          c.send(next());
          await c.next();
        }
      }),
    );
    // Closed loop throughput.
    let acked = 0;
    let refused = 0;
    const end = Date.now() + SECONDS * 1000;
    const admin = new IORedis.default(redis.url);
    const r0 = await commandStats(admin);
    const t0 = performance.now();
    const c0 = cpuMs();
    const s0 = syscalls();
    await Promise.all(
      clients.map(async (c) => {
        while (Date.now() < end) {
          c.send(next());
          const code = readAck(await c.next()).code;
          if (code === 'AA') acked++;
          else refused++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const cpuPerMessage = ((cpuMs() - c0) * 1000) / Math.max(1, acked + refused);
    const s1 = syscalls();
    const r1 = await commandStats(admin);
    admin.disconnect();
    const what =
      ROLE === 'all'
        ? "role all: the delivery worker runs in the gateway process, the sandbox EHR in the bench's"
        : 'role ingest: translate, validate, enqueue; delivery runs elsewhere';
    console.log(`\n2. real gateway over MLLP (${CONNECTIONS} connections, redis AOF on, ${what}; the gateway in its own process)`);
    console.log(
      `   closed loop: ${(acked / elapsed).toFixed(0)} ACKed (AA) PCD-01 messages/s over ${elapsed.toFixed(1)} s${refused ? ` (${refused} not AA)` : ''}; gateway CPU ${cpuPerMessage.toFixed(0)} µs per message (Linux /proc)`,
    );
    const messages = Math.max(1, acked + refused);
    console.log(
      `   gateway system calls per message: ${((s1.writes - s0.writes) / messages).toFixed(2)} writes, ${((s1.reads - s0.reads) / messages).toFixed(2)} reads (Linux /proc, all threads)`,
    );
    const rows = [...r1]
      .map(([k, v]) => [k, v - (r0.get(k) ?? 0)] as const)
      .filter(([k, d]) => d > 0 && k !== 'info')
      .sort((a, b) => b[1] - a[1]);
    console.log(
      `   Redis commands per message: ${(rows.reduce((n, [, d]) => n + d, 0) / messages).toFixed(2)} (${rows
        .slice(0, 8)
        .map(([k, d]) => `${k} ${(d / messages).toFixed(2)}`)
        .join(', ')}; inside scripts counted too)`,
    );

    // Open loop at each fixed rate.
    let latencies: number[] = [];
    let notAa = 0;
    let sentAt = new Map<string, number>();
    const readers = clients.map(async (c) => {
      for (;;) {
        let frame: string;
        try {
          frame = await c.next(5000);
        } catch {
          return;
        }
        const ack = readAck(frame);
        const t = sentAt.get(ack.controlId);
        if (t !== undefined) latencies.push(performance.now() - t);
        if (ack.code !== 'AA') notAa++;
      }
    });
    for (const rate of RATES) {
      latencies = [];
      notAa = 0;
      sentAt = new Map();
      const total = rate * SECONDS;
      const start = performance.now();
      for (let i = 0; i < total; i++) {
        const due = start + (i * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        const msg = next();
        const cid = `B-${process.pid}-${seq}`;
        sentAt.set(cid, performance.now());
        clients[i % clients.length].send(msg);
      }
      const deadline = Date.now() + 30000;
      while (latencies.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const sorted = latencies.sort((x, y) => x - y);
      console.log(
        `   open loop at ${rate} msg/s offered (${total} messages): ACK latency p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms, max ${sorted[sorted.length - 1]?.toFixed(1)} ms; ${sorted.length}/${total} answered${notAa ? `, ${notAa} not AA` : ''}`,
      );
    }
    for (const c of clients) c.close();
    await Promise.all(readers);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await ehr.stop();
    await redis.stop();
  }
}

if (!args.includes('--gateway-only')) {
  initValidation();
  // The package path is compared here; the gateway itself loads the package only when a message needs it.
  await loadHl7Package();
  await parseBench();
}
if (!args.includes('--parse-only') && !args.includes('--whole-only')) await gatewayBench();
process.exit(0);
