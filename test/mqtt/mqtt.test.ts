/**
 * The MQTT channel against a real Mosquitto broker, real Redis and the real sandbox EHR over HTTP: QoS 1 readings
 * reach the EHR correctly coded, the device id comes from the topic, refused messages are reported on the error topic
 * without a crash, a persistent session keeps messages published while the gateway is down, and the PUBACK is sent
 * only once the job is queued (Redis down: no PUBACK, the broker redelivers after Redis is back, delivered once).
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import type { Device, Observation, OperationOutcome } from 'fhir/r4';
import { EmbeddedRedis } from '../../src/queue/embedded-redis.js';
import { matchTopic } from '../../src/channels/mqtt/channel.js';
import { eventually, REPO_ROOT, startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startVendorGateway } from '../registration/wire.js';
import { mosquittoBinary, NO_MOSQUITTO, startMosquitto, type TestBroker } from './broker.js';

const MDC = 'urn:iso:std:iso:11073:10101';
const reading = (deviceId: string, minute: number, value = 97) => ({
  deviceId,
  patientId: 'MRN-MQ1',
  timestamp: `2026-11-23T11:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});
const obsOf = async (ehr: TestEhr, deviceId: string) =>
  (await ehr.search<Observation>('Observation', { code: `${MDC}|150456` })).filter(
    (o) => JSON.stringify(o).includes(deviceId) || o.device?.reference,
  );

describe('MQTT topic filters', () => {
  it('matches + and # levels and captures the + levels', () => {
    assert.deepEqual(matchTopic('devices/+/measurements', 'devices/OX-1/measurements'), ['OX-1']);
    assert.equal(matchTopic('devices/+/measurements', 'devices/OX-1/other'), undefined);
    assert.equal(matchTopic('devices/+/measurements', 'devices/OX-1/measurements/x'), undefined);
    assert.deepEqual(matchTopic('site/+/devices/+/#', 'site/A/devices/D-2/x/y'), ['A', 'D-2']);
    assert.equal(matchTopic('#', '$SYS/broker/uptime'), undefined);
  });
});

describe('MQTT channel (real Mosquitto, Redis and sandbox EHR)', function () {
  this.timeout(60000);
  const bin = mosquittoBinary();
  let broker: TestBroker;
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway | undefined;
  let pub: MqttClient;
  const reports: { topic: string; body: { topic: string; status: number; outcome: OperationOutcome } }[] = [];
  const env = () => ({
    REDIS_URL: redis.url,
    FHIR_BASE_URL: ehr.url,
    UNKNOWN_DEVICE_POLICY: 'accept',
    PLUGINS_DIR: join(REPO_ROOT, 'plugins'),
    MQTT_URL: broker.url,
    // These tests are about the channel: their devices name their patients in the payload (the binding to an assigned
    // patient on MQTT is tested in integrity.test.ts).
    DEVICE_PATIENT_BINDING: 'any',
    MQTT_CLIENT_ID: 'gw-test-1',
    MQTT_TOPICS: 'devices/+/measurements=measurements,devices/+/ble-bp=example-ble-bp',
    MQTT_RECONNECT_MIN_MS: '100',
    MQTT_RECONNECT_MAX_MS: '1000',
  });

  before(async function () {
    if (!bin) {
      console.warn(`      ${NO_MOSQUITTO}`);
      this.skip();
    }
    broker = await startMosquitto(bin!);
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startVendorGateway(env());
    pub = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'test-publisher', reconnectPeriod: 100 });
    await pub.subscribeAsync('gateway/errors/#', { qos: 1 });
    pub.on('message', (topic, payload) => reports.push({ topic, body: JSON.parse(payload.toString()) }));
    await eventually(async () => gw && (await status(gw)).connected, 10000, 'the gateway to connect to the broker');
  });
  after(async () => {
    await pub?.endAsync().catch(() => undefined);
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
    await broker?.stop();
  });

  it('delivers a QoS 1 reading to the EHR, correctly coded', async () => {
    await pub.publishAsync('devices/OX-1/measurements', JSON.stringify(reading('OX-1', 1)), { qos: 1 });
    const o = await eventually(
      async () => (await obsOf(ehr, 'OX-1')).find((x) => x.effectiveDateTime === '2026-11-23T11:01:00Z'),
      20000,
      'the SpO2 Observation',
    );
    assert.ok(o.code.coding?.some((c) => c.system === 'http://loinc.org' && c.code === '2708-6'));
    assert.ok(o.code.coding?.some((c) => c.system === MDC && c.code === '150456'));
    assert.equal(o.valueQuantity?.code, '%');
    assert.equal(o.valueQuantity?.value, 97);
  });

  it('takes the device id from the topic (plugin adapter, binary BLE payload)', async () => {
    const body = { patientId: 'MRN-MQ2', characteristic: '2A35', data: 'BnkATwBdAOoHCxcIHgBAAA==', timeZoneOffsetMinutes: 60 };
    await pub.publishAsync('devices/BLE-9/ble-bp', JSON.stringify(body), { qos: 1 });
    const dev = await eventually(
      async () => (await ehr.search<Device>('Device', { identifier: 'urn:iomt-gateway:device-id|BLE-9' }))[0],
      20000,
      'the Device from the topic',
    );
    const panel = await eventually(
      async () =>
        (await ehr.search<Observation>('Observation', { code: 'http://loinc.org|85354-9' })).find(
          (o) => o.device?.reference === `Device/${dev.id}`,
        ),
      20000,
      'the blood-pressure panel',
    );
    const comp = (loinc: string) => panel.component?.find((c) => c.code.coding?.some((k) => k.code === loinc))?.valueQuantity;
    assert.equal(comp('8480-6')?.value, 121);
    assert.equal(comp('8462-4')?.value, 79);
    assert.equal(comp('8480-6')?.code, 'mm[Hg]');
    assert.equal(panel.effectiveDateTime, '2026-11-23T08:30:00+01:00');
  });

  it('reports a malformed payload and a reading of another device on the error topic, and keeps working', async () => {
    await pub.publishAsync('devices/OX-2/measurements', '{"deviceId": "OX-2", not json', { qos: 1 });
    const bad = await eventually(
      () => reports.find((r) => r.topic === 'gateway/errors/devices/OX-2/measurements'),
      10000,
      'the error report',
    );
    assert.equal(bad.body.status, 400);
    assert.equal(bad.body.outcome.resourceType, 'OperationOutcome');
    assert.match(bad.body.outcome.issue[0].diagnostics ?? '', /not well-formed JSON/);

    await pub.publishAsync('devices/OX-3/measurements', JSON.stringify(reading('OX-4', 3)), { qos: 1 });
    const spoof = await eventually(
      () => reports.find((r) => r.topic === 'gateway/errors/devices/OX-3/measurements'),
      10000,
      'the 403 report',
    );
    assert.equal(spoof.body.status, 403);

    await pub.publishAsync(
      'devices/OX-2/measurements',
      JSON.stringify({ deviceId: 'OX-2', timestamp: '2026-11-23T11:04:00', measurements: [] }),
      { qos: 1 },
    );
    await eventually(
      () => reports.filter((r) => r.topic === 'gateway/errors/devices/OX-2/measurements').length === 2,
      10000,
      'the 422 report',
    );
    assert.equal(reports.filter((r) => r.topic === 'gateway/errors/devices/OX-2/measurements')[1].body.status, 422);

    await pub.publishAsync('devices/OX-2/measurements', JSON.stringify(reading('OX-2', 5)), { qos: 1 });
    await eventually(
      async () => (await obsOf(ehr, 'OX-2')).find((x) => x.effectiveDateTime === '2026-11-23T11:05:00Z'),
      20000,
      'a good reading after the bad ones',
    );
    assert.ok((await status(gw!)).counts.malformed >= 1);
    const kept = (await call(gw!.url, 'GET', '/api/mqtt/rejected', ADMIN)).body as { topic: string; payload?: string }[];
    assert.ok(
      kept.some((k) => k.topic === 'devices/OX-2/measurements' && k.payload?.includes('not json')),
      'the raw message is kept with the reason',
    );
  });

  it('delivers a message published while the gateway was down (persistent session), refused ones are not redelivered', async () => {
    const reportsBefore = reports.length;
    await gw!.stop();
    gw = undefined;
    await pub.publishAsync('devices/OX-5/measurements', JSON.stringify(reading('OX-5', 6)), { qos: 1 });
    gw = await startVendorGateway(env());
    await eventually(
      async () => (await obsOf(ehr, 'OX-5')).find((x) => x.effectiveDateTime === '2026-11-23T11:06:00Z'),
      20000,
      'the reading queued at the broker while the gateway was down',
    );
    // The refused messages were acknowledged (with a PUBACK reason code): the resumed session did not bring them back.
    // A marker published now is reported after anything the session would have redelivered.
    await pub.publishAsync('devices/OX-6/measurements', 'marker, not JSON', { qos: 1 });
    await eventually(() => reports.some((r) => r.topic === 'gateway/errors/devices/OX-6/measurements'), 10000, 'the marker report');
    assert.deepEqual(
      reports.slice(reportsBefore).map((r) => r.topic),
      ['gateway/errors/devices/OX-6/measurements'],
    );
  });
});

describe('MQTT PUBACK only after the job is queued (Redis stopped and restarted)', function () {
  this.timeout(60000);
  const bin = mosquittoBinary();
  let broker: TestBroker;
  let ehr: TestEhr;
  let redis: EmbeddedRedis;
  let dir: string;
  let gw: TestGateway | undefined;

  before(async function () {
    if (!bin) {
      console.warn(`      ${NO_MOSQUITTO}`);
      this.skip();
    }
    broker = await startMosquitto(bin!);
    ehr = await startEhr();
    dir = mkdtempSync(join(tmpdir(), 'gw-mqtt-redis-'));
    redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true });
    await redis.start();
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
    await broker?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('does not acknowledge while Redis is down; the broker redelivers and the reading is delivered once', async () => {
    gw = await startVendorGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_DEVICE_POLICY: 'accept',
      MQTT_URL: broker.url,
      DEVICE_PATIENT_BINDING: 'any',
      MQTT_CLIENT_ID: 'gw-test-redis',
      MQTT_TOPICS: 'devices/+/measurements=measurements',
      MQTT_RECONNECT_MIN_MS: '100',
      MQTT_RECONNECT_MAX_MS: '500',
      ENQUEUE_TIMEOUT_MS: '500',
    });
    const g = gw;
    await eventually(async () => (await status(g)).connected, 10000, 'the gateway to connect');
    const port = redis.port;
    await redis.stop();
    await eventually(() => !gw!.gateway.queue!.isReady(), 10000, 'the gateway to see Redis down');

    const pub = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'test-publisher-2' });
    try {
      await pub.publishAsync('devices/OX-R1/measurements', JSON.stringify(reading('OX-R1', 20, 95)), { qos: 1 });
      await eventually(async () => (await status(g)).counts.deferred >= 1, 20000, 'the message to be refused for now (no PUBACK)');
      const s1 = await status(g);
      assert.equal(s1.counts.accepted, 0);
      assert.equal(s1.counts.refused + s1.counts.malformed, 0, 'not reported as refused for good');

      redis = new EmbeddedRedis({ dataDir: dir, appendOnly: true, port });
      await redis.start();
      const o = await eventually(
        async () =>
          (await ehr.search<Observation>('Observation', { code: `${MDC}|150456` })).find(
            (x) => x.effectiveDateTime === '2026-11-23T11:20:00Z',
          ),
        30000,
        'the redelivered reading in the EHR',
      );
      assert.equal(o.valueQuantity?.value, 95);
      // The redelivery is accepted; the first ingest, past its bound when Redis came back, may have queued the job
      // first (the redelivery is then the same job): the Observation can be in the EHR before the redelivery counts.
      await eventually(async () => (await status(g)).counts.accepted >= 1, 20000, 'the redelivered message accepted');
      await eventually(
        async () => {
          const q = (await call(g.url, 'GET', '/api/status', ADMIN)).body.queue;
          return q && q.waiting + q.active + q.delayed === 0;
        },
        20000,
        'the queue to drain',
      );
      const all = (await ehr.search<Observation>('Observation', { code: `${MDC}|150456` })).filter(
        (x) => x.effectiveDateTime === '2026-11-23T11:20:00Z',
      );
      assert.equal(all.length, 1, 'delivered once');
    } finally {
      await pub.endAsync().catch(() => undefined);
    }
  });
});

/** The channel's state, as operators see it (GET /api/mqtt/status). */
async function status(
  g: TestGateway,
): Promise<{ connected: boolean; counts: { accepted: number; refused: number; malformed: number; deferred: number } }> {
  return (await call(g.url, 'GET', '/api/mqtt/status', ADMIN)).body;
}
