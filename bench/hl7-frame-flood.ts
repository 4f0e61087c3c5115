/**
 * The cost of a hostile MLLP frame (not a test). A real gateway process (sandbox EHR, a throwaway redis-server) is
 * sent a 1 MB frame whose PID-3 is 1,048,000 repetition separators (`~`), first alone, then 8 at once over 8
 * connections. Prints, for each: the time until every ACK arrived and its code, the worst /healthz latency meanwhile
 * (how long the gateway was frozen), and how much the gateway's peak resident memory (VmHWM) grew. One ordinary
 * frame is sent first, so that the rounds do not include the first message's warm-up.
 *
 * `--no-limits` raises the parser limits (HL7_MAX_*) out of reach, which is how the gateway behaved before it had them.
 *
 * Usage: npx tsx bench/hl7-frame-flood.ts [--no-limits] [--connections 8]
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { MllpDecoder, mllpFrame } from '../src/channels/mllp/server.js';
import { readAck } from '../src/hl7v2/ack.js';
import { freePort } from '../src/queue/embedded-redis.js';
import { FAST_ENV, startRedis } from '../test/helpers/harness.js';
import { args, opt, run, spawnGateway } from './common.js';

const CONNECTIONS = opt('connections', 8);
const NO_LIMITS = args.includes('--no-limits');

const frame = mllpFrame(
  Buffer.from(`MSH|^~\\&|FLOOD|WARD|IOMT|HOSP|20261123101500||ORU^R01^ORU_R01|FLOOD-1|P|2.6\rPID|||${'~'.repeat(1048000)}\r`, 'latin1'),
);

function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

function sendOne(port: number, data = frame): Promise<string> {
  return new Promise((resolve, reject) => {
    const decoder = new MllpDecoder(1 << 20);
    const s = net.connect({ host: '127.0.0.1', port }, () => s.write(data));
    s.on('data', (c: Buffer) => {
      for (const e of decoder.push(c))
        if (e.type === 'frame') {
          s.destroy();
          resolve(readAck(e.data.toString('latin1')).code);
        }
    });
    s.on('error', reject);
  });
}

async function round(port: number, url: string, pid: number, n: number): Promise<string> {
  const before = peakRssMb(pid);
  let worst = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      const t = performance.now();
      await fetch(`${url}/healthz`).then((r) => r.arrayBuffer());
      worst = Math.max(worst, performance.now() - t);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const t0 = performance.now();
  const codes = await Promise.all(Array.from({ length: n }, () => sendOne(port)));
  const elapsed = performance.now() - t0;
  polling = false;
  await poll;
  const grew = peakRssMb(pid) - before;
  return `${n} frame(s): all ACKs in ${elapsed.toFixed(0)} ms (${[...new Set(codes)].join(',')}), worst /healthz ${worst.toFixed(0)} ms, peak RSS +${grew.toFixed(0)} MB`;
}

run(async () => {
  const redis = await startRedis();
  const port = await freePort();
  const huge = '1000000000';
  const { child, url } = await spawnGateway(
    {
      ...FAST_ENV,
      LOG_LEVEL: 'info',
      REDIS_URL: redis.url,
      MLLP_PORT: String(port),
      ...(NO_LIMITS
        ? {
            HL7_MAX_SEGMENTS: huge,
            HL7_MAX_FIELDS: huge,
            HL7_MAX_REPETITIONS: huge,
            HL7_MAX_COMPONENTS: huge,
            HL7_MAX_SUBCOMPONENTS: huge,
            HL7_MAX_ELEMENTS: huge,
          }
        : {}),
    },
    'all',
  );
  try {
    const pid = child.pid as number;
    // One ordinary frame first, so that neither round pays for the first message's warm-up.
    const warm = mllpFrame(`MSH|^~\\&|FLOOD|WARD|IOMT|HOSP|20261123101500||ORU^R01^ORU_R01|WARM-1|P|2.6\rPID|||1\r`);
    await sendOne(port, warm);
    console.log(`1 MB frame of '~' in PID-3, parser limits ${NO_LIMITS ? 'out of reach (--no-limits)' : 'at their defaults'}`);
    console.log(await round(port, url, pid, 1));
    console.log(await round(port, url, pid, CONNECTIONS));
  } finally {
    child.kill('SIGKILL');
    await redis.stop();
  }
});
