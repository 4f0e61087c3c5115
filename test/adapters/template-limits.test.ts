/**
 * Issue 13, bounded work per message: the limits on template count and size (checked before compiling, wherever a
 * mapping is compiled: here directly and through a mappings folder), each refusal naming the limit, its value and its
 * setting; and the cooperative deadline of in-thread evaluation (TEMPLATE_WORKERS=0).
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { checkMessageLimits, configureTemplateLimits, DEFAULT_TEMPLATE_LIMITS } from '../../src/adapters/limits.js';
import { createMappingAdapter, loadMappingDir, MappingError, runMappingBounded } from '../../src/adapters/mapping/index.js';
import type { TranslationError } from '../../src/core/errors.js';
import type { Reading } from '../../src/core/contract.js';
import { DRY_RUN_CONTEXT } from '../../src/adapters/mapping/validate-mapping.js';

const template = (i: number, typeMatch = `$..[?(@.spo2 != null && @.k${i} != 'x')]`) => ({
  templateType: 'JsonPathContent',
  template: {
    typeName: 'spo2',
    typeMatchExpression: typeMatch,
    deviceIdExpression: '$.device',
    timestampExpression: '$.time',
    values: [{ valueName: 'spo2', valueExpression: '$.spo2', required: true }],
  },
});
const deviceMapping = (n: number, typeMatch?: string) => ({
  templateType: 'CollectionContent',
  template: Array.from({ length: n }, (_, i) => template(i, typeMatch)),
});
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

function issuesOf(f: () => unknown): string[] {
  try {
    f();
  } catch (e) {
    if (e instanceof MappingError) return e.issues.filter((i) => i.severity === 'error').map((i) => `${i.file} ${i.path}: ${i.message}`);
    throw e;
  }
  assert.fail('expected a MappingError');
}

describe('vendor templates: limits on count and size', () => {
  afterEach(() => configureTemplateLimits(DEFAULT_TEMPLATE_LIMITS));

  it('refuses more templates in a file than MAPPING_MAX_TEMPLATES, before compiling them', () => {
    const issues = issuesOf(() => createMappingAdapter({ id: 'x', description: '', deviceMapping: deviceMapping(3000), fhirMapping }));
    // The mapping of issue 13 (3,000 templates, registered in 2.4 s and costing 86 s on a 60 KB payload): both limits.
    assert.deepEqual(issues, [
      'devicecontent.json $: the mapping is 806302 bytes (both template files as JSON); a mapping may have at most 262144 bytes (MAPPING_MAX_BYTES=262144)',
      'devicecontent.json $.template: 3000 templates; a template file may hold at most 100 templates (MAPPING_MAX_TEMPLATES=100)',
    ]);
    configureTemplateLimits({ maxTemplates: 2 });
    assert.match(
      issuesOf(() => createMappingAdapter({ id: 'x', description: '', deviceMapping: deviceMapping(3), fhirMapping }))[0],
      /MAPPING_MAX_TEMPLATES=2/,
    );
  });

  it('refuses a mapping larger than MAPPING_MAX_BYTES', () => {
    configureTemplateLimits({ maxTemplateBytes: 2048 });
    const [only, ...more] = issuesOf(() =>
      createMappingAdapter({ id: 'x', description: '', deviceMapping: deviceMapping(10), fhirMapping }),
    );
    assert.equal(more.length, 0);
    assert.match(
      only,
      /^devicecontent\.json \$: the mapping is \d+ bytes \(both template files as JSON\); a mapping may have at most 2048 bytes \(MAPPING_MAX_BYTES=2048\)$/,
    );
    assert.doesNotThrow(() => createMappingAdapter({ id: 'x', description: '', deviceMapping: deviceMapping(1), fhirMapping }));
  });

  it('refuses hostile filters when a mappings folder is loaded, located in the file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mappings-'));
    try {
      const folder = path.join(dir, 'acme-ox');
      mkdirSync(folder);
      writeFileSync(
        path.join(folder, 'devicecontent.json'),
        JSON.stringify(deviceMapping(1, '$.Body.readings[?(/(a+)+$/.test(_$_v.tag) || @.spo2 != null)]')),
      );
      writeFileSync(path.join(folder, 'fhirmapping.json'), JSON.stringify(fhirMapping));
      const r = loadMappingDir(folder);
      assert.equal(r.adapter, undefined);
      const errors = r.issues.filter((i) => i.severity === 'error');
      assert.equal(errors.length, 1);
      assert.equal(errors[0].file, 'acme-ox/devicecontent.json');
      assert.equal(errors[0].path, '$.template[0].template.typeMatchExpression');
      assert.match(errors[0].message, /refused: .*'_\$_'/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a message that yields more readings or Observations than a message may (every adapter)', () => {
    const reading = (n: number): Reading => ({ devices: [], observations: Array.from({ length: n }, () => ({}) as never) });
    configureTemplateLimits({ maxReadings: 2, maxObservations: 5 });
    assert.doesNotThrow(() => checkMessageLimits([reading(2), reading(3)]));
    assert.throws(
      () => checkMessageLimits([reading(1), reading(1), reading(1)]),
      (e: TranslationError) =>
        e.status === 422 &&
        !e.retryable &&
        /yields 3 readings; a message may yield at most 2 readings \(MESSAGE_MAX_READINGS=2\)/.test(e.message + JSON.stringify(e.outcome)),
    );
    assert.throws(
      () => checkMessageLimits([reading(3), reading(3)]),
      (e: TranslationError) => /yields 6 Observations; .*MESSAGE_MAX_OBSERVATIONS=5/.test(JSON.stringify(e.outcome)),
    );
  });

  it('in the event loop (TEMPLATE_WORKERS=0), stops between templates once the budget is spent', async () => {
    configureTemplateLimits({ workers: 0, budgetMs: 10 });
    const adapter = createMappingAdapter({ id: 'acme-slow', description: '', deviceMapping: deviceMapping(100), fhirMapping });
    const body = { readings: Array.from({ length: 3000 }, (_, i) => ({ a: i, b: { c: 'x' } })) };
    await assert.rejects(
      runMappingBounded('acme-slow', adapter.bounded, { body, channel: 'http', receivedAt: '2026-01-01T00:00:00Z' }, DRY_RUN_CONTEXT),
      (e: TranslationError) => e.status === 422 && /TEMPLATE_BUDGET_MS=10/.test(JSON.stringify(e.outcome)),
    );
  });
});
