import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import type { Coding, Observation, Resource } from 'fhir/r4';
import type { Reading, TranslationContext } from '../../src/core/contract.js';
import { GatewayError } from '../../src/core/errors.js';
import { validate } from '../../src/fhir/validate.js';
import { createHl7Adapter, hl7v2Adapter } from '../../src/hl7v2/adapter.js';
import { EUI64_SYSTEM } from '../../src/hl7v2/config.js';
import { decodeBytes, parseMessage } from '../../src/hl7v2/parse.js';

const MDC = 'urn:iso:std:iso:11073:10101';
const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const ctx: TranslationContext = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:mrn' };
const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

function translate(text: string | Buffer, adapter = hl7v2Adapter): Reading[] {
  const { text: t, charset } = Buffer.isBuffer(text) ? decodeBytes(text) : { text, charset: undefined };
  return adapter.translate({ body: parseMessage(t, { charset }), channel: 'test', receivedAt: '2026-11-23T10:00:00Z' }, ctx);
}

function refusal(fn: () => unknown): { code: string; diagnostics?: string; expression?: string[] }[] {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof GatewayError, String(e));
    assert.equal(e.status, 422);
    return e.outcome.issue as never;
  }
  assert.fail('expected a refusal');
}

function allValid(ts: Reading[]): void {
  const resources: Resource[] = ts.flatMap((t) => [...t.devices, ...(t.patients ?? []), ...t.observations]);
  for (const r of resources) assert.deepEqual(validate(r), [], `${r.resourceType} ${JSON.stringify((r as Observation).code?.coding)}`);
}

const codes = (o: Observation) =>
  (o.code.coding ?? []).map((c: Coding) => `${c.system === LOINC ? 'LN' : c.system === MDC ? 'MDC' : c.system}:${c.code}`);
const byMdc = (obs: Observation[], code: string) => obs.find((o) => o.code.coding?.some((c) => c.system === MDC && c.code === code));

