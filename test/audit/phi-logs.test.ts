/**
 * Logs never contain PHI. Known PHI (patient identifiers, a name, a birth date, observation values) goes through the
 * HTTP channel — accepted, refused, invalid, held, assigned — and through the device API, with the log level at
 * trace; no log line may contain any of it.
 */
import { strict as assert } from 'node:assert';
import mqtt from 'mqtt';
import { eventually, startEhr, startGateway, startRedis } from '../helpers/harness.js';
import { mosquittoBinary, startMosquitto } from '../mqtt/broker.js';
import { ADMIN, call, startDmGateway } from '../devices/wire.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { sendMessages } from '../../src/channels/mllp/client.js';

const PHI = {
  mrn: 'MRN-PHI-5512093',
  mrn2: 'MRN-PHI-ASSIGN-88341',
  name: 'Zebulon Quixote-Marchetti',
  birthDate: '1937-02-29',
  value: 36.87,
};

const body = (deviceId: string, extra: Record<string, unknown> = {}) => ({
  deviceId,
  patientId: PHI.mrn,
  patientName: PHI.name,
  birthDate: PHI.birthDate,
  timestamp: '2026-11-23T08:15:00Z',
  measurements: [{ code: 'MDC_TEMP_BODY', value: PHI.value, unit: 'degC' }],
  ...extra,
});

describe('no PHI in logs', function () {
  this.timeout(60000);
  it('feeds known PHI through the HTTP channel and the device API; it appears in no log line', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startDmGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      LOG_LEVEL: 'trace',
      UNKNOWN_DEVICE_POLICY_HTTP: 'hold',
    });
    try {
      await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'PHI-DEV', adapter: 'measurements' });
      await call(gw.url, 'POST', '/api/devices/PHI-DEV/activate', ADMIN);
      await call(gw.url, 'PUT', '/api/devices/PHI-DEV/assignment', ADMIN, { patientId: PHI.mrn });
      const key = (await call(gw.url, 'POST', '/api/devices/PHI-DEV/credentials', ADMIN)).body.key;
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', key, body('PHI-DEV'))).status, 202, 'accepted');
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', key, body('OTHER-DEV'))).status, 403, 'impersonation refused');
      assert.equal(
        (await call(gw.url, 'POST', '/ingest/measurements', key, body('PHI-DEV', { timestamp: `${PHI.name}` }))).status,
        422,
        'invalid',
      );
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, body('PHI-HELD'))).status, 202, 'held');
      await call(gw.url, 'PUT', '/api/devices/PHI-DEV/assignment', ADMIN, { patientId: PHI.mrn2, locationId: 'ICU-1' });
      assert.equal(
        (
          await call(
            gw.url,
            'POST',
            '/ingest/measurements',
            key,
            body('PHI-DEV', { patientId: undefined, timestamp: '2026-11-23T08:16:00Z' }),
          )
        ).status,
        202,
        'assigned patient',
      );
      assert.equal(
        (await call(gw.url, 'POST', '/ingest/measurements', key, body('PHI-DEV', { timestamp: '2026-11-23T08:17:00Z' }))).status,
        403,
        'another patient than the assigned one (DEVICE_PATIENT_BINDING)',
      );
      await call(gw.url, 'POST', '/api/devices/PHI-HELD/activate', ADMIN);
      await call(gw.url, 'POST', '/api/devices/PHI-DEV/suspend', ADMIN);
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', key, body('PHI-DEV'))).status, 403, 'suspended');
      await call(gw.url, 'POST', '/api/devices/PHI-DEV/decommission', ADMIN);
      await eventually(() => gw.logs.filter((l) => l.includes('"msg":"delivered"')).length >= 4, 20000, 'the deliveries');
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
    assert.ok(gw.logs.length > 10, 'the gateway did log');
    const valuePattern = new RegExp(`(?<![:\\d])${String(PHI.value).replace('.', '\\.')}(?!\\d)`);
    for (const line of gw.logs) {
      for (const s of [PHI.mrn, PHI.mrn2, PHI.name, PHI.birthDate]) assert.ok(!line.includes(s), `PHI '${s}' in a log line: ${line}`);
      assert.ok(!valuePattern.test(line), `the observation value in a log line: ${line}`);
    }
  });
});

