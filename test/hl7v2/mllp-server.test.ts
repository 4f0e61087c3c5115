import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { readAck } from '../../src/hl7v2/ack.js';
import { MllpServer, mllpFrame } from '../../src/channels/mllp/server.js';
import { Hl7Session } from '../../src/channels/mllp/session.js';
import { RefusalStore } from '../../src/pipeline/refusals.js';
import { defaultHl7Config } from '../../src/hl7v2/config.js';
import { AdapterRegistry } from '../../src/adapters/registry.js';
import { createHl7Adapter } from '../../src/hl7v2/adapter.js';
import { Pipeline } from '../../src/pipeline/pipeline.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { CTX, newQueue, pcdMessage, type Stack, startStack, startTestRedis, TestClient, type TestRedisServer } from './helpers.js';

let n = 0;
const id = (p = 'M') => `${p}-${process.pid}-${++n}`;

describe('hl7v2 MLLP server (real TCP, real Redis, real queue)', () => {
  let redis: TestRedisServer;
  let stack: Stack;

  before(async () => {
    redis = await startTestRedis();
    stack = await startStack(redis.url, { maxFrameBytes: 16384 });
  });
  after(async () => {
    await stack?.stop();
    await redis?.stop();
  });

  it('answers AA only once the resources are in the queue, MSA-2 echoing MSH-10', async () => {
    const c = await TestClient.connect(stack.port);
    const cid = id();
    c.send(pcdMessage(cid, { value: 91 }));
    const ack = readAck(await c.next());
    assert.equal(ack.code, 'AA');
    assert.equal(ack.controlId, cid);
    assert.equal(ack.messageType, 'ACK^R01^ACK');
    const jobs = await stack.jobs();
    const job = jobs.find((j) => j.data.translations[0].observations.some((o) => o.valueQuantity?.value === 91));
    assert.ok(job, 'the job is in Redis when AA arrives');
    assert.equal(job.data.channel, 'mllp');
    assert.equal(job.data.translations[0].observations[0].code.coding?.[0]?.code, '2708-6');
    c.close();
  });

  it('logs an accepted message only at debug (counted, not logged, at info); a refusal at warn', async () => {
    for (const debug of [false, true]) {
      const lines: { level: string; obj: Record<string, unknown>; msg?: string }[] = [];
      const at = (level: string) => (obj: object, msg?: string) => lines.push({ level, obj: obj as Record<string, unknown>, msg });
      const logger = {
        info: at('info'),
        warn: at('warn'),
        error: at('error'),
        debug: at('debug'),
        isLevelEnabled: (level: string) => level !== 'debug' || debug,
      };
      const session = new Hl7Session({
        ingestor: stack.pipeline,
        redis: stack.redis,
        refusals: stack.refusals,
        config: stack.config,
        logger,
      });
      const accepted = await session.handleText(pcdMessage(id('LOG')), 'UNICODE UTF-8', { channel: 'mllp' });
      assert.deepEqual(accepted.outcomes[0].ackCodes, ['AA']);
      const refused = await session.handleText(pcdMessage(id('LOG'), { pid: false }), 'UNICODE UTF-8', { channel: 'mllp' });
      assert.deepEqual(refused.outcomes[0].ackCodes, ['AE']);
      const acceptedLines = lines.filter((l) => l.msg === 'hl7: message accepted');
      if (debug) {
        assert.equal(acceptedLines.length, 1);
        assert.equal(acceptedLines[0].level, 'debug');
        assert.match(String(acceptedLines[0].obj.controlIdHash), /^[0-9a-f]{16}$/);
      } else assert.deepEqual(acceptedLines, [], 'no line for an accepted message at info');
      assert.deepEqual(
        lines.filter((l) => l.msg === 'hl7: message refused').map((l) => l.level),
        ['warn'],
      );
    }
  });

  it('answers AE with ERR (code, location, text) when the message parses but cannot be translated, and keeps it', async () => {
    const c = await TestClient.connect(stack.port);
    const cid = id();
    c.send(pcdMessage(cid, { pid: false }));
    const ack = readAck(await c.next());
    assert.equal(ack.code, 'AE');
    assert.equal(ack.controlId, cid);
    assert.ok(
      ack.errors.some((e) => e.location === 'PID-1' && e.code === '100' && /PID segment is missing/.test(e.text ?? '')),
      JSON.stringify(ack.errors),
    );
    const { items } = await stack.refusals.list();
    const kept = items.find((i) => i.hl7?.controlId === cid);
    assert.ok(kept);
    assert.equal(kept.hl7?.ackCode, 'AE');
    assert.equal(kept.channel, 'mllp');
    assert.match(kept.reason, /PID/);
    c.close();
  });

  it('answers AR for what is not acceptable: unsupported type, event or version, unreadable MSH', async () => {
    const c = await TestClient.connect(stack.port);
    const cases: [string, string, string][] = [
      ['MSH|^~\\&|A|B|||20260101||ORM^O01|X1|P|2.4\rPID|||1\r', 'X1', '200'],
      ['MSH|^~\\&|A|B|||20260101||ADT^A03|X2|P|2.4\rPID|||1\r', 'X2', '201'],
      ['MSH|^~\\&|A|B|||20260101||ORU^R01|X3|P|3.1\rPID|||1\r', 'X3', '203'],
      ['MSH|^~\\&|A|B|||20260101||ORU^R01\r', '', '101'],
      ['hello\r', '', '100'],
    ];
    for (const [msg] of cases) c.send(msg);
    for (const [, cid, code] of cases) {
      const ack = readAck(await c.next());
      assert.equal(ack.code, 'AR', cid);
      assert.equal(ack.controlId, cid);
      assert.equal(ack.errors[0]?.code, code);
    }
    c.close();
  });

  it('answers pipelined messages on one connection in order', async () => {
    const c = await TestClient.connect(stack.port);
    const ids = Array.from({ length: 25 }, () => id('P'));
    c.write(Buffer.concat(ids.map((cid, i) => mllpFrame(pcdMessage(cid, { value: 50 + i, pid: i % 5 !== 4 })))));
    for (let i = 0; i < ids.length; i++) {
      const ack = readAck(await c.next());
      assert.equal(ack.controlId, ids[i]);
      assert.equal(ack.code, i % 5 === 4 ? 'AE' : 'AA');
    }
    c.close();
  });

  it('serves many concurrent connections', async () => {
    const clients = await Promise.all(Array.from({ length: 12 }, () => TestClient.connect(stack.port)));
    await Promise.all(
      clients.map(async (c) => {
        for (let k = 0; k < 4; k++) {
          const cid = id('C');
          c.send(pcdMessage(cid, { value: 60 + k }));
          const ack = readAck(await c.next());
          assert.equal(ack.controlId, cid);
          assert.equal(ack.code, 'AA');
        }
        c.close();
      }),
    );
  });

  it('reassembles a frame sent in pieces, and skips garbage between frames', async () => {
    const c = await TestClient.connect(stack.port);
    const cid = id();
    const bytes = mllpFrame(pcdMessage(cid));
    for (let i = 0; i < bytes.length; i += 7) {
      c.write(bytes.subarray(i, i + 7));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(readAck(await c.next()).controlId, cid);
    const cid2 = id();
    c.write(Buffer.concat([Buffer.from('GET / HTTP/1.1\r\n\r\n'), mllpFrame(pcdMessage(cid2))]));
    assert.equal(readAck(await c.next()).controlId, cid2);
    c.close();
  });

  it('refuses an oversized frame with AR echoing MSH-10 and keeps the connection usable', async () => {
    const c = await TestClient.connect(stack.port);
    const cid = id('BIG');
    const big = pcdMessage(cid) + `NTE|1||${'x'.repeat(40000)}\r`;
    c.send(big);
    const ack = readAck(await c.next());
    assert.equal(ack.code, 'AR');
    assert.equal(ack.controlId, cid);
    assert.match(ack.errors[0]?.text ?? '', /exceeds the maximum/);
    const cid2 = id();
    c.send(pcdMessage(cid2));
    assert.equal(readAck(await c.next()).code, 'AA');
    c.close();
  });

  it('survives a client that disconnects in the middle of a frame', async () => {
    const c = await TestClient.connect(stack.port);
    c.write(Buffer.concat([Buffer.from([0x0b]), Buffer.from(pcdMessage(id()).slice(0, 60))]));
    c.close();
    await c.done;
    const c2 = await TestClient.connect(stack.port);
    const cid = id();
    c2.send(pcdMessage(cid));
    assert.equal(readAck(await c2.next()).code, 'AA');
    c2.close();
  });

  it('answers a resend of an accepted message (lost ACK) with the same ACK, without queueing twice', async () => {
    const cid = id('DUP');
    const msg = pcdMessage(cid, { value: 77 });
    const c = await TestClient.connect(stack.port);
    c.send(msg);
    const first = await c.next();
    c.close();
    const before = (await stack.jobs()).length;
    const c2 = await TestClient.connect(stack.port);
    c2.send(msg);
    const second = await c2.next();
    assert.equal(second, first, 'the stored ACK is sent again');
    assert.equal((await stack.jobs()).length, before);
    // Same control id, different content: not a resend; processed as a new message.
    c2.send(pcdMessage(cid, { value: 78 }));
    const third = await c2.next();
    assert.notEqual(third, first);
    assert.equal(readAck(third).code, 'AA');
    assert.equal((await stack.jobs()).length, before + 1);
    c2.close();
  });

  describe('enhanced acknowledgement mode (MSH-15/16)', () => {
    it('AL/NE: a commit ACK (CA) after the durable enqueue, no application ACK', async () => {
      const c = await TestClient.connect(stack.port);
      const cid = id('E');
      c.send(pcdMessage(cid, { accept: 'AL', app: 'NE' }));
      const ack = readAck(await c.next());
      assert.equal(ack.code, 'CA');
      assert.equal(ack.controlId, cid);
      const cid2 = id('E');
      c.send(pcdMessage(cid2, { accept: 'AL', app: 'NE' }));
      assert.equal(readAck(await c.next()).controlId, cid2, 'nothing else was sent for the first message');
      c.close();
    });

    it('AL/AL: CA then AA; NE/AL: AA only; ER/(empty) with a refused message: AE with ERR only', async () => {
      const c = await TestClient.connect(stack.port);
      const a = id('E');
      c.send(pcdMessage(a, { accept: 'AL', app: 'AL' }));
      assert.deepEqual([readAck(await c.next()).code, readAck(await c.next()).code], ['CA', 'AA']);
      const b = id('E');
      c.send(pcdMessage(b, { accept: 'NE', app: 'AL' }));
      const ackB = readAck(await c.next());
      assert.deepEqual([ackB.code, ackB.controlId], ['AA', b]);
      const d = id('E');
      c.send(pcdMessage(d, { accept: 'ER', pid: false }));
      const ackD = readAck(await c.next());
      assert.deepEqual([ackD.code, ackD.controlId], ['AE', d]);
      assert.ok(ackD.errors.length);
      const e = id('E');
      c.send(`MSH|^~\\&|A|B|||20260101||ORM^O01|${e}|P|2.4|||AL|NE\rPID|||1\r`);
      const ackE = readAck(await c.next());
      assert.deepEqual([ackE.code, ackE.controlId, ackE.errors[0]?.code], ['CR', e, '200']);
      c.close();
    });
  });

  it('closes idle connections', async () => {
    const s = await startStack(redis.url, { idleTimeoutMs: 200 });
    try {
      const c = await TestClient.connect(s.port);
      c.send(pcdMessage(id()));
      assert.equal(readAck(await c.next()).code, 'AA');
      await c.done; // the server ends the idle connection
      assert.ok(c.closed);
    } finally {
      await s.stop();
    }
  });

  it('start() and stop() are safe to call twice', async () => {
    const server = new MllpServer({ session: stack.service, config: defaultHl7Config({ mllpPort: 0 }) });
    const [a, b] = await Promise.all([server.start(), server.start()]);
    assert.equal(a.port, b.port);
    await Promise.all([server.stop(), server.stop()]);
    await server.stop();
  });
});

describe('hl7v2 when the queue is unavailable', () => {
  let redis: TestRedisServer;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => redis?.stop());

  it('answers AE with ERR 207 (original mode) or CE (enhanced), never AA, and keeps nothing', async () => {
    const deadQueue = newQueue(`redis://127.0.0.1:${await freePort()}`);
    const r = new IORedis.default(redis.url);
    const config = defaultHl7Config({ mllpPort: 0, mllpHost: '127.0.0.1' });
    const pipeline = new Pipeline(new AdapterRegistry([createHl7Adapter(config)]), deadQueue, CTX);
    const refusals = new RefusalStore(r);
    const service = new Hl7Session({ ingestor: pipeline, redis: r, refusals, config });
    const server = new MllpServer({ config, session: service });
    const { port } = await server.start();
    try {
      const c = await TestClient.connect(port);
      const a = id('Q');
      c.send(pcdMessage(a));
      const ack = readAck(await c.next());
      assert.equal(ack.code, 'AE');
      assert.equal(ack.controlId, a);
      assert.equal(ack.errors[0]?.code, '207');
      c.send(pcdMessage(id('Q'), { accept: 'AL', app: 'AL' }));
      assert.equal(readAck(await c.next()).code, 'CE');
      c.close();
      assert.equal((await refusals.list()).total, 0);
    } finally {
      await server.stop();
      await deadQueue.close();
      r.disconnect();
    }
  });
});