describe('hl7v2 ORU^R01 from devices (IHE PCD-01)', () => {
  const [t] = translate(fixture('pcd01-monitor.hl7'));

  it('makes one Device for the MDS: EUI-64 identifier (IEEE system-id OID), MDC type, location from PV1-3', () => {
    assert.equal(t.devices.length, 1);
    const d = t.devices[0];
    assert.deepEqual(d.identifier?.[0], { system: EUI64_SYSTEM, value: '00-A0-C9-14-C8-29-00-01' });
    assert.deepEqual(d.type?.coding?.[0], { system: MDC, code: '69965', display: 'MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS' });
    assert.equal(d.location?.display, 'ICU 12 B');
  });

  it('codes each metric with LOINC + MDC as in the verified table, units in UCUM', () => {
    const obs = t.observations;
    const expect: [string, string[], number, string][] = [
      ['150456', ['LN:2708-6', 'MDC:150456'], 97, '%'],
      ['149530', ['LN:8867-4', 'MDC:149530'], 112, '/min'],
      ['150364', ['LN:8310-5', 'MDC:150364'], 37.2, 'Cel'],
      ['151562', ['LN:9279-1', 'MDC:151562'], 18, '/min'],
    ];
    for (const [mdc, want, value, unit] of expect) {
      const o = byMdc(obs, mdc) as Observation;
      assert.ok(o, mdc);
      assert.deepEqual(codes(o), want);
      assert.equal(o.category?.[0]?.coding?.[0]?.code, 'vital-signs');
      assert.equal(o.valueQuantity?.value, value);
      assert.equal(o.valueQuantity?.system, UCUM);
      assert.equal(o.valueQuantity?.code, unit);
      assert.deepEqual(o.subject?.identifier, { system: 'urn:oid:1.2.276.0.99.1', value: 'MRN-4711' });
      assert.deepEqual(o.device?.identifier, { system: EUI64_SYSTEM, value: '00-A0-C9-14-C8-29-00-01' });
    }
  });

  it('builds one NIBP panel (85354-9 + 150020) with systolic, diastolic and mean components', () => {
    const bp = byMdc(t.observations, '150020') as Observation;
    assert.deepEqual(codes(bp), ['LN:85354-9', 'MDC:150020']);
    assert.equal(bp.valueQuantity, undefined);
    const comps = (bp.component ?? []).map((c) => [codes(c as never).join(','), c.valueQuantity?.value, c.valueQuantity?.code]);
    assert.deepEqual(comps, [
      ['LN:8480-6,MDC:150021', 128, 'mm[Hg]'],
      ['LN:8462-4,MDC:150022', 84, 'mm[Hg]'],
      ['LN:8478-0,MDC:150023', 99, 'mm[Hg]'],
    ]);
    // No OBX-14 on the metrics: the channel's OBX-14 applies.
    assert.equal(bp.effectiveDateTime, '2026-11-23T10:13:00+01:00');
    assert.equal(t.observations.filter((o) => o.code.coding?.some((c) => ['150021', '150022', '150023'].includes(c.code ?? ''))).length, 0);
  });

  it('maps time, status, interpretation and reference range', () => {
    const spo2 = byMdc(t.observations, '150456') as Observation;
    assert.equal(spo2.effectiveDateTime, '2026-11-23T10:14:05+01:00');
    assert.equal(spo2.status, 'final'); // OBX-11 R, default policy
    assert.deepEqual(spo2.interpretation?.[0]?.coding?.[0], {
      system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation',
      code: 'N',
      display: 'Normal',
    });
    assert.equal(spo2.referenceRange?.[0]?.low?.value, 90);
    assert.equal(spo2.referenceRange?.[0]?.high?.value, 100);
    const pr = byMdc(t.observations, '149530') as Observation;
    assert.equal(pr.interpretation?.[0]?.coding?.[0]?.code, 'H');
    const temp = byMdc(t.observations, '150364') as Observation;
    assert.equal(temp.effectiveDateTime, '2026-11-23T10:10:00+01:00', 'a time without offset takes the MSH-7 offset');
  });

  it('sends a metric without a verified LOINC pairing with its MDC coding only, and an unknown MDC code without a vital-signs claim', () => {
    const perf = byMdc(t.observations, '150488') as Observation;
    assert.deepEqual(codes(perf), ['MDC:150488']);
    const unknown = byMdc(t.observations, '196674') as Observation;
    assert.deepEqual(codes(unknown), ['MDC:196674']);
    assert.equal(unknown.category, undefined);
    assert.equal(unknown.valueQuantity?.code, '1');
  });

  it('maps ST to valueString with \\.br\\ as a line break', () => {
    const st = byMdc(t.observations, '184327') as Observation;
    assert.equal(st.valueString, 'Sinus rhythm\nregular');
  });

  it('produces only resources that pass validation, with deterministic identifiers', () => {
    allValid([t]);
    const [again] = translate(fixture('pcd01-monitor.hl7'));
    assert.deepEqual(
      again.observations.map((o) => o.identifier),
      t.observations.map((o) => o.identifier),
    );
    assert.equal(new Set(t.observations.map((o) => o.identifier?.[0]?.value)).size, t.observations.length);
  });

  it('accepts LF separators and a UCUM-coded unit; OBX-11 R follows the configured status', () => {
    const [s] = translate(fixture('pcd01-spo2-lf.hl7'));
    assert.equal(s.observations.length, 2);
    assert.equal(byMdc(s.observations, '149530')?.valueQuantity?.code, '/min');
    const [p] = translate(fixture('pcd01-spo2-lf.hl7'), createHl7Adapter({ statusR: 'preliminary' }));
    assert.ok(p.observations.every((o) => o.status === 'preliminary'));
    allValid([s, p]);
  });

  it('maps PID-3 through the configured assigning-authority systems, else the default system', () => {
    const adapter = createHl7Adapter({ assigningAuthoritySystems: new Map([['HOSP', 'https://hosp.example/mrn']]) });
    const [t2] = translate(fixture('pcd01-monitor.hl7'), adapter);
    assert.deepEqual(t2.patient, { system: 'https://hosp.example/mrn', value: 'MRN-4711' });
    const [t3] = translate(fixture('pcd01-monitor.hl7').toString('utf8').replace('MRN-4711^^^HOSP&1.2.276.0.99.1&ISO^MR', 'MRN-4711'));
    assert.deepEqual(t3.patient, { system: 'urn:test:mrn', value: 'MRN-4711' });
  });

  it('uses the configured default zone when neither the time nor MSH-7 carries an offset', () => {
    const text = fixture('pcd01-spo2-lf.hl7')
      .toString('utf8')
      .replace('20261123110000+0100||ORU', '20261123110000||ORU')
      .replaceAll('20261123110000+0100', '20261123110000');
    const [t4] = translate(text, createHl7Adapter({ defaultTimezone: 'America/New_York' }));
    assert.equal(t4.observations[0].effectiveDateTime, '2026-11-23T11:00:00-05:00');
  });

  const base = fixture('pcd01-spo2-lf.hl7').toString('utf8');
  const cases: [string, string, string | RegExp][] = [
    ['a missing PID', base.replace(/PID\|[^\n]*\n/, ''), /PID/],
    ['a value that is not a number', base.replace('|95|', '|9x5|'), 'OBX[2]-5'],
    [
      'an MDC code contradicting its reference id',
      base.replace('150456^MDC_PULS_OXIM_SAT_O2', '150456^MDC_PULS_OXIM_PULS_RATE'),
      'OBX[2]-3',
    ],
    [
      'a systolic value without diastolic',
      base.replace(
        '150456^MDC_PULS_OXIM_SAT_O2^MDC|1.0.0.1|95|262688^MDC_DIM_PERCENT',
        '150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.0.0.1|120|266016^MDC_DIM_MMHG',
      ),
      'OBX[2]-3',
    ],
    [
      'no observation time at all',
      base.replace('|||20261123105959+0100', '').replace(/^(OBX.*)\|\|\|20261123110000\+0100$/gm, '$1'),
      'OBX[2]-14',
    ],
  ];
  for (const [what, text, where] of cases) {
    it(`refuses ${what} with the location of the problem`, () => {
      const issues = refusal(() => translate(text));
      const exprs = issues.flatMap((i) => i.expression ?? []);
      assert.ok(
        exprs.some((e) => (typeof where === 'string' ? e === where : where.test(e))),
        JSON.stringify(issues),
      );
    });
  }

  it('never delivers a value the device flagged invalid (OBX-8 INV): dataAbsentReason error', () => {
    const [t5] = translate(base.replace('|95|262688^MDC_DIM_PERCENT^MDC|||', '|95|262688^MDC_DIM_PERCENT^MDC||INV|'));
    const o = byMdc(t5.observations, '150456') as Observation;
    assert.equal(o.valueQuantity, undefined);
    assert.equal(o.dataAbsentReason?.coding?.[0]?.code, 'error');
    allValid([t5]);
  });

  it('maps OBX-11 per table 0085', () => {
    const status = (c: string) =>
      translate(base.replace(/\|R\|\|\|20261123110000\+0100/, `|${c}|||20261123110000+0100`))[0].observations[0].status;
    assert.equal(status('F'), 'final');
    assert.equal(status('C'), 'corrected');
    assert.equal(status('P'), 'preliminary');
    assert.equal(status('X'), 'cancelled');
    assert.equal(status('W'), 'entered-in-error');
    assert.equal(status('A'), 'amended');
  });
});

