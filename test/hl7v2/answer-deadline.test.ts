/**
 * With Redis down, an MLLP sender gets AE "resend later" within ENQUEUE_TIMEOUT_MS, not silence past its own timeout
 * (the issue measured 22 s against send-hl7's 10 s). Real gateway with device management, real Redis stopped.
 */
import { strict as assert } from 'node:assert';
import { sendMessages } from '../../src/channels/mllp/client.js';
import { readAck } from '../../src/hl7v2/ack.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { eventually, startEhr, startGateway, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { pcdMessage } from './helpers.js';

describe('hl7v2: an answer within ENQUEUE_TIMEOUT_MS when Redis is down', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  let port: number;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    port = await freePort();
    gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      MLLP_PORT: String(port),
      MLLP_ALLOWED_SENDERS: '*=127.0.0.1',
      ENQUEUE_TIMEOUT_MS: '1000',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('answers AE with ERR 207 "resend later" before the sender gives up (the sender waits 3 times the setting)', async () => {
    await redis.redis.stop();
    await eventually(() => !gw.gateway.queue!.isReady(), 10000, 'the gateway to see Redis down');
    const r = await sendMessages('127.0.0.1', port, [{ text: pcdMessage('DEADLINE-1'), charset: 'UNICODE UTF-8' }], {
      out: () => undefined,
      timeoutMs: 3000,
    });
    assert.equal(r.codes[0], 'AE', `got ${r.codes[0]}`);
    const ack = readAck(r.acks[0]);
    assert.equal(ack.errors[0]?.code, '207');
    assert.match(ack.errors[0]?.text ?? '', /resend later/);
  });
});
