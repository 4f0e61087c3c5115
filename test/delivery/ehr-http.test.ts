/**
 * The EHR's writes over node:http (ehr-http.ts), through EhrClient as delivery calls it, against real HTTP servers:
 * what is sent, how each kind of answer is classified (the same as fhir-kit-client's answers were), the timeout, and a
 * pooled connection the EHR reset while it sat idle.
 */
import { strict as assert } from 'node:assert';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Bundle, Device } from 'fhir/r4';
import { EhrClient, EhrError } from '../../src/delivery/ehr-client.js';

const bundle: Bundle = {
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [{ resource: { resourceType: 'Device', status: 'active' } as Device, request: { method: 'POST', url: 'Device' } }],
};
const answer: Bundle = { resourceType: 'Bundle', type: 'transaction-response', entry: [{ response: { status: '201 Created' } }] };

interface Seen {
  method?: string;
  url?: string;
  headers: IncomingMessage['headers'];
  body: unknown;
}

/** A server that records each request and answers with `reply`. */
async function server(
  reply: (seen: Seen, res: import('node:http').ServerResponse) => void,
): Promise<{ url: string; seen: Seen[]; srv: Server }> {
  const seen: Seen[] = [];
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      const s = { method: req.method, url: req.url, headers: req.headers, body: text ? JSON.parse(text) : undefined };
      seen.push(s);
      reply(s, res);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/fhir`, seen, srv };
}

const close = (srv: Server | TcpServer) => new Promise<void>((r) => srv.close(() => r()));

async function failure(p: Promise<unknown>): Promise<EhrError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof EhrError, `an EhrError, not ${String(err)}`);
    return err;
  }
  assert.fail('the request succeeded');
}

describe('EHR writes over node:http', () => {
  it('posts a transaction to the base URL as FHIR JSON with the bearer token, and returns the parsed answer', async () => {
    const { url, seen, srv } = await server((_s, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(answer));
    });
    try {
      const ehr = new EhrClient({ baseUrl: `${url}/`, timeoutMs: 5000, bearerToken: 'tok' });
      assert.deepEqual(await ehr.transaction(bundle), answer);
      assert.deepEqual(await ehr.batch({ ...bundle, type: 'batch' }), answer);
      assert.equal(seen[0].method, 'POST');
      assert.equal(seen[0].url, '/fhir/');
      assert.equal(seen[0].headers['content-type'], 'application/fhir+json');
      assert.equal(seen[0].headers.accept, 'application/fhir+json');
      assert.equal(seen[0].headers.authorization, 'Bearer tok');
      assert.deepEqual(seen[0].body, bundle);
      assert.equal(seen[1].body && (seen[1].body as Bundle).type, 'batch');
      // Both over one kept-alive connection.
      assert.equal(seen[0].headers.connection, 'keep-alive');
      ehr.close();
    } finally {
      await close(srv);
    }
  });

  it('sends a single write to its URL with its own headers and asks for the resource back', async () => {
    const { url, seen, srv } = await server((s, res) => {
      res.writeHead(201, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ ...(s.body as object), id: 'o1' }));
    });
    try {
      const ehr = new EhrClient({ baseUrl: url, timeoutMs: 5000 });
      const obs = await ehr.write('create Observation', 'POST', 'Observation', { resourceType: 'Observation' } as never, {
        'if-none-exist': 'identifier=urn:x|1',
      });
      assert.equal(obs.id, 'o1');
      assert.equal(seen[0].url, '/fhir/Observation');
      assert.equal(seen[0].headers['if-none-exist'], 'identifier=urn:x|1');
      assert.equal(seen[0].headers.prefer, 'return=representation');
      ehr.close();
    } finally {
      await close(srv);
    }
  });

  it("classifies a refusal as permanent with the EHR's OperationOutcome, and a 429 as retryable after its Retry-After", async () => {
    const oo = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'bad entry' }] };
    let n = 0;
    const { url, srv } = await server((_s, res) => {
      if (n++ === 0) {
        res.writeHead(422, { 'content-type': 'application/fhir+json' });
        return void res.end(JSON.stringify(oo));
      }
      res.writeHead(429, { 'retry-after': '7' });
      res.end();
    });
    try {
      const ehr = new EhrClient({ baseUrl: url, timeoutMs: 5000 });
      const refused = await failure(ehr.transaction(bundle));
      assert.equal(refused.retryable, false);
      assert.equal(refused.ehrStatus, 422);
      assert.deepEqual(refused.outcome, oo);
      const busy = await failure(ehr.transaction(bundle));
      assert.equal(busy.retryable, true);
      assert.equal(busy.ehrStatus, 429);
      assert.equal(busy.retryAfterMs, 7000);
      ehr.close();
    } finally {
      await close(srv);
    }
  });

  it('refuses an answer that is not JSON, with its status', async () => {
    const { url, srv } = await server((_s, res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html>Bad gateway</html>');
    });
    try {
      const ehr = new EhrClient({ baseUrl: url, timeoutMs: 5000 });
      const e = await failure(ehr.transaction(bundle));
      assert.equal(e.ehrStatus, 502);
      assert.equal(e.retryable, true);
      ehr.close();
    } finally {
      await close(srv);
    }
  });

  it('follows a 307 or 308 on the same origin once, with the same method, body and credential', async () => {
    const { url, seen, srv } = await server((s, res) => {
      if (s.url === '/fhir/') {
        res.writeHead(308, { location: '/fhir/R4/' });
        return void res.end();
      }
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(answer));
    });
    try {
      const ehr = new EhrClient({ baseUrl: url, timeoutMs: 5000, bearerToken: 'tok' });
      assert.deepEqual(await ehr.transaction(bundle), answer);
      assert.deepEqual(
        seen.map((x) => [x.method, x.url, x.headers.authorization]),
        [
          ['POST', '/fhir/', 'Bearer tok'],
          ['POST', '/fhir/R4/', 'Bearer tok'],
        ],
      );
      assert.deepEqual(seen[1].body, bundle);
      ehr.close();
    } finally {
      await close(srv);
    }
  });

  it('does not follow a redirect to another origin with a write, and says where it points', async () => {
    const { url, seen, srv } = await server((_s, res) => {
      res.writeHead(308, { location: 'https://ehr.example.org/fhir/' });
      res.end();
    });
    try {
      const ehr = new EhrClient({ baseUrl: url, timeoutMs: 5000, bearerToken: 'tok' });
      const e = await failure(ehr.transaction(bundle));
      assert.equal(e.ehrStatus, 308);
      assert.equal(e.retryable, false);
      assert.match(e.message, /a redirect to https:\/\/ehr\.example\.org\/fhir\/: the destination's base URL should be where it points/);
      assert.equal(seen.length, 1);
      ehr.close();
    } finally {
      await close(srv);
    }
  });

  it('gives up on an EHR that does not answer in time, as a retryable timeout', async () => {
    const { url, srv } = await server(() => undefined);
    try {
      const ehr = new EhrClient({ baseUrl: url, timeoutMs: 200 });
      const e = await failure(ehr.transaction(bundle));
      assert.equal(e.timedOut, true);
      assert.equal(e.retryable, true);
      assert.equal(e.ehrStatus, undefined);
      ehr.close();
    } finally {
      srv.closeAllConnections();
      await close(srv);
    }
  });

  it('calls an EHR that refuses connections unreachable, retryable', async () => {
    const { url, srv } = await server(() => undefined);
    await close(srv);
    const ehr = new EhrClient({ baseUrl: url, timeoutMs: 2000 });
    const e = await failure(ehr.transaction(bundle));
    assert.equal(e.retryable, true);
    assert.match(e.message, /unreachable \(connect ECONNREFUSED/);
  });

  it('sends a write once more on a new connection when the EHR reset the kept-alive one it was sent on', async () => {
    // Answers the first request of each connection and resets the connection at its second: the idle connection an
    // EHR (or a proxy in front of it) closed just as the gateway reused it.
    const body = JSON.stringify(answer);
    const connections: Socket[] = [];
    const srv = createTcpServer((socket) => {
      connections.push(socket);
      let requests = 0;
      let buf = '';
      socket.on('data', (d) => {
        buf += d.toString();
        for (;;) {
          const head = buf.indexOf('\r\n\r\n');
          if (head < 0) return;
          const length = Number(/content-length: (\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
          if (buf.length < head + 4 + length) return;
          buf = buf.slice(head + 4 + length);
          if (++requests === 2) return void socket.resetAndDestroy();
          socket.write(
            `HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n${body}`,
          );
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const ehr = new EhrClient({ baseUrl: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/fhir`, timeoutMs: 5000 });
      assert.deepEqual(await ehr.transaction(bundle), answer);
      assert.deepEqual(await ehr.transaction(bundle), answer, 'the reset connection is replaced, not reported');
      assert.equal(connections.length, 2);
      ehr.close();
    } finally {
      for (const s of connections) s.destroy();
      await close(srv);
    }
  });
});
