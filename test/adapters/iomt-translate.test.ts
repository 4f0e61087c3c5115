/**
 * Table-driven translation tests of the declarative mapping engine: one fixture file per template type and per value
 * type (test/adapters/fixtures/template-types, value-types), each holding the mapping pair, a payload and the
 * Observations it must produce.
 */
import { strict as assert } from 'node:assert';
import path from 'node:path';
import { createMappingAdapter } from '../../src/adapters/mapping/index.js';
import { validate } from '../../src/fhir/validate.js';
import { ctx, fixtureCases, fixturesDir, message, projectTranslations, readJson } from './helpers.js';

interface Case {
  description: string;
  deviceMapping?: unknown;
  fhirMapping?: unknown;
  message: { body: unknown; attributes?: Record<string, string>; receivedAt?: string };
  expect: unknown[];
}

const valueTypeMapping = readJson<{ deviceMapping: unknown; fhirMapping: unknown }>(path.join(fixturesDir, 'value-types/_mapping.json'));

for (const folder of ['template-types', 'value-types']) {
  describe(`declarative mappings: ${folder}`, () => {
    for (const { name, data } of fixtureCases<Case>(folder)) {
      it(`${name}: ${data.description}`, () => {
        const adapter = createMappingAdapter({
          id: name,
          description: data.description,
          deviceMapping: data.deviceMapping ?? valueTypeMapping.deviceMapping,
          fhirMapping: data.fhirMapping ?? valueTypeMapping.fhirMapping,
        });
        const translations = adapter.translate(message(data.message), ctx);
        assert.deepEqual(projectTranslations(translations), data.expect);
        for (const tr of translations) {
          assert.equal(tr.devices.length, 1);
          assert.deepEqual(tr.devices[0].identifier?.[0], {
            system: ctx.deviceIdentifierSystem,
            value: tr.devices[0].identifier?.[0]?.value,
          });
          if (tr.patient) assert.equal(tr.patient.system, ctx.patientIdentifierSystem);
          for (const r of [...tr.devices, ...tr.observations]) assert.deepEqual(validate(r), [], `${r.resourceType} must validate`);
        }
        // Deterministic identifiers: the same message gives the same identifiers; no two Observations share one.
        const ids = translations.flatMap((t) => t.observations.map((o) => o.identifier?.[0]?.value));
        const again = adapter.translate(message(data.message), ctx).flatMap((t) => t.observations.map((o) => o.identifier?.[0]?.value));
        assert.deepEqual(again, ids);
        assert.equal(new Set(ids).size, ids.length);
      });
    }
  });
}

describe('declarative mappings: identity of period observations', () => {
  it('a later message for the same hour yields the same identifier (so delivery merges), another hour a new one', () => {
    const adapter = createMappingAdapter({ id: 'v', description: 'v', ...valueTypeMapping });
    const one = (time: string, v: number) =>
      adapter.translate(message({ body: { type: 'series', device: 'S-1', patient: 'P-1', time, v } }), ctx)[0].observations[0];
    const a = one('2026-11-23T10:01:00Z', 1);
    const b = one('2026-11-23T10:45:00Z', 2);
    const c = one('2026-11-23T11:01:00Z', 3);
    assert.deepEqual(a.identifier, b.identifier);
    assert.notDeepEqual(a.identifier, c.identifier);
    assert.equal(a.valueSampledData?.data, '1 E E E E E');
    assert.equal(b.valueSampledData?.data, 'E E E E 2 E');
  });

  it('a strip sent in two parts keeps one identifier (correlation id), whatever the times', () => {
    const adapter = createMappingAdapter({ id: 'v', description: 'v', ...valueTypeMapping });
    const part = (time: string) =>
      adapter.translate(message({ body: { type: 'strip', device: 'E-1', patient: 'P-1', corr: 'strip-9', time, v: 1 } }), ctx)[0]
        .observations[0];
    assert.deepEqual(part('2026-11-23T09:00:00Z').identifier, part('2026-11-23T09:00:05Z').identifier);
  });

  it('two types sharing a code at the same time do not share an identifier', () => {
    const deviceMapping = {
      templateType: 'CollectionContent',
      template: ['worn', 'removed'].map((t) => ({
        templateType: 'JsonPathContent',
        template: {
          typeName: t,
          typeMatchExpression: `$..[?(@${t})]`,
          deviceIdExpression: '$.d',
          timestampExpression: '$.at',
          values: [{ valueName: t, valueExpression: `$.${t}`, required: true }],
        },
      })),
    };
    const fhirMapping = {
      templateType: 'CollectionFhir',
      template: ['worn', 'removed'].map((t) => ({
        templateType: 'CodeValueFhir',
        template: {
          typeName: t,
          codes: [{ system: 'https://example.org', code: 'device-event' }],
          value: { valueName: t, valueType: 'CodeableConcept', text: t, codes: [{ system: 'https://example.org', code: t }] },
        },
      })),
    };
    const adapter = createMappingAdapter({ id: 'ev', description: 'ev', deviceMapping, fhirMapping });
    const [tr] = adapter.translate(message({ body: { d: 'W-1', at: '2026-11-23T08:00:00Z', worn: true, removed: true } }), ctx);
    assert.equal(tr.observations.length, 2);
    assert.notDeepEqual(tr.observations[0].identifier, tr.observations[1].identifier);
  });
});
