/**
 * The built-in catalogue in mappings/: every mapping loads without errors or warnings, translates its samples into
 * exactly the codes and units the terminology reference gives, and every produced resource passes validate().
 */
import { strict as assert } from 'node:assert';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import type { Observation, Quantity } from 'fhir/r4';
import { loadMappingDir, loadMappingsDir } from '../../src/adapters/mapping/index.js';
import { validate } from '../../src/fhir/validate.js';
import { ctx, mappingsDir, message, readJson } from './helpers.js';

const L = 'http://loinc.org';
const M = 'urn:iso:std:iso:11073:10101';
const UCUM = 'http://unitsofmeasure.org';

const q = (v: Quantity | undefined) => (v ? `${v.value} ${v.system === UCUM ? v.code : `?${v.unit}`}` : undefined);

/** codes | category | value, one line per Observation. */
function summary(o: Observation): string {
  const codes = (o.code.coding ?? []).map((c) => `${c.system === L ? 'LOINC' : c.system === M ? 'MDC' : c.system} ${c.code}`).join(' + ');
  const cat = o.category?.[0]?.coding?.[0]?.code ?? '-';
  let value = q(o.valueQuantity);
  if (o.valueSampledData) {
    const sd = o.valueSampledData;
    value = `SampledData ${sd.origin.code ?? sd.origin.unit} every ${sd.period} ms: ${sd.data}`;
  }
  const comps = (o.component ?? [])
    .map(
      (c) => `[${(c.code.coding ?? []).map((k) => `${k.system === L ? 'LOINC' : 'MDC'} ${k.code}`).join(' + ')} = ${q(c.valueQuantity)}]`,
    )
    .join(' ');
  return [codes, cat, value ?? comps].join(' | ');
}

/** Expected Observations per mapping and sample file. */
const EXPECTED: Record<string, Record<string, string[]>> = {
  'pulse-oximeter': {
    'spot-check.json': [
      'LOINC 2708-6 + LOINC 59408-5 + MDC 150456 | vital-signs | 97 %',
      'LOINC 2708-6 + LOINC 59408-5 + MDC 150456 | vital-signs | 96 %',
      'LOINC 8867-4 + MDC 149530 | vital-signs | 72 /min',
      'LOINC 8867-4 + MDC 149530 | vital-signs | 75 /min',
      'MDC 150488 | vital-signs | 3.1 %',
    ],
    'single-spo2.json': ['LOINC 2708-6 + LOINC 59408-5 + MDC 150456 | vital-signs | 98 %'],
  },
  'bp-cuff': {
    'reading.json': [
      'LOINC 85354-9 + MDC 150020 | vital-signs | [LOINC 8480-6 + MDC 150021 = 128 mm[Hg]] [LOINC 8462-4 + MDC 150022 = 82 mm[Hg]] [LOINC 8478-0 + MDC 150023 = 97 mm[Hg]]',
      'LOINC 8867-4 + MDC 149546 | vital-signs | 64 /min',
    ],
    'no-mean.json': [
      'LOINC 85354-9 + MDC 150020 | vital-signs | [LOINC 8480-6 + MDC 150021 = 131 mm[Hg]] [LOINC 8462-4 + MDC 150022 = 85 mm[Hg]]',
      'LOINC 8867-4 + MDC 149546 | vital-signs | 70 /min',
    ],
  },
  'weight-scale': {
    'weigh-in.json': ['LOINC 29463-7 + MDC 188736 | vital-signs | 72.35 kg', 'LOINC 39156-5 + MDC 188752 | vital-signs | 23.4 kg/m2'],
    'weight-only.json': ['LOINC 29463-7 + MDC 188736 | vital-signs | 72.1 kg'],
  },
  thermometer: { 'export.json': ['LOINC 8310-5 + MDC 150364 | vital-signs | 37.4 Cel'] },
  'glucose-meter': {
    'fasting.json': ['MDC 160184 | laboratory | 104 mg/dL'],
    'mmol.json': ['MDC 160184 | laboratory | 7.2 mmol/L'],
  },
  cgm: {
    'upload.json': [
      'MDC 160212 | laboratory | SampledData mg/dL every 300000 ms: 112 118 127 E 141 E E E E E E 135',
      'MDC 160212 | laboratory | SampledData mg/dL every 300000 ms: 131 E E E E E E E E E E E',
    ],
  },
  'ecg-waveform': {
    'strip.json': [
      'MDC 131330 | procedure | SampledData mV every 8 ms: 0 0.016 0.031 0.042 0.049 0.05 0.045 0.036 0.023 0.007 -0.01 -0.025 0.862 -0.046 -0.05 -0.048 -0.041 -0.029 -0.014 0.003 0.019 0.033 0.043 0.049 0.049',
    ],
  },
  'respiratory-rate': { 'iothub-event.json': ['LOINC 9279-1 + MDC 151562 | vital-signs | 16 /min'] },
  'activity-tracker': { 'bouts.json': ['LOINC 55423-8 | activity | 4120 {steps}', 'LOINC 55423-8 | activity | 0 {steps}'] },
};

