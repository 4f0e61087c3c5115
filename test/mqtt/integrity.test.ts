/**
 * Integrity on the MQTT channel (the topic names the device, which speaks as a device credential): under
 * DEVICE_PATIENT_BINDING=assigned-only (the default) a reading naming another patient than the device's assignment is
 * refused (PUBACK 0x87, reported on the error topic, nothing delivered); a payload that is not valid UTF-8 is refused
 * before it is decoded (0x99); a device id in the topic outside the registry's syntax is refused and never
 * auto-registered. Real Mosquitto, real Redis, the real sandbox EHR over HTTP.
 */
import { strict as assert } from 'node:assert';
import type { Observation, OperationOutcome } from 'fhir/r4';
import mqtt, { type MqttClient } from 'mqtt';
import { eventually, startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startVendorGateway } from '../registration/wire.js';
import { mosquittoBinary, NO_MOSQUITTO, startMosquitto, type TestBroker } from './broker.js';

const reading = (minute: number, patientId?: string) => ({
  ...(patientId ? { patientId } : {}),
  timestamp: `2026-11-23T12:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 96, unit: '%' }],
});

describe('MQTT integrity: patient binding, UTF-8, device id syntax', function () {
  this.timeout(60000);
  const bin = mosquittoBinary();
  let broker: TestBroker;
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  let pub: MqttClient;
  const reports: { topic: string; body: { status: number; outcome: OperationOutcome } }[] = [];

  before(async function () {
    if (!bin) {
      console.warn(`      ${NO_MOSQUITTO}`);
      this.skip();
    }
    broker = await startMosquitto(bin!);
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startVendorGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_DEVICE_POLICY: 'accept',
      PATIENT_IDENTIFIER_SYSTEM: 'urn:test:mrn',
      MQTT_URL: broker.url,
      MQTT_CLIENT_ID: 'gw-integrity',
      MQTT_TOPICS: 'devices/+/measurements=measurements',
    });
    assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'MQ-B1', adapter: 'measurements' })).status, 201);
    assert.equal((await call(gw.url, 'POST', '/api/devices/MQ-B1/activate', ADMIN)).status, 200);
    assert.equal((await call(gw.url, 'PUT', '/api/devices/MQ-B1/assignment', ADMIN, { patientId: 'MRN-MQA' })).status, 200);
    pub = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'integrity-publisher', reconnectPeriod: 100 });
    await pub.subscribeAsync('gateway/errors/#', { qos: 1 });
    pub.on('message', (topic, payload) => reports.push({ topic, body: JSON.parse(payload.toString()) }));
    await eventually(() => gw.logs.some((l) => /mqtt.*(subscribed|connected)/i.test(l)), 20000, 'the MQTT channel to subscribe');
  });
  after(async () => {
    await pub?.endAsync().catch(() => undefined);
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
    await broker?.stop();
  });

  const reportOn = (topic: string, n = 1) =>
    eventually(
      () => {
        const r = reports.filter((x) => x.topic === `gateway/errors/${topic}`);
        return r.length >= n ? r[n - 1] : undefined;
      },
      15000,
      `report ${n} on ${topic}`,
    );
  const observationsAt = async (minute: number) =>
    (await ehr.search<Observation>('Observation', { _count: '200' })).filter(
      (o) => o.effectiveDateTime === `2026-11-23T12:${String(minute).padStart(2, '0')}:00Z`,
    );

  it("a reading naming another patient than the topic's device is assigned to: refused (403), reported; its own patient is delivered", async () => {
    await pub.publishAsync('devices/MQ-B1/measurements', JSON.stringify(reading(1, 'MRN-MQB')), { qos: 1 });
    const r = await reportOn('devices/MQ-B1/measurements');
    assert.equal(r.body.status, 403);
    assert.match(r.body.outcome.issue[0].diagnostics ?? '', /another patient than the one device 'MQ-B1' is assigned to/);
    await pub.publishAsync('devices/MQ-B1/measurements', JSON.stringify(reading(2)), { qos: 1 });
    await eventually(async () => (await observationsAt(2)).length === 1, 20000, 'the reading for the assigned patient');
    assert.equal((await observationsAt(1)).length, 0, 'nothing filed for the other patient');
  });

  it('an unknown device (topic) naming a patient: refused, it has no assignment', async () => {
    await pub.publishAsync('devices/MQ-NEW/measurements', JSON.stringify(reading(3, 'MRN-MQB')), { qos: 1 });
    const r = await reportOn('devices/MQ-NEW/measurements');
    assert.equal(r.body.status, 403);
    assert.match(r.body.outcome.issue[0].diagnostics ?? '', /device 'MQ-NEW' is not assigned to a patient/);
    assert.equal((await call(gw.url, 'GET', '/api/devices/MQ-NEW', ADMIN)).status, 404, 'not auto-registered');
  });

  it('a payload that is not valid UTF-8: refused before decoding (400, PUBACK 0x99)', async () => {
    const bytes = Buffer.from(JSON.stringify(reading(4)), 'utf8');
    const broken = Buffer.concat([bytes.subarray(0, 10), Buffer.from([0xc3, 0x28]), bytes.subarray(10)]);
    const ack = (await pub.publishAsync('devices/MQ-B1/measurements', broken, { qos: 1 })) as { reasonCode?: number } | undefined;
    const r = await reportOn('devices/MQ-B1/measurements', 2);
    assert.equal(r.body.status, 400);
    assert.match(r.body.outcome.issue[0].diagnostics ?? '', /not valid UTF-8 \(first invalid byte at offset 10\)/);
    if (ack?.reasonCode !== undefined) assert.equal(ack.reasonCode, 0x99);
  });

  it('a device id in the topic outside the registry syntax: refused (422), never auto-registered', async () => {
    await pub.publishAsync('devices/MQ!7/measurements', JSON.stringify(reading(5)), { qos: 1 });
    const r = await reportOn('devices/MQ!7/measurements');
    assert.equal(r.body.status, 422);
    assert.match(r.body.outcome.issue[0].diagnostics ?? '', /device id has a character that is not allowed at position 3 \(U\+0021/);
    assert.equal((await call(gw.url, 'GET', `/api/devices/${encodeURIComponent('MQ!7')}`, ADMIN)).status, 404);
  });
});
