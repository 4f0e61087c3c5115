/**
 * The MLLP sender allow-list (MLLP_ALLOWED_SENDERS) through the real gateway with all its modules: a peer that may not
 * send for its sending facility (MSH-4) gets AR with an ERR segment and nothing is queued; an allowed one gets AA.
 */
import { strict as assert } from 'node:assert';
import { readAck } from '../../src/hl7v2/ack.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { eventually, startEhr, startGateway, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { pcdMessage, TestClient } from './helpers.js';

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
