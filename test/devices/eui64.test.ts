/**
 * HL7 data and the device registry meet (issue: a monitor registered by its EUI-64 was not matched by its PCD-01 data):
 * one canonical EUI-64 form (the PHD IG's "00-A0-C9-…") in the registry, in HL7 translation and in FHIR; data found by
 * any registered identifier; an MDS instance suffix never under the EUI-64 system. Real gateway, Redis, sandbox EHR.
 */
import { strict as assert } from 'node:assert';
import type { Device } from 'fhir/r4';
import { canonicalEui64, EUI64_SYSTEM, MDS_INSTANCE_SYSTEM } from '../../src/fhir/identifiers.js';
import { createHl7Adapter } from '../../src/hl7v2/adapter.js';
import { defaultHl7Config } from '../../src/hl7v2/config.js';
import { parseMessage } from '../../src/hl7v2/parse.js';
import { eventually, startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { pcdMessage } from '../hl7v2/helpers.js';
import { ADMIN, call, startDmGateway } from './wire.js';

describe('EUI-64: one canonical form, and HL7 data finds the registered device', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    // Unknown devices are refused: a message that did not find the registered monitor would be an AE.
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'reject' });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('writes every spelling of an EUI-64 one way', () => {
    for (const v of ['00a0c914c8290001', '00-A0-C9-14-C8-29-00-01', '00:a0:c9:14:c8:29:00:01'])
      assert.equal(canonicalEui64(v), '00-A0-C9-14-C8-29-00-01');
    assert.equal(canonicalEui64('00A0C914C82900'), undefined);
  });

  it('a monitor registered by its EUI-64 (any spelling) receives its PCD-01 data; the EHR gets one Device', async () => {
    const reg = await call(gw.url, 'POST', '/api/devices', ADMIN, {
      id: 'MON-7',
      identifiers: { eui64: '00a0c914c8290001' },
      adapter: 'hl7v2',
      type: 'monitor',
    });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
    assert.equal(reg.body.identifiers.eui64, '00-A0-C9-14-C8-29-00-01', 'stored in the canonical form');
    assert.equal((await call(gw.url, 'POST', '/api/devices/MON-7/activate', ADMIN)).status, 200);

    const r = await fetch(`${gw.url}/hl7v2`, {
      method: 'POST',
      headers: { 'content-type': 'x-application/hl7-v2+er7', authorization: `Bearer ${ADMIN}` },
      body: pcdMessage('EUI-1'),
    });
    assert.equal(r.headers.get('x-hl7-ack-code'), 'AA', await r.text());
    const mon = await call(gw.url, 'GET', '/api/devices/MON-7', ADMIN);
    assert.equal(mon.body.telemetry.messages, 1, 'the registered device saw the message');
    assert.equal((await call(gw.url, 'GET', '/api/devices/00-A0-C9-14-C8-29-00-01', ADMIN)).status, 404, 'no second device');

    await eventually(
      async () => {
        const devices = await ehr.search<Device>('Device', { identifier: `${EUI64_SYSTEM}|00-A0-C9-14-C8-29-00-01` });
        return devices.length === 1;
      },
      20000,
      'one Device under the EUI-64',
    );
  });

  it('refuses a second device with an EUI-64 that is taken (409), in any spelling', async () => {
    const r = await call(gw.url, 'POST', '/api/devices', ADMIN, {
      id: 'MON-8',
      identifiers: { eui64: '00:A0:C9:14:C8:29:00:01' },
      type: 'monitor',
    });
    assert.equal(r.status, 409);
    assert.match(r.body.issue[0].diagnostics, /registered to device 'MON-7'/);
  });

  it('an MDS without an identity of its own gets the suffix under the gateway system, never under the EUI-64 system', () => {
    const text = pcdMessage('EUI-2').replace('|||||||00A0C914C8290001^EUI-64', '');
    const adapter = createHl7Adapter(defaultHl7Config());
    const readings = adapter.translate(
      { body: parseMessage(text), channel: 'mllp', receivedAt: '2026-11-23T10:00:00Z' },
      { deviceIdentifierSystem: 'urn:d', patientIdentifierSystem: 'urn:p' },
    );
    const ids = readings.flatMap((t) => t.devices.flatMap((d) => d.identifier ?? []));
    assert.ok(ids.length > 0);
    for (const id of ids) {
      if (id.system === EUI64_SYSTEM) assert.ok(canonicalEui64(id.value ?? ''), `${id.value} is an EUI-64`);
    }
    assert.ok(
      ids.some((id) => id.system === MDS_INSTANCE_SYSTEM && id.value === '0A-1B-2C-3D-4E-5F-60-71/mds1'),
      JSON.stringify(ids),
    );
  });
});