describe('hl7v2 ORU^R01 lab results', () => {
  const [t] = translate(fixture('oru-lab.hl7'));

  it('makes one laboratory Observation per OBX, coded as sent (LN → http://loinc.org)', () => {
    assert.equal(t.devices.length, 0);
    assert.equal(t.observations.length, 4);
    for (const o of t.observations) {
      assert.equal(o.category?.[0]?.coding?.[0]?.code, 'laboratory');
      assert.equal(o.code.coding?.[0]?.system, LOINC);
      assert.equal(o.device, undefined);
    }
    const hb = t.observations[0];
    assert.equal(hb.code.coding?.[0]?.code, '718-7');
    assert.deepEqual(hb.valueQuantity, { value: 12.5, unit: 'grams per deciliter', system: UCUM, code: 'g/dL' });
    assert.equal(hb.interpretation?.[0]?.coding?.[0]?.code, 'L');
    assert.equal(hb.effectiveDateTime, '2026-11-23T11:30:00-05:00');
    assert.equal(t.observations[1].effectiveDateTime, '2026-11-23T11:30:00-05:00', 'OBR-7 when OBX-14 is empty');
    assert.deepEqual(t.observations[2].valueCodeableConcept?.coding?.[0], {
      system: 'http://snomed.info/sct',
      code: '260415000',
      display: 'not detected',
    });
    assert.equal(t.observations[3].valueString, 'Normocytic, normochromic');
    assert.equal(t.observations[3].status, 'corrected');
    allValid([t]);
  });
});

describe('hl7v2 ADT', () => {
  it('A01 → a Patient with identifiers, name, birth date and gender', () => {
    const [t] = translate(fixture('adt-a01.hl7'));
    const p = t.patients?.[0];
    assert.ok(p);
    assert.equal(t.observations.length, 0);
    assert.deepEqual(p.identifier?.[0]?.system, 'urn:oid:1.2.276.0.99.1');
    assert.deepEqual(p.identifier?.[0]?.value, 'MRN-4711');
    assert.equal(p.identifier?.length, 2);
    assert.deepEqual(p.name?.[0], { use: 'official', family: 'Muster', given: ['Erika', 'Maria'], prefix: ['Dr.'] });
    assert.equal(p.birthDate, '1970-01-01');
    assert.equal(p.gender, 'female');
    allValid([t]);
  });

  it('A04 in ISO-8859-1, A08 and A31 of a batch are translated; A40 yields nothing (acknowledged and logged)', () => {
    const [t] = translate(fixture('adt-a04-latin1.hl7'));
    assert.deepEqual(t.patients?.[0]?.name?.[0], { family: 'Größe', given: ['Jürgen'] });
    assert.equal(t.patients?.[0]?.gender, 'male');
    assert.deepEqual(translate(fixture('adt-a40.hl7')), []);
  });

  it('refuses ADT without PID, and message types it does not take', () => {
    const text = fixture('adt-a01.hl7')
      .toString('utf8')
      .replace(/PID\|[^\r]*\r/, '');
    assert.ok(refusal(() => translate(text)).some((i) => i.expression?.[0] === 'PID'));
    const orm = 'MSH|^~\\&|A|B|||20260101||ORM^O01|1|P|2.5\rPID|||1\r';
    assert.ok(refusal(() => translate(orm)).some((i) => i.code === 'not-supported'));
  });
});
