/**
 * Errors located in the sender's terms (issue: ERR-2 was empty and named an internal "observation[3]"; a wrong BP unit
 * was reported twice): every validation error of an HL7 message carries ERR-2 as OBX^<n>^<field>, once; the JSON
 * channel names the payload path the sender wrote. Real MLLP over TCP, real Redis; real gateway over HTTP for JSON.
 */
import { strict as assert } from 'node:assert';
import { readAck } from '../../src/hl7v2/ack.js';
import { postJson, startEhr, startGateway, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { pcdMessage, type Stack, startStack, TestClient } from './helpers.js';

const withObx = (controlId: string, obx: string[]) => pcdMessage(controlId).replace(/OBX\|2\|.*\r/, `${obx.join('\r')}\r`);

describe('error locations', () => {
  let redis: TestRedis;
  let stack: Stack;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    stack = await startStack(redis.url);
    ehr = await startEhr();
    gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await stack?.stop();
    await redis?.stop();
  });

  const ackFor = async (text: string) => {
    const c = await TestClient.connect(stack.port);
    try {
      c.send(text);
      return readAck(await c.next());
    } finally {
      c.close();
    }
  };

  it('HL7: a wrong unit is ERR-2 OBX^2^6 (the OBX the sender wrote), once', async () => {
    const ack = await ackFor(withObx('LOC-1', ['OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|263875^MDC_DIM_X_G^MDC|||||R']));
    assert.equal(ack.code, 'AE');
    assert.equal(ack.errors.length, 1, JSON.stringify(ack.errors));
    assert.equal(ack.errors[0].location, 'OBX-2-6', 'ERR-2 = OBX^2^6');
  });

  it('HL7: a wrong unit on the diastolic of a blood-pressure panel is ERR-2 OBX^3^6, reported once', async () => {
    const ack = await ackFor(
      withObx('LOC-2', [
        'OBX|2|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.1|120|266016^MDC_DIM_MMHG^MDC|||||R',
        'OBX|3|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.1.1.2|80|263441^MDC_DIM_CM^MDC|||||R',
      ]),
    );
    assert.equal(ack.code, 'AE');
    assert.equal(ack.errors.length, 1, JSON.stringify(ack.errors));
    assert.equal(ack.errors[0].location, 'OBX-3-6', 'ERR-2 = OBX^3^6');
    assert.match(ack.errors[0].text ?? '', /DiastolicBP: unit 'cm' is not allowed; the profile requires 'mm\[Hg\]'/);
  });

  it('JSON: a wrong unit names the payload path the sender wrote', async () => {
    const reading = (unit: string) => ({
      deviceId: 'LOC-J',
      patientId: 'MRN-L',
      timestamp: '2026-11-23T10:00:00Z',
      measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit }],
    });
    const one = await postJson(`${gw.url}/ingest/measurements`, reading('kg'));
    assert.equal(one.status, 422);
    assert.deepEqual(one.body.issue[0].expression, ['measurements[0].unit']);
    const many = await postJson(`${gw.url}/ingest/measurements`, [reading('%'), reading('kg')]);
    assert.equal(many.status, 422);
    assert.deepEqual(many.body.issue[0].expression, ['[1].measurements[0].unit']);
  });
});
