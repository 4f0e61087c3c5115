/**
 * MLLP connection fairness and bounded work, over real TCP with real Redis and the real queue: no single peer can fill
 * the connection cap, a trickled frame or trickled bytes cannot hold a connection, known senders keep a reserved
 * share, and a hostile 1 MB frame is answered AR quickly with bounded memory and kept as a head only.
 *
 * Peers are told apart by source address: any of 127/8 reaches the loopback on Linux, so a client bound to 127.0.0.2
 * is a different peer from one on 127.0.0.1.
 */
import { strict as assert } from 'node:assert';
import net from 'node:net';
import { MllpAllowList } from '../../src/access/mllp-senders.js';
import { mllpFrame } from '../../src/channels/mllp/server.js';
import { GatewayError } from '../../src/core/errors.js';
import { readAck } from '../../src/hl7v2/ack.js';
import { Metrics } from '../../src/observability/metrics.js';
import { pcdMessage, type Stack, startStack, startTestRedis, TestClient, type TestRedisServer } from './helpers.js';

let n = 0;
const cid = (p: string) => `${p}-${process.pid}-${++n}`;

/** Opens `count` TCP connections from `localAddress` that send nothing. Resolves when all are connected. */
async function idleSockets(port: number, count: number, localAddress = '127.0.0.1'): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < count; i += 100) {
    const batch = await Promise.all(
      Array.from(
        { length: Math.min(100, count - i) },
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port, localAddress }, () => resolve(s));
            s.on('error', () => resolve(s));
          }),
      ),
    );
    out.push(...batch);
  }
  return out;
}

/** Sends `count` messages one after the other and returns the ACK codes. */
async function tenAcks(port: number, localAddress: string, count = 10): Promise<string[]> {
  const c = await TestClient.connect(port, undefined, localAddress);
  const codes: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      c.send(pcdMessage(cid('FAIR')));
      codes.push(readAck(await c.next(10000)).code);
    }
  } finally {
    c.close();
  }
  return codes;
}

/** True when the server closes the connection without answering within `ms`. */
async function closedWithoutAnswer(c: TestClient, ms = 5000): Promise<boolean> {
  await Promise.race([c.done, new Promise((r) => setTimeout(r, ms))]);
  return c.closed && c.pending() === 0;
}

