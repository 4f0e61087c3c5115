/**
 * Refusals: a bad payload is a clear per-message TranslationError (OperationOutcome issues naming the template, the
 * type and the payload path), never a crash and never a silent drop; a bad mapping is reported with every error,
 * each with its file and JSON path. Fixtures: test/adapters/fixtures/payload-errors and invalid-mappings.
 */
import { strict as assert } from 'node:assert';
import path from 'node:path';
import { TranslationError } from '../../src/core/contract.js';
import { createMappingAdapter, formatIssue, MappingError, validateMapping } from '../../src/adapters/mapping/index.js';
import { ctx, fixtureCases, fixturesDir, message, readJson } from './helpers.js';

interface ErrorCase {
  description: string;
  message: { body: unknown };
  expectError: { code: string; diagnostics: string[]; expression: string }[];
}

describe('declarative mappings: payload errors', () => {
  const mapping = readJson<{ deviceMapping: unknown; fhirMapping: unknown }>(path.join(fixturesDir, 'payload-errors/_mapping.json'));
  const adapter = createMappingAdapter({ id: 'errors', description: 'errors', ...mapping, checks: 'structure' });
  for (const { name, data } of fixtureCases<ErrorCase>('payload-errors')) {
    it(`${name}: ${data.description}`, () => {
      let thrown: unknown;
      try {
        adapter.translate(message(data.message), ctx);
      } catch (e) {
        thrown = e;
      }
      assert.ok(thrown instanceof TranslationError, `expected a TranslationError, got ${String(thrown)}`);
      assert.equal(thrown.status, 422);
      const issues = thrown.outcome.issue;
      assert.equal(issues.length, data.expectError.length, JSON.stringify(issues, null, 1));
      data.expectError.forEach((exp, i) => {
        assert.equal(issues[i].severity, 'error');
        assert.equal(issues[i].code, exp.code);
        for (const part of exp.diagnostics)
          assert.ok(issues[i].diagnostics?.includes(part), `'${issues[i].diagnostics}' should contain '${part}'`);
        assert.deepEqual(issues[i].expression, [exp.expression]);
      });
    });
  }
});

interface MappingCase {
  description: string;
  deviceMapping: unknown;
  fhirMapping: unknown;
  expectIssues: string[];
}

describe('declarative mappings: mapping validation', () => {
  for (const { name, data } of fixtureCases<MappingCase>('invalid-mappings')) {
    it(`${name}: ${data.description}`, () => {
      const issues = validateMapping(data.deviceMapping, data.fhirMapping);
      assert.deepEqual(issues.map(formatIssue), data.expectIssues);
      assert.ok(issues.some((i) => i.severity === 'error'));
      assert.throws(
        () => createMappingAdapter({ id: name, description: name, deviceMapping: data.deviceMapping, fhirMapping: data.fhirMapping }),
        (e: unknown) =>
          e instanceof MappingError &&
          e.issues.length === issues.length &&
          e.message.includes(formatIssue(issues.find((i) => i.severity === 'error')!)),
      );
    });
  }

  it('names the folder in every location when given one', () => {
    const [first] = validateMapping(
      { templateType: 'CollectionContent', template: [{ templateType: 'JsonPathContent', template: { typeName: 'x' } }] },
      { templateType: 'CollectionFhir', template: [] },
      { file: 'mappings/acme' },
    );
    assert.equal(formatIssue(first), 'mappings/acme/devicecontent.json $.template[0].template.typeMatchExpression: required');
  });

  it('reports a mapping that is not JSON objects at all', () => {
    assert.deepEqual(validateMapping([], 'x').map(formatIssue), [
      'devicecontent.json $: the device mapping must be a JSON object { "templateType": "CollectionContent", "template": [ ... ] }',
      'fhirmapping.json $: the FHIR mapping must be a JSON object { "templateType": "CollectionFhir", "template": [ ... ] }',
    ]);
  });

  it('accepts the spellings iomt-fhir accepts: "…Template" suffixes, any case, "required": "true", valueType "sampledData"', () => {
    const deviceMapping = {
      templateType: 'CollectionContentTemplate',
      template: [
        {
          templateType: 'jsonpathcontenttemplate',
          template: {
            TypeName: 'hr',
            TypeMatchExpression: '$..[?(@hr)]',
            DeviceIdExpression: '$.d',
            TimestampExpression: '$.t',
            Values: [{ ValueName: 'hr', ValueExpression: '$.hr', Required: 'true' }],
          },
        },
      ],
    };
    const fhirMapping = {
      templateType: 'CollectionFhirTemplate',
      template: [
        {
          templateType: 'CodeValueFhirTemplate',
          template: {
            typeName: 'hr',
            periodInterval: 'Hourly',
            codes: [{ system: 'https://example.org', code: 'hr' }],
            value: { valueName: 'hr', valueType: 'sampledData', defaultPeriod: '60000' },
          },
        },
      ],
    };
    assert.deepEqual(validateMapping(deviceMapping, fhirMapping), []);
  });
});

