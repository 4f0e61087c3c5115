/**
 * The MQTT channel settles each message within ENQUEUE_TIMEOUT_MS when Redis does not answer, as HTTP and MLLP answer
 * within it (test/hl7v2/answer-deadline.test.ts): a reading is left unacknowledged (the broker keeps it and redelivers
 * it once the queue takes messages again), a refused payload is acknowledged with its reason code though it cannot be
 * kept. mqtt.js takes a connection's next QoS 1 message only once the one before it is settled, so a message that
 * waited out the Redis client held up every message behind it. Real Mosquitto, real gateway, its real Redis first
 * paused (CLIENT PAUSE: connected, not answering), or stopped.
 */
import { strict as assert } from 'node:assert';
import { Redis } from 'ioredis';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { eventually, startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startVendorGateway } from '../registration/wire.js';
import { mosquittoBinary, NO_MOSQUITTO, startMosquitto, type TestBroker } from './broker.js';

/** Whether `pred` holds within `ms` (checked every 20 ms). */
async function within(ms: number, pred: () => boolean): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return pred();
}

const reading = (deviceId: string) =>
  JSON.stringify({
    deviceId,
    patientId: 'MRN-MQ-DEADLINE',
    timestamp: new Date(Date.now() - 60_000).toISOString(),
    measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 96, unit: '%' }],
  });

interface Stack {
  broker: TestBroker;
  redis: TestRedis;
  ehr: TestEhr;
  gw: TestGateway;
  pub: MqttClient;
  /** The error-topic reports the publisher received. */
  reports: string[];
}

/** Broker, Redis, sandbox EHR, a gateway taking MQTT with ENQUEUE_TIMEOUT_MS=1000, and a publisher. */
async function startStack(bin: string, clientId: string): Promise<Stack> {
  const broker = await startMosquitto(bin);
  const redis = await startRedis();
  const ehr = await startEhr();
  const gw = await startVendorGateway({
    REDIS_URL: redis.url,
    FHIR_BASE_URL: ehr.url,
    UNKNOWN_DEVICE_POLICY: 'accept',
    DEVICE_PATIENT_BINDING: 'any',
    MQTT_URL: broker.url,
    MQTT_CLIENT_ID: clientId,
    MQTT_TOPICS: 'devices/+/measurements=measurements',
    MQTT_RECONNECT_MIN_MS: '100',
    MQTT_RECONNECT_MAX_MS: '500',
    ENQUEUE_TIMEOUT_MS: '1000',
  });
  await eventually(() => gw.logs.some((l) => l.includes('MQTT connected')), 10000, 'the gateway to connect to the broker');
  const pub = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: `${clientId}-publisher` });
  await pub.subscribeAsync('gateway/errors/#', { qos: 1 });
  const reports: string[] = [];
  pub.on('message', (topic) => reports.push(topic));
  return { broker, redis, ehr, gw, pub, reports };
}

async function stopStack(s: Stack | undefined): Promise<void> {
  await s?.pub.endAsync().catch(() => undefined);
  await s?.gw.stop();
  await s?.ehr.stop();
  await s?.redis.stop();
  await s?.broker.stop();
}

/** Whether the gateway logged, since log line `from`, that it left `deviceId`'s message unacknowledged. */
const deferred = (gw: TestGateway, deviceId: string, from: number) => () =>
  gw.logs.slice(from).some((l) => l.includes('MQTT message not acknowledged') && l.includes(deviceId));

// The broker, not the device, waits for the gateway's PUBACK. Each message is given 3 times the setting, as the
// senders of the HTTP and MLLP tests are (before the bounds: the pause's full 5 s, and 18 s with Redis stopped: keeping a refusal waited out the Redis
// client's retries, and the reading behind it with it).
describe('MQTT: each message settled within ENQUEUE_TIMEOUT_MS when Redis does not answer', function () {
  this.timeout(60000);
  const bin = mosquittoBinary();
  let s: Stack | undefined;
  beforeEach(async function () {
    if (!bin) {
      console.warn(`      ${NO_MOSQUITTO}`);
      this.skip();
    }
    s = await startStack(bin!, `gw-test-deadline-${Date.now()}`);
  });
  afterEach(async () => {
    await stopStack(s);
    s = undefined;
  });

  it('Redis connected but not answering: a refusal is settled unkept, a reading left unacknowledged, then queued', async () => {
    const { redis, gw, pub, reports } = s!;
    const admin = new Redis(redis.url);
    try {
      // Every client waits, this one too: the pause ends by itself.
      await admin.call('CLIENT', 'PAUSE', '5000', 'ALL');
    } finally {
      admin.disconnect();
    }
    // Two refusals: the second is reported only once the first is settled (its keep given up).
    await pub.publishAsync('devices/OX-D1/measurements', 'not JSON (1)', { qos: 1 });
    await pub.publishAsync('devices/OX-D1/measurements', 'not JSON (2)', { qos: 1 });
    assert.ok(await within(3000, () => reports.length >= 1), 'the first refusal reported');
    assert.ok(await within(3000, () => reports.length >= 2), 'the second refusal reported: the first was settled unkept');
    assert.ok(gw.logs.some((l) => l.includes('the refused message could not be kept')));

    const from = gw.logs.length;
    await pub.publishAsync('devices/OX-D2/measurements', reading('OX-D2'), { qos: 1 });
    assert.ok(await within(3000, deferred(gw, 'OX-D2', from)), 'left unacknowledged within 3 times the setting');
    // Redis answers again: the broker redelivers the reading and the gateway queues it.
    await eventually(
      async () => ((await call(gw.url, 'GET', '/api/mqtt/status', ADMIN)).body?.counts?.accepted ?? 0) >= 1,
      20000,
      'the redelivered reading queued',
    );
  });

  it('Redis stopped: refusals are settled unkept and a reading left unacknowledged, each within the bound', async () => {
    const { redis, gw, pub, reports } = s!;
    await redis.redis.stop();
    await eventually(() => !gw.gateway.queue!.isReady(), 10000, 'the gateway to see Redis down');
    const from = gw.logs.length;
    await pub.publishAsync('devices/OX-D3/measurements', 'not JSON (3)', { qos: 1 });
    await pub.publishAsync('devices/OX-D3/measurements', 'not JSON (4)', { qos: 1 });
    await pub.publishAsync('devices/OX-D4/measurements', reading('OX-D4'), { qos: 1 });
    assert.ok(await within(3000, () => reports.length >= 1), 'the first refusal reported');
    assert.ok(await within(3000, () => reports.length >= 2), 'the second refusal reported: the first was settled unkept');
    // Behind the second refusal's keep (bounded) comes the reading's ingest (bounded): two bounds, each given 3 times.
    assert.ok(await within(6000, deferred(gw, 'OX-D4', from)), 'the reading left unacknowledged');
  });
});
