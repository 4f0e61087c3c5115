/**
 * Issue 13 at the registration API and at ingest (real HTTP, real Redis): the hostile templates of the report are
 * refused at registration with their location, before any payload is evaluated; the limits on readings and
 * Observations per message refuse a message at the door, naming the limit and its setting.
 */
import { strict as assert } from 'node:assert';
import { startRedis, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { reading } from '../devices/wire.js';
import { ADMIN, call, startVendorGateway } from './wire.js';

const fhirMapping = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'spo2',
        periodInterval: 0,
        codes: [{ system: 'http://loinc.org', code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry' }],
        value: { valueName: 'spo2', valueType: 'Quantity', unit: '%', code: '%', system: 'http://unitsofmeasure.org' },
      },
    },
  ],
};
const jsonPathTemplate = (typeMatchExpression: string) => ({
  templateType: 'JsonPathContent',
  template: {
    typeName: 'spo2',
    typeMatchExpression,
    deviceIdExpression: '$.device',
    timestampExpression: '$.time',
    values: [{ valueName: 'spo2', valueExpression: '$.spo2', required: true }],
  },
});
const sample = { device: 'OX-1', time: '2026-11-23T08:00:00Z', spo2: 97, tag: 'a' };

describe('adapter registration: hostile templates and per-message limits (issue 13)', function () {
  this.timeout(60_000);
  let redis: TestRedis;
  let gw: TestGateway;
  let key: string;

  before(async () => {
    redis = await startRedis();
    gw = await startVendorGateway({ REDIS_URL: redis.url, MESSAGE_MAX_READINGS: '3', MESSAGE_MAX_OBSERVATIONS: '4' });
    assert.equal((await call(gw.url, 'POST', '/api/vendors', ADMIN, { id: 'acme' })).status, 201);
    key = (await call(gw.url, 'POST', '/api/vendors/acme/credentials', ADMIN)).body.key;
  });
  after(async () => {
    await gw?.stop();
    await redis?.stop();
  });

  const register = (id: string, deviceMapping: unknown) =>
    call(gw.url, 'POST', '/api/adapters', key, { id, deviceMapping, fhirMapping, samples: [sample] });

  it('refuses a JSONPath filter with a regex literal and an internal name, located in the body (422)', async () => {
    const r = await register('acme-rx', {
      templateType: 'CollectionContent',
      template: [jsonPathTemplate('$.Body.readings[?(/(a+)+$/.test(_$_v.tag) || @.spo2 != null)]')],
    });
    assert.equal(r.status, 422, JSON.stringify(r.body));
    const errors = r.body.issue.filter((i: { severity: string }) => i.severity === 'error');
    assert.equal(errors.length, 1);
    assert.deepEqual(errors[0].expression, ['$.deviceMapping.template[0].template.typeMatchExpression']);
    assert.match(errors[0].diagnostics, /refused: .*'_\$_'/);
    assert.equal((await call(gw.url, 'GET', '/api/adapters/acme-rx', key)).status, 404);
  });

  it('refuses a matchesRegex() pattern RE2 cannot run, located in the body (422)', async () => {
    const r = await register('acme-jmes', {
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'CalculatedContent',
          template: {
            typeName: 'spo2',
            typeMatchExpression: { value: "[?matchesRegex(to_string(tag), '(a)\\1')]", language: 'JmesPath' },
            deviceIdExpression: '$.matchedToken.device',
            timestampExpression: '$.matchedToken.time',
            values: [{ valueName: 'spo2', valueExpression: '$.matchedToken.spo2', required: true }],
          },
        },
      ],
    });
    assert.equal(r.status, 422, JSON.stringify(r.body));
    const text = JSON.stringify(r.body);
    assert.match(text, /\$\.deviceMapping\.template\[0\]\.template\.typeMatchExpression/);
    assert.match(text, /back-references are not supported/);
  });

  it('refuses 3,000 templates by the count and size limits, naming each setting (422)', async () => {
    const many = {
      templateType: 'CollectionContent',
      template: Array.from({ length: 3000 }, (_, i) => jsonPathTemplate(`$..[?(@.spo2 != null && @.k${i} != 'x')]`)),
    };
    const r = await register('acme-many', many);
    assert.equal(r.status, 422, JSON.stringify(r.body).slice(0, 500));
    const text = JSON.stringify(r.body);
    assert.match(text, /MAPPING_MAX_TEMPLATES=100/);
    assert.match(text, /MAPPING_MAX_BYTES=262144/);
  });

  it('refuses a message yielding more readings than MESSAGE_MAX_READINGS (422)', async () => {
    const ok = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, [reading('D-1'), reading('D-2'), reading('D-3')]);
    assert.notEqual(ok.status, 422, JSON.stringify(ok.body));
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, [reading('D-1'), reading('D-2'), reading('D-3'), reading('D-4')]);
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.match(JSON.stringify(r.body), /yields 4 readings; a message may yield at most 3 readings \(MESSAGE_MAX_READINGS=3\)/);
  });

  it('refuses a message yielding more Observations than MESSAGE_MAX_OBSERVATIONS (422)', async () => {
    const five = reading('D-5', {
      measurements: Array.from({ length: 5 }, () => ({ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' })),
    });
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, five);
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.match(JSON.stringify(r.body), /MESSAGE_MAX_OBSERVATIONS=4/);
  });
});