describe('no PHI in logs: the MLLP channel (HL7v2 extension)', function () {
  this.timeout(60000);
  it('feeds an ORU^R01 with known PHI over MLLP (accepted and refused); it appears in no log line', async function () {
    // The HL7v2 part is another module: used when present, skipped otherwise.
    const redis = await startRedis();
    const ehr = await startEhr();
    const port = await freePort();
    const gw = await startDmGateway(
      {
        REDIS_URL: redis.url,
        FHIR_BASE_URL: ehr.url,
        LOG_LEVEL: 'trace',
        MLLP_ENABLED: 'true',
        MLLP_PORT: String(port),
        MLLP_ALLOWED_SENDERS: '*=127.0.0.1',
        UNKNOWN_DEVICE_POLICY_MLLP: 'accept',
      },
      'all',
    );
    const oru = (controlId: string, eui: string) =>
      [
        `MSH|^~\\&|MONITOR^${eui}^EUI-64|ICU_A|||20261123081500+0000||ORU^R01^ORU_R01|${controlId}|P|2.6|||NE|AL|||||IHE PCD ORU-R01 2006^HL7^1.3.6.1.4.1.19376.1.6.1.1.1^ISO`,
        `PID|||${PHI.mrn}^^^HOSP^MR||Quixote-Marchetti^Zebulon||19370228|M`,
        `OBR|1|${controlId}^MONITOR^${eui}^EUI-64||182777000^monitoring of patient^SNOMED-CT|||20261123081500+0000`,
        `OBX|1|NM|150364^MDC_TEMP_BODY^MDC|1.0.0.1|${PHI.value}|268192^MDC_DIM_DEGC^MDC|||||R|||20261123081500+0000||||${eui}^EUI-64`,
      ].join('\r');
    let codes: string[] = [];
    try {
      const r = await sendMessages('127.0.0.1', port, [{ text: oru('PHI-MLLP-1', '0123456789ABCDEF'), charset: 'UNICODE UTF-8' }], {
        out: () => undefined,
      });
      codes = r.codes;
      // The same device suspended: refused through the guard, with the same PHI in the message.
      const devices = (await call(gw.url, 'GET', '/api/devices', ADMIN)).body as { id: string }[];
      for (const d of devices) await call(gw.url, 'POST', `/api/devices/${d.id}/suspend`, ADMIN);
      const refused = await sendMessages('127.0.0.1', port, [{ text: oru('PHI-MLLP-2', '0123456789ABCDEF'), charset: 'UNICODE UTF-8' }], {
        out: () => undefined,
      });
      codes.push(...refused.codes);
      if (codes[0] === 'AA' || codes[0] === 'CA')
        await eventually(() => gw.logs.some((l) => l.includes('"msg":"delivered"')), 20000, 'the delivery');
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
    assert.ok(['AA', 'CA'].includes(codes[0]), `the first message is accepted (${codes.join(',')})`);
    assert.ok(codes[1] && !['AA', 'CA'].includes(codes[1]), `the second is refused (${codes.join(',')})`);
    const valuePattern = new RegExp(`(?<![:\\d])${String(PHI.value).replace('.', '\\.')}(?!\\d)`);
    for (const line of gw.logs) {
      for (const s of [PHI.mrn, 'Quixote', 'Zebulon', '19370228']) assert.ok(!line.includes(s), `PHI '${s}' in a log line: ${line}`);
      assert.ok(!valuePattern.test(line), `the observation value in a log line: ${line}`);
    }
  });
});

describe('no PHI in logs: MQTT', function () {
  this.timeout(60000);
  it('feeds known PHI over MQTT (accepted, invalid, not JSON); it appears in no log line', async function () {
    const bin = mosquittoBinary();
    if (!bin) return this.skip();
    const broker = await startMosquitto(bin);
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      UNKNOWN_PATIENT_POLICY: 'create',
      LOG_LEVEL: 'trace',
      MQTT_URL: broker.url,
      MQTT_TOPICS: 'devices/+/measurements=measurements',
      // The topic's device is unknown and names its patient in the payload.
      DEVICE_PATIENT_BINDING: 'any',
    });
    const pub = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'phi-publisher' });
    try {
      await eventually(() => gw.logs.some((l) => /mqtt.*(subscribed|connected)/i.test(l)), 20000, 'the MQTT channel to subscribe');
      await pub.publishAsync('devices/MQ-PHI/measurements', JSON.stringify(body('MQ-PHI')), { qos: 1 });
      await pub.publishAsync('devices/MQ-PHI/measurements', JSON.stringify(body('MQ-PHI', { timestamp: PHI.name })), { qos: 1 });
      await pub.publishAsync('devices/MQ-PHI/measurements', `not json ${PHI.mrn} ${PHI.name}`, { qos: 1 });
      await eventually(async () => (await ehr.search('Observation', {})).length === 1, 20000, 'the accepted reading delivered');
      await eventually(
        () => gw.logs.filter((l) => /mqtt/i.test(l) && /refus|reject|invalid|error/i.test(l)).length >= 2,
        20000,
        'both refusals logged',
      );
    } finally {
      await pub.endAsync();
      await gw.stop();
      await ehr.stop();
      await redis.stop();
      await broker.stop();
    }
    const valuePattern = new RegExp(`(?<![:\\d])${String(PHI.value).replace('.', '\\.')}(?!\\d)`);
    for (const line of gw.logs) {
      for (const s of [PHI.mrn, PHI.name, PHI.birthDate]) assert.ok(!line.includes(s), `PHI '${s}' in a log line: ${line}`);
      assert.ok(!valuePattern.test(line), `the observation value in a log line: ${line}`);
    }
  });
});