describe('built-in mapping catalogue', () => {
  const folders = readdirSync(mappingsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();

  it('has the expected mappings, each with samples and an expectation here', () => {
    assert.deepEqual(folders, Object.keys(EXPECTED).sort());
  });

  it('loads as a folder with no errors and no warnings', () => {
    const r = loadMappingsDir(mappingsDir);
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.warnings, []);
    assert.deepEqual(r.adapters.map((a) => a.id).sort(), folders);
  });

  for (const id of Object.keys(EXPECTED)) {
    it(`${id}: translates its samples to the exact codes and units, and every resource validates`, () => {
      const r = loadMappingDir(path.join(mappingsDir, id));
      assert.ok(r.adapter, r.issues.map((i) => i.message).join('\n'));
      const samples = readdirSync(path.join(mappingsDir, id, 'samples')).sort();
      assert.deepEqual(samples, Object.keys(EXPECTED[id]).sort());
      const meta = readJson<{ description: string; vendor: string }>(path.join(mappingsDir, id, 'adapter.json'));
      assert.equal(r.adapter.description, meta.description);
      for (const s of samples) {
        const body = readJson(path.join(mappingsDir, id, 'samples', s));
        const translations = r.adapter.translate(message({ body }), ctx);
        const lines = translations
          .flatMap((t) => t.observations)
          .map(summary)
          .sort();
        assert.deepEqual(lines, [...EXPECTED[id][s]].sort(), `${id}/samples/${s}`);
        for (const t of translations) {
          assert.ok(t.patient, 'every sample names the patient');
          for (const res of [...t.devices, ...t.observations])
            assert.deepEqual(validate(res), [], `${id}/samples/${s}: ${res.resourceType}`);
          for (const o of t.observations) {
            assert.deepEqual(o.subject?.identifier, { system: ctx.patientIdentifierSystem, value: t.patient?.value });
            assert.deepEqual(o.device?.identifier, t.devices[0].identifier?.[0]);
          }
          assert.equal(t.devices[0].manufacturer, meta.vendor);
        }
      }
    });
  }

  it('no catalogue mapping codes a LOINC code or MDC code outside the verified set used above', () => {
    const allowed = new Set([
      `${L}|2708-6`,
      `${L}|59408-5`,
      `${L}|8867-4`,
      `${L}|85354-9`,
      `${L}|8480-6`,
      `${L}|8462-4`,
      `${L}|8478-0`,
      `${L}|29463-7`,
      `${L}|39156-5`,
      `${L}|8310-5`,
      `${L}|9279-1`,
      `${L}|55423-8`,
      `${M}|150456`,
      `${M}|149530`,
      `${M}|150488`,
      `${M}|150020`,
      `${M}|150021`,
      `${M}|150022`,
      `${M}|150023`,
      `${M}|149546`,
      `${M}|188736`,
      `${M}|188752`,
      `${M}|150364`,
      `${M}|160184`,
      `${M}|160212`,
      `${M}|131330`,
      `${M}|151562`,
    ]);
    const seen: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        if (typeof o.code === 'string' && (o.system === L || o.system === M)) seen.push(`${o.system}|${o.code}`);
        Object.values(o).forEach(walk);
      }
    };
    for (const id of folders) walk(readJson(path.join(mappingsDir, id, 'fhirmapping.json')));
    assert.deepEqual(
      seen.filter((c) => !allowed.has(c)),
      [],
    );
  });
});
