/**
 * Epoch times: Unix seconds (a common vendor format, `$.matchedToken.ts`) are read as seconds, not as milliseconds of
 * January 1970; milliseconds stay milliseconds; a number that is no plausible time is refused with what was read.
 */
import { strict as assert } from 'node:assert';
import { parseEpoch, parseTimestamp } from '../../src/adapters/util.js';
import { createMappingAdapter } from '../../src/adapters/mapping/index.js';
import { TranslationError } from '../../src/core/contract.js';
import { ctx, message } from './helpers.js';

const deviceMapping = {
  templateType: 'CollectionContent',
  template: [
    {
      templateType: 'JsonPathContent',
      template: {
        typeName: 'hr',
        typeMatchExpression: '$..[?(@heartRate)]',
        deviceIdExpression: '$.deviceId',
        patientIdExpression: '$.patientId',
        timestampExpression: '$.matchedToken.ts',
        values: [{ valueName: 'hr', valueExpression: '$.heartRate', required: true }],
      },
    },
  ],
};
const fhirMapping = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'hr',
        periodInterval: 0,
        codes: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }],
        value: { valueName: 'hr', valueType: 'Quantity', unit: '/min', code: '/min', system: 'http://unitsofmeasure.org' },
      },
    },
  ],
};

describe('epoch times in payloads', () => {
  it('tells seconds from milliseconds by size, for numbers and digit strings', () => {
    for (const [v, iso] of [
      [1732352400, '2024-11-23T09:00:00.000Z'],
      [1732352400123, '2024-11-23T09:00:00.123Z'],
      ['1732352400', '2024-11-23T09:00:00.000Z'],
      [1732352400.5, '2024-11-23T09:00:00.500Z'],
    ] as const) {
      assert.equal(parseEpoch(v), iso, String(v));
      assert.equal(parseTimestamp(v), iso, String(v));
    }
    for (const v of [0, 12345, -1732352400, '17323524x', NaN]) assert.equal(parseEpoch(v), undefined, String(v));
  });

  it('a mapping reading $.matchedToken.ts in Unix seconds dates the Observation right, not January 1970', () => {
    const adapter = createMappingAdapter({ id: 'epoch-hr', description: 'epoch', deviceMapping, fhirMapping });
    const body = { deviceId: 'EP-1', patientId: 'MRN-EP', heartRate: 61, matchedToken: { ts: 1732352400 } };
    const [reading] = adapter.translate(message({ body }), ctx);
    assert.equal(reading.observations[0].effectiveDateTime?.slice(0, 19), '2024-11-23T09:00:00');
  });

  it('refuses a number that is no plausible time, saying what was read and what to fix', () => {
    const adapter = createMappingAdapter({ id: 'epoch-hr', description: 'epoch', deviceMapping, fhirMapping });
    const body = { deviceId: 'EP-1', patientId: 'MRN-EP', heartRate: 61, matchedToken: { ts: 4711 } };
    assert.throws(
      () => adapter.translate(message({ body }), ctx),
      (e: unknown) =>
        e instanceof TranslationError &&
        /4711/.test(e.message) &&
        /epoch time in seconds or milliseconds/.test(e.message) &&
        /timestampExpression/.test(e.message),
    );
  });
});
