/**
 * The MLLP sender allow-list (MLLP_ALLOWED_SENDERS) through the real gateway with all its modules: a peer that may not
 * send for its sending facility (MSH-4) gets AR with an ERR segment and nothing is queued; an allowed one gets AA.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendMessages } from '../../src/channels/mllp/client.js';
import { readAck } from '../../src/hl7v2/ack.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { eventually, startEhr, startGateway, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { makeTestCerts, pcdMessage, TestClient } from './helpers.js';

describe('hl7v2 MLLP sender allow-list (real gateway, standard modules)', function () {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  let port: number;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    port = await freePort();
    // WARD-7 (the facility of pcdMessage) may send only from an address that is not ours; OTHER-WARD from loopback.
    gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      MLLP_PORT: String(port),
      MLLP_ALLOWED_SENDERS: 'WARD-7=10.99.0.0/16,OTHER-WARD=127.0.0.1',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('refuses a sender from an address not allowed for its facility with AR and ERR, queueing nothing', async () => {
    const before = await gw.gateway.queue!.bull.getJobCounts();
    const c = await TestClient.connect(port);
    try {
      c.send(pcdMessage('ALLOW-1'));
      const ack = readAck(await c.next());
      assert.equal(ack.code, 'AR');
      assert.equal(ack.controlId, 'ALLOW-1');
      assert.match(JSON.stringify(ack), /sender not allowed: address 127\.0\.0\.1 may not send for facility 'WARD-7'/);
    } finally {
      c.close();
    }
    const after = await gw.gateway.queue!.bull.getJobCounts();
    assert.equal(after.waiting + after.active + after.completed, before.waiting + before.active + before.completed);
  });

  it('accepts an allowed sender (AA) and delivers', async () => {
    const c = await TestClient.connect(port);
    try {
      c.send(pcdMessage('ALLOW-2').replace('|WARD-7|', '|OTHER-WARD|'));
      const ack = readAck(await c.next());
      assert.equal(ack.code, 'AA', JSON.stringify(ack));
    } finally {
      c.close();
    }
    await eventually(async () => (await ehr.search('Observation', {})).length === 1, 20000, 'the observation');
  });
});

describe('hl7v2 MLLP with a real EHR configured: an allow-list or mutual TLS, or closed (real gateway)', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    await ehr?.stop();
    await redis?.stop();
  });

  const start = async (env: Record<string, string>) => {
    const port = await freePort();
    const gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      MLLP_PORT: String(port),
      ...env,
    });
    return { gw, port };
  };
  const lines = (gw: TestGateway, re: RegExp) =>
    gw.logs.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => re.test(l.msg));

  it('without MLLP_ALLOWED_SENDERS or mutual TLS, says so at start-up and answers every message AR naming what to set', async () => {
    const { gw, port } = await start({});
    try {
      const said = lines(gw, /MLLP is closed/);
      assert.equal(said.length, 1, 'one clear line at start-up');
      assert.equal(said[0].level, 50, 'logged as an error');
      assert.match(said[0].msg, /Set MLLP_ALLOWED_SENDERS, or mutual TLS, or MLLP_ALLOW_ANY_SENDER=true/);
      const c = await TestClient.connect(port);
      try {
        c.send(pcdMessage('CLOSED-1'));
        const ack = readAck(await c.next());
        assert.equal(ack.code, 'AR');
        assert.match(
          JSON.stringify(ack.errors),
          /MLLP is closed: a real EHR is configured and neither MLLP_ALLOWED_SENDERS nor mutual TLS/,
        );
      } finally {
        c.close();
      }
      const counts = await gw.gateway.queue!.bull.getJobCounts();
      assert.equal(counts.waiting + counts.active + counts.completed + counts.delayed, 0, 'nothing queued');
    } finally {
      await gw.stop();
    }
  });

  it('MLLP_ALLOW_ANY_SENDER=true opens it for a trusted network, with a warning at start-up', async () => {
    const { gw, port } = await start({ MLLP_ALLOW_ANY_SENDER: 'true' });
    try {
      const said = lines(gw, /MLLP_ALLOW_ANY_SENDER=true: ANY host/);
      assert.equal(said.length, 1);
      assert.equal(said[0].level, 40, 'logged as a warning');
      const c = await TestClient.connect(port);
      c.send(pcdMessage('ANY-1'));
      assert.equal(readAck(await c.next()).code, 'AA');
      c.close();
    } finally {
      await gw.stop();
    }
  });

  it('mutual TLS opens it to holders of a certificate of MLLP_TLS_CA_FILE (send-hl7 client, real certificates)', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'mllp-mtls-'));
    if (!makeTestCerts(dir)) this.skip();
    const f = (name: string) => join(dir, name);
    const { gw, port } = await start({
      MLLP_TLS_CERT_FILE: f('server.pem'),
      MLLP_TLS_KEY_FILE: f('server.key'),
      MLLP_TLS_CA_FILE: f('ca.pem'),
      MLLP_TLS_REQUIRE_CLIENT_CERT: 'true',
    });
    try {
      assert.equal(lines(gw, /senders authenticated by mutual TLS/).length, 1);
      const pem = (name: string) => readFileSync(f(name));
      const r = await sendMessages('127.0.0.1', port, [{ text: pcdMessage('MTLS-1'), charset: 'UNICODE UTF-8' }], {
        tls: { ca: pem('ca.pem'), cert: pem('client.pem'), key: pem('client.key'), servername: 'localhost' },
        out: () => undefined,
      });
      assert.deepEqual(r.codes, ['AA']);
      const bare = await sendMessages('127.0.0.1', port, [{ text: pcdMessage('MTLS-2'), charset: 'UNICODE UTF-8' }], {
        tls: { ca: pem('ca.pem'), servername: 'localhost' },
        timeoutMs: 3000,
        out: () => undefined,
      }).catch(() => ({ codes: ['none'] }));
      assert.deepEqual(bare.codes, ['none'], 'a client without a certificate gets no ACK');
    } finally {
      await gw.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
