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

  it('over HTTP, a reading gets 503 "resend later" and a refused body its 422 before the client gives up', async () => {
    await eventually(() => !gw.gateway.queue!.isReady(), 10000, 'the gateway to see Redis down');
    const reading = (code: string) => ({
      deviceId: 'DEADLINE-HTTP',
      timestamp: '2026-12-05T10:00:00Z',
      measurements: [{ code, value: 95, unit: '%' }],
    });
    // The client gives up after 3 times the setting, as the MLLP sender above (before the bounds: 22 s and 7 s).
    const post = (body: unknown) =>
      fetch(`${gw.url}/ingest/measurements`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(3000),
      });
    // The failed-authentication limit and the rate limit, unanswered, let it go on; its ingest cannot queue it.
    const res = await post(reading('MDC_PULS_OXIM_SAT_O2'));
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '5');
    const oo = (await res.json()) as { resourceType: string; issue: { code: string; diagnostics: string }[] };
    assert.equal(oo.resourceType, 'OperationOutcome');
    assert.equal(oo.issue[0].code, 'transient');
    assert.match(oo.issue[0].diagnostics, /resend later/);
    // An unknown code is refused for good: answered, though Redis cannot keep it.
    const refused = await post(reading('NO_SUCH_CODE'));
    assert.equal(refused.status, 422);
    assert.equal(refused.headers.get('x-refused-id'), null, 'not kept: Redis is down');
    assert.equal(((await refused.json()) as { resourceType: string }).resourceType, 'OperationOutcome');
  });

  it('a message refused while Redis is down is answered before the sender gives up, though it cannot be kept', async () => {
    await eventually(() => !gw.gateway.queue!.isReady(), 10000, 'the gateway to see Redis down');
    // Past a parser limit (HL7_MAX_COMPONENTS): refused at the parse, after the ACK cache was asked.
    const text = `${pcdMessage('DEADLINE-2')}\rOBX|${'^'.repeat(20_000)}`;
    // Keeping the refused message needs Redis: that write is bounded as the queue's is, so the answer comes first.
    const r = await sendMessages('127.0.0.1', port, [{ text, charset: 'UNICODE UTF-8' }], { out: () => undefined, timeoutMs: 3000 });
    assert.equal(r.codes[0], 'AR', `got ${r.codes[0]}`);
    // The gateway is still up and answering.
    const again = await sendMessages('127.0.0.1', port, [{ text: pcdMessage('DEADLINE-3'), charset: 'UNICODE UTF-8' }], {
      out: () => undefined,
      timeoutMs: 3000,
    });
    assert.equal(again.codes[0], 'AE');
  });
});
