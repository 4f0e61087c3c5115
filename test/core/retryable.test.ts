/**
 * Every channel reads a refusal's `retryable` flag the same way: retryable (the device's held-reading cap, 429; an
 * unexpected error; the queue down) → the sender must resend and nothing is kept; not retryable (422, 403) → refused
 * for good and kept in the one refusal store. Before, MLLP answered a 429 as "refused, kept" while MQTT withheld the
 * PUBACK, and MLLP kept a 500 for replay. Real Redis for the refusal store; the ingestor is a stand-in that refuses as
 * told, because what is under test is each channel's reading of the flag.
 */
import { strict as assert } from 'node:assert';
import IORedis, { type Redis } from 'ioredis';
import { Hl7Session } from '../../src/channels/mllp/session.js';
import { MqttChannel, PubackReason } from '../../src/channels/mqtt/channel.js';
import { mqttConfig } from '../../src/channels/mqtt/config.js';
import { MQTT_KEYS } from '../../src/channels/mqtt/config.js';
import { GatewayError, issue, outcome, toGatewayError } from '../../src/core/errors.js';
import { loadKeys } from '../../src/config/schema.js';
import { readAck } from '../../src/hl7v2/ack.js';
import { defaultHl7Config } from '../../src/hl7v2/config.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { IngestResult, Ingestor } from '../../src/pipeline/pipeline.js';
import { RefusalStore } from '../../src/pipeline/refusals.js';
import { startRedis, type TestRedis } from '../helpers/harness.js';
import { pcdMessage } from '../hl7v2/helpers.js';

const held = () =>
  new GatewayError(429, outcome([issue('throttled', "device 'X' has 10 readings held for review already")]), {
    headers: { 'Retry-After': '3600' },
  });
const invalid = () => new GatewayError(422, outcome([issue('invalid', 'unit kg is not allowed')]));

/** An ingestor that refuses with what the test sets. */
function refusing(make: () => unknown): Ingestor {
  return {
    ingest: async (): Promise<IngestResult> => {
      throw make();
    },
    translate: () => [],
  };
}

const CASES: { name: string; make: () => unknown; retryable: boolean }[] = [
  { name: "the guard's held-reading cap (429)", make: held, retryable: true },
  { name: 'an unexpected error (500)', make: () => new TypeError('boom'), retryable: true },
  {
    name: 'the queue is down (503)',
    make: () => new GatewayError(503, outcome([issue('transient', 'Redis is not reachable')])),
    retryable: true,
  },
  { name: 'invalid data (422)', make: invalid, retryable: false },
  {
    name: 'a device that may not send (403)',
    make: () => new GatewayError(403, outcome([issue('forbidden', 'device is suspended')])),
    retryable: false,
  },
];

describe('retryable: one reading of the flag in every channel', () => {
  let server: TestRedis;
  let redis: Redis;
  let refusals: RefusalStore;
  before(async () => {
    server = await startRedis();
    redis = new IORedis.default(server.url);
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });
  beforeEach(async () => {
    await redis.flushall();
    refusals = new RefusalStore(redis);
  });

  it('the flag defaults from the status, and an unexpected error is retryable', () => {
    assert.equal(held().retryable, true);
    assert.equal(invalid().retryable, false);
    assert.equal(toGatewayError(new Error('x')).retryable, true);
    assert.equal(new GatewayError(503, outcome([])).retryable, true);
    assert.equal(new GatewayError(400, outcome([])).retryable, false);
    assert.equal(new GatewayError(429, outcome([]), { retryable: false }).retryable, false);
  });

  for (const c of CASES) {
    it(`MLLP: ${c.name} → ${c.retryable ? 'AE "resend later", nothing kept' : 'AE with ERR, kept for replay'}`, async () => {
      const session = new Hl7Session({ ingestor: refusing(c.make), redis, refusals, config: defaultHl7Config({ mllpPort: 0 }) });
      const result = await session.handleText(pcdMessage(`RT-${Math.random().toString(36).slice(2, 8)}`), 'UNICODE UTF-8', {
        channel: 'mllp',
      });
      const ack = readAck(result.responses[0]);
      assert.equal(ack.code, 'AE');
      const kept = await refusals.list();
      if (c.retryable) {
        assert.equal(kept.total, 0, 'a retryable refusal is not kept: the sender resends');
        assert.equal(ack.errors[0]?.code, '207');
        assert.match(ack.errors[0]?.text ?? '', /resend later/);
      } else {
        assert.equal(kept.total, 1);
        assert.equal(kept.items[0].channel, 'mllp');
        assert.equal(kept.items[0].format, 'hl7v2');
      }
    });

    it(`MQTT: ${c.name} → ${c.retryable ? 'no PUBACK (the broker redelivers), nothing kept' : 'a PUBACK with a reason code, kept'}`, async () => {
      const config = mqttConfig(loadKeys(MQTT_KEYS, { MQTT_URL: 'mqtt://127.0.0.1:1', MQTT_TOPICS: 'devices/+/m=measurements' }).values);
      const channel = new MqttChannel(config, {
        ingestor: refusing(c.make),
        log: createLogger('silent'),
        metrics: new Metrics(),
        refusals,
      });
      const answer = await channel.handle('devices/D-1/m', Buffer.from(JSON.stringify({ deviceId: 'D-1' })), false);
      const kept = await refusals.list();
      if (c.retryable) {
        assert.equal(answer, 'retry');
        assert.equal(kept.total, 0);
      } else {
        assert.ok(typeof answer === 'number' && answer !== PubackReason.success, `PUBACK reason ${String(answer)}`);
        assert.equal(kept.total, 1);
        assert.equal(kept.items[0].channel, 'mqtt');
        assert.deepEqual(kept.items[0].mqtt, { topic: 'devices/D-1/m', deviceId: 'D-1' });
      }
    });
  }
});