describe('hl7v2 MLLP connection fairness (real TCP)', function () {
  this.timeout(60000);
  let redis: TestRedisServer;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  describe('1,000 idle sockets from one peer', () => {
    let stack: Stack;
    let sockets: net.Socket[] = [];
    const metrics = new Metrics();
    before(async () => {
      stack = await startStack(redis.url, {}, undefined, { metrics });
    });
    after(async () => {
      for (const s of sockets) s.destroy();
      await stack?.stop();
    });

    it('take MLLP_MAX_CONNECTIONS_PER_PEER connections; another peer still gets its 10 ACKs', async () => {
      sockets = await idleSockets(stack.port, 1000);
      // The refused ones are closed by the server at once.
      const deadline = Date.now() + 20000;
      while (sockets.filter((s) => !s.destroyed && !s.readableEnded).length > 20 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      assert.equal(stack.mllp.connections, stack.config.maxConnectionsPerPeer, 'the flooding peer holds its share only');
      assert.equal(metrics.get('mllp_connections_refused_total', { reason: 'per-peer' }), 1000 - stack.config.maxConnectionsPerPeer);
      assert.deepEqual(await tenAcks(stack.port, '127.0.0.2'), Array(10).fill('AA'));
    });
  });

  it('keeps MLLP_RESERVED_CONNECTIONS for known senders (MLLP_ALLOWED_SENDERS addresses) when strangers fill the rest', async () => {
    const senders = new MllpAllowList(['WARD-7=127.0.0.50']);
    const stack = await startStack(redis.url, { maxConnections: 30, reservedConnections: 10, maxConnectionsPerPeer: 5 }, undefined, {
      isKnownPeer: (a) => senders.knowsAddress(a),
    });
    const sockets: net.Socket[] = [];
    try {
      // Four strangers, five connections each: the 20 unreserved connections are in use.
      for (const peer of ['127.0.0.11', '127.0.0.12', '127.0.0.13', '127.0.0.14'])
        sockets.push(...(await idleSockets(stack.port, 5, peer)));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(stack.mllp.connections, 20);
      const stranger = await TestClient.connect(stack.port, undefined, '127.0.0.15');
      stranger.send(pcdMessage(cid('STRANGER')));
      assert.ok(await closedWithoutAnswer(stranger), 'a fifth stranger finds no unreserved connection');
      assert.deepEqual(await tenAcks(stack.port, '127.0.0.50'), Array(10).fill('AA'), 'the known sender uses a reserved one');
    } finally {
      for (const s of sockets) s.destroy();
      await stack.stop();
    }
  });

  describe('deadlines', () => {
    let stack: Stack;
    before(async () => {
      stack = await startStack(redis.url, { frameTimeoutMs: 600, idleTimeoutMs: 800 });
    });
    after(async () => {
      await stack?.stop();
    });

    it('closes a connection whose frame is still unfinished MLLP_FRAME_TIMEOUT_MS after its first byte, however it trickles', async () => {
      const c = await TestClient.connect(stack.port);
      const text = mllpFrame(pcdMessage(cid('TRICKLE')));
      c.write(text.subarray(0, 10));
      let i = 10;
      // One byte every 50 ms: the whole frame would take about 20 s. A start byte inside the frame does not reset it.
      const timer = setInterval(() => {
        if (c.closed) return;
        c.write(i === 40 ? Buffer.from([0x0b]) : text.subarray(i, i + 1));
        i++;
      }, 50);
      try {
        await Promise.race([c.done, new Promise((r) => setTimeout(r, 8000))]);
        assert.ok(c.closed, 'the server closed the connection');
        assert.ok(i < text.length - 2, 'before the frame was complete');
        assert.equal(c.pending(), 0, 'and answered nothing');
      } finally {
        clearInterval(timer);
        c.close();
      }
    });

    it('closes an idle connection after MLLP_IDLE_TIMEOUT_MS even if it trickles bytes that never start a frame', async () => {
      const c = await TestClient.connect(stack.port);
      const timer = setInterval(() => {
        if (!c.closed) c.write('\r');
      }, 100);
      try {
        await Promise.race([c.done, new Promise((r) => setTimeout(r, 8000))]);
        assert.ok(c.closed, 'the server closed the trickling idle connection');
      } finally {
        clearInterval(timer);
        c.close();
      }
    });

    it('does not cut a busy sender whose frames keep arriving split across chunks for longer than the deadline', async () => {
      const c = await TestClient.connect(stack.port);
      try {
        const acks: string[] = [];
        // 12 messages, each sent in two halves 100 ms apart and the next one started with the second half: the
        // connection is inside some frame at almost every chunk boundary for about 2.4 s (four frame deadlines).
        let pendingTail: Buffer | undefined;
        for (let k = 0; k < 12; k++) {
          const f = mllpFrame(pcdMessage(cid('BUSY')));
          const half = Math.floor(f.length / 2);
          c.write(pendingTail ? Buffer.concat([pendingTail, f.subarray(0, half)]) : f.subarray(0, half));
          pendingTail = f.subarray(half);
          await new Promise((r) => setTimeout(r, 100));
        }
        c.write(pendingTail as Buffer);
        for (let k = 0; k < 12; k++) acks.push(readAck(await c.next()).code);
        assert.deepEqual(acks, Array(12).fill('AA'));
        assert.equal(c.closed, false);
      } finally {
        c.close();
      }
    });

    it('a connection that sends now and then stays open (the idle timer restarts after each answer)', async () => {
      const c = await TestClient.connect(stack.port);
      try {
        for (let k = 0; k < 4; k++) {
          await new Promise((r) => setTimeout(r, 400));
          c.send(pcdMessage(cid('SOMETIMES')));
          assert.equal(readAck(await c.next()).code, 'AA');
        }
        assert.equal(c.closed, false);
      } finally {
        c.close();
      }
    });
  });

  describe('a 1 MB frame of repetition separators', () => {
    let stack: Stack;
    before(async () => {
      stack = await startStack(redis.url);
    });
    after(async () => {
      await stack?.stop();
    });

    const flood = (id: string) =>
      `MSH|^~\\&|FLOOD|WARD|IOMT|HOSP|20261123101500||ORU^R01^ORU_R01|${id}|P|2.6\rPID|||${'~'.repeat(1_040_000)}\r`;

    it('is answered AR with an ERR that names the limit, with bounded memory, and kept as a head that cannot be replayed', async () => {
      const id = cid('FLOOD');
      global.gc?.();
      const before = process.memoryUsage().heapUsed;
      const c = await TestClient.connect(stack.port);
      c.write(mllpFrame(Buffer.from(flood(id), 'latin1')));
      const ack = readAck(await c.next(20000));
      // Without the parser limits the package builds a million repetitions: about 700 MB of heap for this frame.
      assert.ok(process.memoryUsage().heapUsed - before < 200 * 1024 * 1024, 'memory stays bounded');
      assert.equal(ack.code, 'AR');
      assert.equal(ack.controlId, id);
      assert.ok(
        ack.errors.some((e) => e.code === '207' && e.location === 'PID-1-3' && /HL7_MAX_REPETITIONS/.test(e.text ?? '')),
        JSON.stringify(ack.errors),
      );
      c.close();

      const { items } = await stack.refusals.list({ controlId: id });
      assert.equal(items.length, 1);
      const info = items[0].payloadInfo;
      assert.equal(info?.truncated, true);
      assert.ok((info?.bytes ?? 0) > 1_000_000 && (info?.keptBytes ?? Infinity) <= 65536, JSON.stringify(info));
      await assert.rejects(stack.refusals.replay(items[0].id), (e: unknown) => e instanceof GatewayError && e.status === 422);
    });

    it('eight at once over eight connections are all answered AR', async () => {
      const clients = await Promise.all(Array.from({ length: 8 }, () => TestClient.connect(stack.port)));
      for (const [k, c] of clients.entries()) c.write(mllpFrame(Buffer.from(flood(cid(`FLOOD8-${k}`)), 'latin1')));
      const codes = await Promise.all(clients.map(async (c) => readAck(await c.next(30000)).code));
      assert.deepEqual(codes, Array(8).fill('AR'));
      for (const c of clients) c.close();
    });
  });
});
