import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readAck } from '../../src/hl7v2/ack.js';
import { createHl7Adapter } from '../../src/hl7v2/adapter.js';
import { main, sendFile } from '../../src/channels/mllp/client.js';
import { makeTestCerts, pcdMessage, type Stack, startStack, startTestRedis, TestClient, type TestRedisServer } from './helpers.js';

const fixturePath = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

async function post(
  url: string,
  body: string | Buffer,
  type = 'x-application/hl7-v2+er7',
): Promise<{ status: number; text: string; headers: Headers }> {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': type },
    body: typeof body === 'string' ? body : new Uint8Array(body),
  });
  return { status: r.status, text: await r.text(), headers: r.headers };
}

describe('hl7v2 over HTTP: POST /hl7v2 and /api/rejected', () => {
  let redis: TestRedisServer;
  let stack: Stack;
  before(async () => {
    redis = await startTestRedis();
    // No adapter registered at first: messages are refused and kept, until the "fix" (registering it).
    stack = await startStack(redis.url, {}, []);
  });
  after(async () => {
    await stack?.stop();
    await redis?.stop();
  });

  it('keeps refused messages, lists them, replays one once the cause is fixed, deletes another', async () => {
    const r1 = await post(`${stack.httpUrl}/hl7v2`, pcdMessage('H-1'));
    assert.equal(r1.status, 200);
    assert.equal(readAck(r1.text).code, 'AE');
    assert.equal(r1.headers.get('x-hl7-ack-code'), 'AE');
    await post(`${stack.httpUrl}/hl7v2`, pcdMessage('H-2', { value: 88 }), 'text/plain');
    const list = (await (await fetch(`${stack.httpUrl}/api/rejected`)).json()) as {
      total: number;
      items: { id: string; controlId: string; raw?: string }[];
    };
    assert.equal(list.total, 2);
    assert.deepEqual(
      list.items.map((i) => i.controlId),
      ['H-2', 'H-1'],
    );
    assert.equal(list.items[0].raw, undefined, 'the list carries no raw message');
    const one = (await (await fetch(`${stack.httpUrl}/api/rejected/${list.items[1].id}`)).json()) as { raw: string };
    assert.match(one.raw, /^MSH\|/);

    stack.registry.register(createHl7Adapter(stack.config));
    const replay = await fetch(`${stack.httpUrl}/api/rejected/${list.items[1].id}/replay`, { method: 'POST' });
    assert.equal(replay.status, 200);
    const rb = (await replay.json()) as { accepted: boolean; ackCodes: string[]; ack: string };
    assert.equal(rb.accepted, true);
    assert.deepEqual(rb.ackCodes, ['AA']);
    assert.equal(readAck(rb.ack).controlId, 'H-1');
    assert.ok((await stack.jobs()).some((j) => j.data.channel === 'http'));

    const del = await fetch(`${stack.httpUrl}/api/rejected/${list.items[0].id}`, { method: 'DELETE' });
    assert.equal(del.status, 204);
    const after = (await (await fetch(`${stack.httpUrl}/api/rejected`)).json()) as { total: number };
    assert.equal(after.total, 0);
    const missing = await fetch(`${stack.httpUrl}/api/rejected/${list.items[0].id}/replay`, { method: 'POST' });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { resourceType: string }).resourceType, 'OperationOutcome');
  });

  it('answers AA with the ACK in the body; a batch gets a batch of ACKs', async () => {
    const r = await post(`${stack.httpUrl}/hl7v2`, pcdMessage('H-3', { value: 66 }));
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^x-application\/hl7-v2\+er7/);
    assert.equal(readAck(r.text).code, 'AA');
    const batch = await post(`${stack.httpUrl}/hl7v2`, readFileSync(fixturePath('batch-adt.hl7')));
    const lines = batch.text.split('\r').filter(Boolean);
    assert.deepEqual(
      lines.map((l) => l.slice(0, 3)),
      ['FHS', 'BHS', 'MSH', 'MSA', 'MSH', 'MSA', 'BTS', 'FTS'],
    );
    assert.deepEqual(
      lines.filter((l) => l.startsWith('MSA')),
      ['MSA|AA|ADT-0004', 'MSA|AA|ADT-0005'],
    );
  });

  it('refuses a wrong content type (415) and an empty body (400) with an OperationOutcome', async () => {
    const a = await post(`${stack.httpUrl}/hl7v2`, '{}', 'application/json');
    assert.equal(a.status, 415);
    assert.equal(JSON.parse(a.text).resourceType, 'OperationOutcome');
    const b = await post(`${stack.httpUrl}/hl7v2`, '');
    assert.equal(b.status, 400);
    assert.equal(JSON.parse(b.text).resourceType, 'OperationOutcome');
  });
});

describe('hl7v2 MLLP over TLS and the send-hl7 CLI', () => {
  let redis: TestRedisServer;
  let dir: string;
  const pem = (f: string) => readFileSync(join(dir, f));
  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'hl7-tls-'));
    if (!makeTestCerts(dir)) this.skip(); // no openssl: TLS is covered where it is available
    redis = await startTestRedis();
  });
  after(async () => {
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts a client with a certificate from the configured CA and refuses one without', async () => {
    const s = await startStack(redis.url, {
      tls: { cert: pem('server.pem'), key: pem('server.key'), ca: pem('ca.pem'), requireClientCert: true },
    });
    try {
      const c = await TestClient.connect(s.port, {
        ca: pem('ca.pem'),
        cert: pem('client.pem'),
        key: pem('client.key'),
        servername: 'localhost',
      });
      c.send(pcdMessage('TLS-1'));
      assert.equal(readAck(await c.next()).code, 'AA');
      c.close();
      let refused = false;
      try {
        const bad = await TestClient.connect(s.port, { ca: pem('ca.pem'), servername: 'localhost' });
        bad.send(pcdMessage('TLS-2'));
        await bad.next(3000);
      } catch {
        refused = true;
      }
      assert.ok(refused, 'a client without a certificate gets no ACK');
      const lines: string[] = [];
      const r = await sendFile('127.0.0.1', s.port, fixturePath('adt-a01.hl7'), {
        tls: { ca: pem('ca.pem'), cert: pem('client.pem'), key: pem('client.key'), servername: 'localhost' },
        out: (l) => lines.push(l),
      });
      assert.deepEqual(r.codes, ['AA']);
    } finally {
      await s.stop();
    }
  });

  it('send-hl7 sends every message of a file and prints each ACK', async () => {
    const s = await startStack(redis.url);
    try {
      const out: string[] = [];
      const err: string[] = [];
      const code = await main(
        ['send-hl7', '--host', '127.0.0.1', '--port', String(s.port), fixturePath('batch-adt.hl7'), fixturePath('adt-a40.hl7')],
        { out: (l) => out.push(l), err: (l) => err.push(l) },
      );
      assert.equal(code, 0, err.join('\n'));
      const msa = out
        .join('\n')
        .split('\n')
        .filter((l) => l.startsWith('MSA'));
      assert.deepEqual(msa, ['MSA|AA|ADT-0004', 'MSA|AA|ADT-0005', 'MSA|AA|ADT-0002']);
      const bad = await main(['--port', String(s.port), fixturePath('oru-lab.hl7').replace('oru-lab', 'nope')], {
        out: () => undefined,
        err: () => undefined,
      });
      assert.equal(bad, 2);
      assert.equal(await main(['--host', '127.0.0.1'], { out: () => undefined, err: () => undefined }), 2);
    } finally {
      await s.stop();
    }
  });
});