describe('declarative mappings: limits and warnings', () => {
  const jp = (typeName: string, extra: Record<string, unknown> = {}) => ({
    templateType: 'JsonPathContent',
    template: {
      typeName,
      typeMatchExpression: '$..[?(@v)]',
      deviceIdExpression: '$.d',
      timestampExpression: '$.t',
      values: [{ valueName: 'v', valueExpression: '$.v', required: true }],
      ...extra,
    },
  });
  const fhir = (value: Record<string, unknown>, periodInterval: unknown) => ({
    templateType: 'CollectionFhir',
    template: [
      {
        templateType: 'CodeValueFhir',
        template: {
          typeName: 'x',
          periodInterval,
          codes: [{ system: 'https://example.org', code: 'x' }],
          value: { valueName: 'v', ...value },
        },
      },
    ],
  });

  it('refuses a SampledData window that would hold too many samples', () => {
    const issues = validateMapping(
      { templateType: 'CollectionContent', template: [jp('x')] },
      fhir({ valueType: 'SampledData', defaultPeriod: 1 }, 1440),
    ).map(formatIssue);
    assert.deepEqual(issues, [
      'fhirmapping.json $.template[0].template.value.defaultPeriod: 86400000 samples per Observation (periodInterval 1440 min every 1 ms); at most 100000: use a longer defaultPeriod or a shorter periodInterval',
    ]);
  });

  it('refuses, per message, a correlation series spanning too many samples', () => {
    const adapter = createMappingAdapter({
      id: 'corr',
      description: 'corr',
      deviceMapping: { templateType: 'CollectionContent', template: [jp('x', { correlationIdExpression: '$.c' })] },
      fhirMapping: fhir({ valueType: 'SampledData', defaultPeriod: 1 }, 'CorrelationId'),
    });
    const body = [
      { d: 'D', c: 'c1', t: '2026-11-23T00:00:00Z', v: 1 },
      { d: 'D', c: 'c1', t: '2026-11-23T01:00:00Z', v: 2 },
    ];
    assert.throws(
      () => adapter.translate(message({ body }), ctx),
      (e: unknown) =>
        e instanceof TranslationError &&
        /spans 3600001 samples of 1 ms \(more than 100000\)/.test(e.message) &&
        e.outcome.issue[0].expression?.[0] === '$[1].v',
    );
  });

  it('warns when a JSONPath type match points into the event instead of the payload (iomt-fhir wraps the payload in Body)', () => {
    const d = {
      templateType: 'CollectionContent',
      template: [{ ...jp('x'), template: { ...jp('x').template, typeMatchExpression: '$.readings[*]' } }],
    };
    const issues = validateMapping(d, fhir({ valueType: 'Quantity' }, 0));
    assert.deepEqual(issues.map(formatIssue), [
      "warning: devicecontent.json $.template[0].template.typeMatchExpression: evaluated against the event { Body, Properties, SystemProperties } as in iomt-fhir, so '$.readings[*]' selects nothing in a payload; the payload is $.Body (did you mean '$.Body.readings[*]'?)",
    ]);
    assert.doesNotThrow(() =>
      createMappingAdapter({ id: 'w', description: 'w', deviceMapping: d, fhirMapping: fhir({ valueType: 'Quantity' }, 0) }),
    );
  });

  it('a custom function failing on a message is a TranslationError naming the template, not a crash', () => {
    const d = {
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'CalculatedContent',
          template: {
            typeName: 'x',
            typeMatchExpression: '$..[?(@v)]',
            deviceIdExpression: '$.matchedToken.d',
            timestampExpression: '$.matchedToken.t',
            values: [
              {
                valueName: 'v',
                valueExpression: { value: 'divide(matchedToken.v, matchedToken.n)', language: 'JmesPath' },
                required: true,
              },
            ],
          },
        },
      ],
    };
    const adapter = createMappingAdapter({ id: 'f', description: 'f', deviceMapping: d, fhirMapping: fhir({ valueType: 'Quantity' }, 0) });
    assert.throws(
      () => adapter.translate(message({ body: { d: 'D', t: '2026-11-23T00:00:00Z', v: 5, n: 0 } }), ctx),
      (e: unknown) =>
        e instanceof TranslationError &&
        e.outcome.issue[0].code === 'invalid' &&
        /template \$\.template\[0\] \(typeName 'x'\): valueExpression of 'v' 'divide\(matchedToken\.v, matchedToken\.n\)' failed on the token at \$: divide\(\): division by zero/.test(
          e.message,
        ),
    );
  });
});

describe('declarative mappings: payload paths in errors', () => {
  const deviceMapping = {
    templateType: 'CollectionContent',
    template: [
      {
        templateType: 'IotJsonPathContent',
        template: {
          typeName: 'rr',
          typeMatchExpression: '$..[?(@Body.rr)]',
          values: [{ valueName: 'rr', valueExpression: '$.Body.rr', required: true }],
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
          typeName: 'rr',
          codes: [{ system: 'https://example.org', code: 'rr' }],
          value: { valueName: 'rr', valueType: 'Quantity', unit: '/min' },
        },
      },
    ],
  };
  const adapter = createMappingAdapter({ id: 'rr', description: 'rr', deviceMapping, fhirMapping });
  const expressionOf = (body: unknown, attributes?: Record<string, string>) => {
    try {
      adapter.translate(message({ body, attributes }), ctx);
    } catch (e) {
      return (e as TranslationError).outcome.issue[0].expression?.[0];
    }
    return undefined;
  };

  it('a plain payload: paths are relative to the payload', () => {
    assert.equal(expressionOf({ rr: 'fast' }, { deviceId: 'RR-1' }), '$.rr');
  });

  it('a payload that is an IoT hub event itself: paths are relative to that event', () => {
    assert.equal(
      expressionOf({
        Body: { rr: 'fast' },
        Properties: {},
        SystemProperties: { 'iothub-connection-device-id': 'RR-1', 'iothub-enqueuedtime': '2026-11-23T00:00:00Z' },
      }),
      '$.Body.rr',
    );
  });
});
