/**
 * The public microsoft/iomt-fhir templates and payloads in ../shared/samples/iomt-fhir (skipped when absent): they
 * load unchanged and translate with iomt-fhir's semantics, and the sample templates' wrong diastolic code (LOINC
 * 8867-4, Heart rate) is refused with a clear explanation, both by mapping validation and by validate() on the
 * resources they produce.
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Observation } from 'fhir/r4';
import { checkSamples, createMappingAdapter, formatIssue, MappingError, validateMapping } from '../../src/adapters/mapping/index.js';
import { validate } from '../../src/fhir/validate.js';
import { ctx, fixturesDir, message, readJson, sharedIomtDir } from './helpers.js';

const present = existsSync(sharedIomtDir);
const shared = (f: string) => readJson(path.join(sharedIomtDir, f));
const DIASTOLIC_EXPLANATION =
  "LOINC 8867-4 is 'Heart rate', but this coding's display says 'Diastolic blood pressure', which is LOINC 8462-4 'Diastolic blood pressure'";

describe('iomt-fhir public samples (../shared/samples/iomt-fhir)', function () {
  before(function () {
    if (!present) this.skip();
  });

  for (const set of ['basic', 'sandbox'] as const) {
    describe(`sample/templates/${set}`, () => {
      const load = () => ({
        deviceMapping: shared(`sample_${set}_devicecontent.json`),
        fhirMapping: shared(`sample_${set}_fhirmapping.json`),
      });
      const bpTemplate = set === 'basic' ? '$.template[3]' : '$.template[4]';

      it('is refused by mapping validation: diastolic coded as heart rate, explained', () => {
        const { deviceMapping, fhirMapping } = load();
        const errors = validateMapping(deviceMapping, fhirMapping)
          .filter((i) => i.severity === 'error')
          .map(formatIssue);
        assert.ok(
          errors.includes(
            `fhirmapping.json ${bpTemplate}.template.components[0].codes[0]: ${DIASTOLIC_EXPLANATION}: correct the code (a wrong code is a patient-safety defect)`,
          ),
          errors.join('\n'),
        );
        assert.ok(
          errors.some((e) =>
            e.startsWith(
              `fhirmapping.json ${bpTemplate}.template.components: LOINC 85354-9 'Blood pressure panel with all children optional' (R4 profile bp) requires component DiastolicBP with LOINC 8462-4`,
            ),
          ),
        );
        assert.throws(
          () => createMappingAdapter({ id: set, description: set, ...load() }),
          (e: unknown) => e instanceof MappingError && e.message.includes(DIASTOLIC_EXPLANATION),
        );
      });

      it('parses without structural errors and translates with iomt-fhir semantics', () => {
        const adapter = createMappingAdapter({ id: set, description: set, ...load(), checks: 'structure' });
        const body =
          set === 'basic'
            ? {
                deviceid: 'dev-1',
                patientid: 'pat-1',
                measurementdatetime: '2026-11-23T10:15:30Z',
                heartrate: '78',
                steps: 0,
                systolic: 120,
                diastolic: 80,
                deviceWorn: true,
              }
            : {
                applicationId: 'app',
                messageSource: 'telemetry',
                deviceId: 'dev-9',
                schema: 'default@v1',
                enqueuedTime: '2026-11-23T10:26:55.455Z',
                telemetry: {
                  BloodPressure: { Diastolic: 70, Systolic: 110 },
                  BodyTemperature: 37.1,
                  HeartRate: 88,
                  HeartRateVariability: 17,
                  RespiratoryRate: 13,
                },
              };
        const [tr, ...more] = adapter.translate(message({ body }), ctx);
        const byCode = (code: string) =>
          [tr, ...more].flatMap((t) => t.observations).find((o) => o.code.coding?.[0]?.code === code) as Observation;
        assert.equal(tr.devices[0].identifier?.[0]?.value, set === 'basic' ? 'dev-1' : 'dev-9');
        assert.equal(tr.patient?.value, set === 'basic' ? 'pat-1' : 'dev-9'); // the sandbox templates use the device id as patient id
        const hr = byCode('8867-4');
        assert.deepEqual(hr.effectivePeriod, { start: '2026-11-23T10:00:00.000Z', end: '2026-11-23T10:59:59.999Z' });
        const sd = hr.valueSampledData;
        assert.ok(sd);
        const period = set === 'basic' ? 1000 : 30000;
        const slots = sd.data?.split(' ') ?? [];
        assert.equal(sd.period, period);
        assert.equal(slots.length, 3_600_000 / period);
        const offset = set === 'basic' ? (15 * 60 + 30) * 1000 : (26 * 60 + 55.455) * 1000;
        assert.equal(slots[Math.floor(offset / period)], set === 'basic' ? '78' : '88');
        assert.equal(slots.filter((s) => s !== 'E').length, 1);
        assert.equal(tr.writeMode, 'merge');
        const bp = byCode('85354-9');
        assert.deepEqual(
          bp.component?.map((c) => c.code.coding?.map((k) => k.code)),
          [['8867-4'], ['8480-6', '271649006']],
        );
        if (set === 'basic') {
          const worn = more.flatMap((t) => t.observations).find((o) => o.code.coding?.[0]?.code === 'deviceEvent');
          assert.deepEqual(worn?.valueCodeableConcept?.coding?.[0]?.code, 'deviceWorn');
          assert.equal(worn?.effectiveDateTime, '2026-11-23T10:15:30Z');
          assert.equal(more[0].writeMode, 'create');
          assert.equal(byCode('55423-8').valueSampledData?.data?.split(' ')[930], '0', 'a step count of 0 is a value, not an absent one');
        }
        // validate() refuses the panel the template produces, and the explanation names the wrong code.
        const diagnostics = validate(bp).map((i) => i.diagnostics ?? '');
        assert.ok(diagnostics.includes('profile bp requires component DiastolicBP (LOINC 8462-4)'), diagnostics.join('\n'));
        const [sample] = checkSamples(adapter.mapping, [{ file: 'payload.json', body }]);
        const explained = sample.issues.map(formatIssue);
        assert.ok(
          explained.some((l) =>
            l.includes(
              `Observation from fhirmapping.json ${bpTemplate} (typeName 'bloodpressure'): profile bp requires component DiastolicBP (LOINC 8462-4): a component is coded LOINC 8867-4 (Heart rate), displayed as 'Diastolic blood pressure'; diastolic blood pressure is LOINC 8462-4`,
            ),
          ),
          explained.join('\n'),
        );
      });
    });
  }

  it('the mapping-generator payloads translate with a mapping written for them, correctly coded and valid', () => {
    const mapping = readJson<{ deviceMapping: unknown; fhirMapping: unknown }>(path.join(fixturesDir, 'mappinggen-mapping.json'));
    const adapter = createMappingAdapter({ id: 'mappinggen', description: 'mapping generator payloads', ...mapping });
    const expected: Record<string, string> = {
      'mappinggen_deviceData_BloodPressure.json': '85354-9 [8480-6=119 mm[Hg], 8462-4=79 mm[Hg]] @2022-07-01T12:01:00Z',
      'mappinggen_deviceData_HeartRate.json': '8867-4 66 /min @2022-07-01T12:00:00Z',
      'mappinggen_deviceData_OxygenSaturation.json': '2708-6 99 % @2022-07-01T12:02:00Z',
    };
    for (const [file, line] of Object.entries(expected)) {
      const trs = adapter.translate(message({ body: shared(file) }), ctx);
      assert.equal(trs.length, 1);
      const [o] = trs[0].observations;
      const v = o.valueQuantity
        ? `${o.valueQuantity.value} ${o.valueQuantity.code}`
        : `[${o.component?.map((c) => `${c.code.coding?.[0]?.code}=${c.valueQuantity?.value} ${c.valueQuantity?.code}`).join(', ')}]`;
      assert.equal(`${o.code.coding?.[0]?.code} ${v} @${o.effectiveDateTime}`, line);
      assert.equal(trs[0].devices[0].identifier?.[0]?.value, 'TestDeviceId');
      assert.equal(trs[0].patient?.value, 'TestPatientId');
      assert.equal(o.encounter?.identifier?.value, 'TestEncounter');
      for (const r of [...trs[0].devices, o]) assert.deepEqual(validate(r), []);
    }
  });
});

describe('diastolic coded as heart rate (no shared files needed)', () => {
  it('a standalone diastolic Observation coded 8867-4 in mmHg: the heart-rate unit rule fires, and the explanation names the code', () => {
    const deviceMapping = {
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'JsonPathContent',
          template: {
            typeName: 'diastolic',
            typeMatchExpression: '$..[?(@diastolic)]',
            deviceIdExpression: '$.deviceid',
            patientIdExpression: '$.patientid',
            timestampExpression: '$.measurementdatetime',
            values: [{ valueName: 'diastolic', valueExpression: '$.diastolic', required: true }],
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
            typeName: 'diastolic',
            periodInterval: 0,
            codes: [{ system: 'http://loinc.org', code: '8867-4', display: 'Diastolic blood pressure' }],
            value: { valueName: 'diastolic', valueType: 'Quantity', unit: 'mmHg' },
          },
        },
      ],
    };
    const errors = validateMapping(deviceMapping, fhirMapping).map(formatIssue);
    assert.deepEqual(errors, [
      `fhirmapping.json $.template[0].template.codes[0]: ${DIASTOLIC_EXPLANATION}: correct the code (a wrong code is a patient-safety defect)`,
      `fhirmapping.json $.template[0].template.value.unit: LOINC 8867-4 'Heart rate' (R4 profile heartrate) requires the unit '/min'; this template gives 'mm[Hg]' (from "mmHg"), which the validator refuses`,
    ]);
    const adapter = createMappingAdapter({ id: 'dia', description: 'dia', deviceMapping, fhirMapping, checks: 'structure' });
    const body = { deviceid: 'dev-1', patientid: 'pat-1', measurementdatetime: '2026-11-23T10:15:30Z', diastolic: 80 };
    const [obs] = adapter.translate(message({ body }), ctx)[0].observations;
    assert.deepEqual(
      validate(obs).map((i) => i.diagnostics),
      ["LOINC 8867-4: unit 'mm[Hg]' is not allowed; the profile requires '/min'"],
    );
    const [sample] = checkSamples(adapter.mapping, [{ file: 'payload.json', body }]);
    assert.deepEqual(sample.issues.map(formatIssue), [
      "payload.json translation[0].observations[0] Observation.valueQuantity.code: Observation from fhirmapping.json $.template[0] (typeName 'diastolic'): LOINC 8867-4: unit 'mm[Hg]' is not allowed; the profile requires '/min': LOINC 8867-4 is Heart rate, but the template displays it as 'Diastolic blood pressure' (diastolic blood pressure is 8462-4, inside a blood-pressure panel 85354-9)",
    ]);
  });
});
