/**
 * The fast structural check may only ever say "valid" where medplum's validator agrees: it is tested differentially,
 * against medplum itself, on the resources the gateway really produces (through its adapters and builders) and on
 * systematic mutations of them (every path deleted, replaced by values of every wrong shape, wrapped in or unwrapped
 * from an array, given unknown siblings and primitive extensions), plus targeted cases for the invariants.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { validateResource } from '@medplum/core';
import type { AuditEvent, Bundle, Device, Observation, OperationOutcome, Patient, Resource } from 'fhir/r4';
import type { Reading, TranslationContext } from '../../src/core/contract.js';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { buildAuditEvent } from '../../src/audit/event.js';
import { buildDevice, buildObservation, quantity, resolveCode, type ResolvedCode } from '../../src/fhir/builders.js';
import { fastStructurallyValid } from '../../src/fhir/fast-validate.js';
import { initValidation, validate } from '../../src/fhir/validate.js';
import { hl7v2Adapter } from '../../src/hl7v2/adapter.js';
import { parseMessage } from '../../src/hl7v2/parse.js';

const ctx: TranslationContext = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:mrn' };
const resourcesOf = (ts: Reading[]): Resource[] => ts.flatMap((t) => [...t.devices, ...(t.patients ?? []), ...t.observations]);

function measurements(body: unknown): Resource[] {
  return resourcesOf(measurementsAdapter.translate({ body, channel: 'http', receivedAt: '2026-11-23T10:00:01Z' }, ctx));
}

function hl7(text: string): Resource[] {
  return resourcesOf(hl7v2Adapter.translate({ body: parseMessage(text), channel: 'test', receivedAt: '2026-11-23T10:00:01Z' }, ctx));
}
const hl7Fixture = (name: string) => hl7(readFileSync(new URL(`../hl7v2/fixtures/${name}`, import.meta.url), 'utf8'));

const reading = (measurements: unknown[], extra: Record<string, unknown> = {}) => ({
  deviceId: 'SN-1',
  patientId: 'MRN-1',
  timestamp: '2026-11-23T10:00:00Z',
  measurements,
  ...extra,
});
const code = (c: string) => resolveCode({ code: c }) as ResolvedCode;
const mdcOnly = (c: string, refId: string): ResolvedCode => ({
  codings: [{ system: 'urn:iso:std:iso:11073:10101', code: c, display: refId }],
  text: refId,
});
const device = { system: 'urn:test:device', value: 'SN-1' };
const patient = { system: 'urn:test:mrn', value: 'MRN-1' };

const spo2 = measurements(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }]))[1] as Observation;
const bpPanel = measurements(
  reading([
    { code: 'MDC_PRESS_BLD_NONINV_SYS', value: 120, unit: 'mmHg' },
    { code: 'MDC_PRESS_BLD_NONINV_DIA', value: 80, unit: 'mm[Hg]' },
    { code: 'MDC_PRESS_BLD_NONINV_MEAN', value: 93, unit: 'mm[Hg]' },
  ]),
)[1] as Observation;

const sampled = buildObservation({
  device,
  patient,
  effective: { start: '2026-11-23T10:00:00.000+01:00', end: '2026-11-23T10:00:02.5+01:00' },
  code: mdcOnly('150452', 'MDC_PULS_OXIM_PLETH'),
  value: {
    kind: 'sampledData',
    value: { origin: quantity(0, 'mV'), period: 4, factor: 0.5, lowerLimit: -10, upperLimit: 10, dimensions: 1, data: '1 2 3 E U L 5' },
  },
  status: 'preliminary',
  sourceId: 'MSG-1',
});

const rich: Observation = {
  ...spo2,
  id: 'obs-1',
  meta: {
    versionId: '3',
    lastUpdated: '2026-11-23T10:00:01.123Z',
    profile: ['http://hl7.org/fhir/StructureDefinition/oxygensat'],
    tag: [{ system: 'urn:test:tag', code: 'gw' }],
  },
  text: { status: 'generated', div: '<div xmlns="http://www.w3.org/1999/xhtml">SpO2 97 %</div>' },
  extension: [
    { url: 'http://example.org/fhir/StructureDefinition/firmware', valueString: '1.2.3' },
    {
      url: 'http://example.org/fhir/StructureDefinition/nested',
      extension: [
        { url: 'a', valueBoolean: true },
        { url: 'b', valueInteger: -3 },
      ],
    },
  ],
  _status: { extension: [{ url: 'http://example.org/fhir/StructureDefinition/status-source', valueCode: 'device' }] },
  issued: '2026-11-23T10:00:01.5Z',
  performer: [{ reference: 'Practitioner/p-1', display: 'Nurse' }],
  interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: 'N' }] }],
  referenceRange: [{ low: { value: 90, unit: '%', system: 'http://unitsofmeasure.org', code: '%' }, text: '90-100' }],
  note: [{ authorString: 'gateway', time: '2026-11-23T10:00:01Z', text: '**checked**' }],
  bodySite: { text: 'left index finger' },
} as Observation;

const withContained: Observation = {
  ...spo2,
  contained: [{ resourceType: 'Device', id: 'dev', identifier: [device], status: 'active', serialNumber: 'SN-1' } as Device],
  device: { reference: '#dev' },
} as Observation;

const richPatient: Patient = {
  resourceType: 'Patient',
  id: 'pat-1',
  extension: [
    {
      url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race',
      extension: [
        { url: 'ombCategory', valueCoding: { system: 'urn:oid:2.16.840.1.113883.6.238', code: '2106-3', display: 'White' } },
        { url: 'text', valueString: 'White' },
      ],
    },
  ],
  identifier: [
    {
      use: 'usual',
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] },
      system: 'urn:test:mrn',
      value: 'MRN-1',
      period: { start: '2020-01-01' },
    },
  ],
  active: true,
  name: [{ use: 'official', family: 'Doe', given: ['Jane', 'Q.'], prefix: ['Dr.'] }],
  telecom: [{ system: 'phone', value: '+1 555 0100', use: 'home', rank: 1 }],
  gender: 'female',
  birthDate: '1970-01-01',
  _birthDate: {
    extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/patient-birthTime', valueDateTime: '1970-01-01T08:30:00+01:00' }],
  },
  deceasedBoolean: false,
  address: [{ use: 'home', line: ['1 Main St', 'Apt 2'], city: 'Springfield', postalCode: '12345', country: 'US' }],
  multipleBirthInteger: 2,
  contact: [{ relationship: [{ text: 'mother' }], name: { text: 'Mary Doe' } }],
  communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en-US' }] }, preferred: true }],
  managingOrganization: { reference: 'Organization/org-1' },
};

const audit: AuditEvent = buildAuditEvent(
  {
    kind: 'access-refused',
    principal: { role: 'device', id: 'SN-1', keyId: 'k-1' } as never,
    address: '10.0.0.7',
    entities: [{ kind: 'Device', id: 'SN-1', description: 'refused' }],
    outcome: '4',
    description: 'bad key',
    recorded: '2026-11-23T10:00:00.000Z',
  },
  'urn:test:device',
);

const bundle: Bundle = {
  resourceType: 'Bundle',
  type: 'transaction',
  entry: [
    {
      fullUrl: 'urn:uuid:2dac892f-6459-5ea4-be1f-07fd17619845',
      resource: spo2,
      request: { method: 'POST', url: 'Observation', ifNoneExist: 'identifier=urn:ietf:rfc:3986|x' },
    },
    {
      resource: buildDevice({ identity: device, serialNumber: 'SN-1' }),
      request: { method: 'PUT', url: 'Device?identifier=urn:test:device|SN-1' },
    },
  ],
};

/** Resources as the gateway produces them; every one is valid, and mutated below. */
const VALID: [string, Resource][] = [
  ['blood-pressure panel (components)', bpPanel],
  ['SampledData observation (period)', sampled],
  ['observation with meta, narrative, extensions, _status, ranges, notes', rich],
  ['observation with a contained device', withContained],
  [
    'device with every field the builder sets',
    buildDevice({
      identity: device,
      extraIdentifiers: [{ system: 'urn:ietf:rfc:3986', value: 'urn:uuid:2dac892f-6459-5ea4-be1f-07fd17619845' }],
      manufacturer: 'Acme',
      model: 'X-1',
      serialNumber: 'SN-1',
      displayName: 'Bedside monitor',
      type: { coding: [{ system: 'urn:iso:std:iso:11073:10101', code: '69965' }] },
    }),
  ],
  ['patient with extensions, _birthDate, contact (pat-1)', richPatient],
  ['audit event', audit],
  ['transaction bundle', bundle],
];
/** More real resources, proven valid but not mutated (the mutations of the ones above cover their shapes). */
const MORE: [string, Resource][] = [
  ['SpO2 observation (mutated inside the bundle)', spo2],
  ...measurements([
    reading([
      { code: 'MDC_TEMP_BODY', value: 98.6, unit: 'degF' },
      { code: 'MDC_PULS_OXIM_PULS_RATE', value: 70, unit: 'bpm' },
    ]),
    reading([{ code: 'MDC_MASS_BODY_ACTUAL', value: 72.5, unit: 'kg' }], { patientId: undefined, manufacturer: 'Acme', model: 'Scale 2' }),
    reading([{ code: 'MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD', value: 5.4, unit: 'mmol/L' }]),
    reading([
      { code: { system: 'http://loinc.org', code: '8480-6' }, value: 118, unit: 'mm[Hg]' },
      { code: { system: 'http://loinc.org', code: '8462-4' }, value: 76, unit: 'mm[Hg]' },
    ]),
  ]).map((r): [string, Resource] => [`measurements ${r.resourceType}`, r]),
  ...['pcd01-monitor.hl7', 'pcd01-spo2-lf.hl7', 'oru-lab.hl7', 'adt-a01.hl7'].flatMap((f) =>
    hl7Fixture(f).map((r): [string, Resource] => [`${f} ${r.resourceType}`, r]),
  ),
  ...hl7(
    'MSH|^~\\&|GW|WARD|IOMT|HOSP|20261123101500+0100||ORU^R01^ORU_R01|NA-1|P|2.6\rPID|||MRN-1^^^HOSP^MR\r' +
      'OBR|1|ORD-1|FIL-1|182777000^monitoring of patient^SCT|||20261123101400+0100\r' +
      'OBX|1|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1.1.1.1|1^2^^-4.5^5|266418^MDC_DIM_MILLI_VOLT^MDC|||||R|||20261123101405+0100\r' +
      'OBX|2|CWE|184327^MDC_ECG_STAT_RHY^MDC|1.1.1.2|1^Sinus^L||||||R|||20261123101405+0100\r',
  ).map((r): [string, Resource] => [`NA/CWE ${r.resourceType}`, r]),
  ...(['device-registered', 'credential-rotated', 'data-refused'] as const).map((kind): [string, Resource] => [
    `audit ${kind}`,
    buildAuditEvent({ kind, entities: [{ kind: 'Device', id: 'SN-1' }] }, 'urn:test:device'),
  ]),
  [
    'absent value (dataAbsentReason)',
    buildObservation({
      device,
      patient,
      effective: '2026-11-23',
      code: code('MDC_PULS_OXIM_SAT_O2'),
      value: {
        kind: 'absent',
        reason: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'error' }] },
      },
    }),
  ],
  [
    'string value',
    buildObservation({
      device,
      effective: '2026-11-23T10:00:00+14:00',
      code: mdcOnly('184327', 'MDC_ECG_STAT_RHY'),
      value: { kind: 'string', value: 'Sinus rhythm\nregular' },
    }),
  ],
];

/** What a validation throws: medplum's OperationOutcome, or the text of another error (medplum has a few). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as { outcome?: unknown }).outcome ?? String(e);
  }
}
/** medplum's verdict: undefined when valid (it throws when it finds an error). */
const medplum = (r: unknown) => thrown(() => validateResource(structuredClone(r) as never));
const fast = (r: unknown) => fastStructurallyValid(structuredClone(r));
/** What validate() answers: its issues, or what it threw. */
function issuesOrThrown(r: unknown): unknown {
  try {
    return validate(structuredClone(r) as Resource);
  } catch (e) {
    return String(e);
  }
}
/** medplum's errors as validate() reports them (located at the resource when medplum gives no expression). */
function expectedIssues(r: unknown, verdict: unknown): unknown {
  if (typeof verdict === 'string') return verdict;
  const type = (r as { resourceType?: string }).resourceType;
  return (verdict as OperationOutcome).issue
    .filter((i) => i.severity === 'error' || i.severity === 'fatal')
    .map((i) => ({ ...i, expression: [i.expression?.[0] ?? type] }));
}

type Path = (string | number)[];
type Json = Record<string | number, unknown>;

function paths(v: unknown, at: Path = []): Path[] {
  if (typeof v !== 'object' || v === null) return [];
  return Object.keys(v).flatMap((k) => {
    const key = Array.isArray(v) ? Number(k) : k;
    return [[...at, key], ...paths((v as Json)[key], [...at, key])];
  });
}

/** A copy of `r` with the value at `path` passed through `edit` (which returns undefined to delete it). */
function mutate(r: unknown, path: Path, edit: (v: unknown, parent: Json) => unknown): unknown {
  const copy = structuredClone(r) as Json;
  const parent = path.slice(0, -1).reduce<Json>((o, k) => o[k] as Json, copy);
  const last = path[path.length - 1];
  const next = edit(parent[last], parent);
  if (next !== undefined) parent[last] = next;
  else if (Array.isArray(parent)) parent.splice(last as number, 1);
  else delete parent[last];
  return copy;
}

const EXTENSION = { extension: [{ url: 'http://example.org/x', valueString: 'a' }] };
/** Values of every shape a property must not (or may) have, each tried at every path. */
const SAMPLES: unknown[] = [
  0,
  1,
  -1,
  1.5,
  2 ** 31,
  2 ** 53,
  Number.NaN,
  true,
  null,
  '',
  ' ',
  'x  y',
  'a\u0001b',
  'final ',
  'not a date',
  'x'.repeat(65),
  '2026',
  '2026-11-23',
  '2026-11-23T10:00',
  '2026-11-23T10:00:00Z',
  '2026-13-01',
  '2026-11-23T24:00:00Z',
  '2026-11-23T10:00:00.1234567890Z',
  'urn:uuid:2DAC892F-6459-5EA4-BE1F-07FD17619845',
  'http://x y',
  {},
  [],
  [{}],
  [null],
  ['a'],
  { foo: 1 },
  { text: 'x' },
  { id: 'x' },
  EXTENSION,
  { url: 'http://example.org/x' },
  { ...EXTENSION, valueString: 'a' },
];

function mutations(r: Resource): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const path of paths(r)) {
    const where = path.join('.');
    out.push([`${where} deleted`, mutate(r, path, () => undefined)]);
    for (const s of SAMPLES)
      out.push([`${where} = ${typeof s === 'number' ? s : JSON.stringify(s)}`, mutate(r, path, () => structuredClone(s))]);
    out.push([`${where} wrapped in an array`, mutate(r, path, (v) => [v])]);
    out.push([`${where} unwrapped`, mutate(r, path, (v) => (Array.isArray(v) ? v[0] : v))]);
    out.push([`${where} with an unknown sibling`, mutate(r, path, (v, parent) => ((parent.unknownProp = 'x'), v))]);
    const key = path[path.length - 1];
    if (typeof key === 'string') {
      for (const ext of [EXTENSION, {}, { id: 'a' }, { extension: [] }, [EXTENSION], { extension: [{ url: 'http://example.org/x' }] }]) {
        out.push([`_${key} = ${JSON.stringify(ext)}`, mutate(r, path, (v, parent) => ((parent[`_${key}`] = structuredClone(ext)), v))]);
      }
      // A second type of the same choice element, and the primitive extension of this one alone.
      const choice = /^(value|effective|deceased|multipleBirth|onset)[A-Z]/.exec(key)?.[1];
      if (choice) {
        out.push([`${where} plus ${choice}String`, mutate(r, path, (v, parent) => ((parent[`${choice}String`] = 'x'), v))]);
        out.push([`${where} plus ${choice}Boolean`, mutate(r, path, (v, parent) => ((parent[`${choice}Boolean`] = true), v))]);
        out.push([`${where} as its _ form`, mutate(r, path, (_v, parent) => ((parent[`_${key}`] = EXTENSION), undefined))]);
      }
    }
  }
  return out;
}

/**
 * Cases aimed at medplum's invariants and special rules, checked like the mutations, each with whether the fast path
 * proves it valid (it refers to medplum what it does not model, including some shapes medplum tolerates).
 */
function targeted(): [string, unknown, boolean][] {
  const obs = spo2 as unknown as Json;
  const { valueQuantity, ...noValue } = spo2;
  const component = (bpPanel.component ?? [])[0];
  const contained = withContained.contained?.[0];
  return [
    ['obs-6: value and dataAbsentReason', { ...obs, dataAbsentReason: { text: 'error' } }, false],
    ['obs-7: a component coded like the observation, with a value', { ...obs, component: [{ code: spo2.code, valueQuantity }] }, false],
    ['obs-7: the same without the value', { ...noValue, component: [{ code: spo2.code, valueString: 'x' }] }, true],
    ['obs-7: a value and components coded otherwise', { ...bpPanel, valueString: 'x' }, true],
    ['obs-3: empty reference range', { ...obs, referenceRange: [{ type: { text: 'normal' } }] }, false],
    [
      'ext-1: extension with value and extensions',
      { ...obs, extension: [{ url: 'http://x', valueString: 'a', extension: [{ url: 'b', valueString: 'c' }] }] },
      false,
    ],
    ['ext-1: extension without value', { ...obs, extension: [{ url: 'http://x' }] }, false],
    ['extension without url', { ...obs, extension: [{ valueString: 'a' }] }, false],
    ['modifier extension', { ...obs, modifierExtension: [{ url: 'http://x', valueCode: 'a' }] }, true],
    ['extension value of a type extensions cannot have', { ...obs, extension: [{ url: 'http://x', valueFoo: 'a' }] }, false],
    [
      'dom-2: contained within contained',
      { ...withContained, contained: [{ ...contained, contained: [{ resourceType: 'Patient', id: 'p' }] }] },
      false,
    ],
    ['dom-4: contained with meta.versionId', { ...withContained, contained: [{ ...contained, meta: { versionId: '1' } }] }, false],
    ['contained without resourceType', { ...withContained, contained: [{ id: 'dev', status: 'active' }] }, false],
    ['contained of an unknown type', { ...withContained, contained: [{ resourceType: 'Gadget', id: 'dev' }] }, false],
    [
      'contained datatype (medplum validates it as a Quantity)',
      { ...withContained, contained: [{ resourceType: 'Quantity', value: 1 }] },
      false,
    ],
    ['pat-1: contact with nothing but a relationship', { ...richPatient, contact: [{ relationship: [{ text: 'mother' }] }] }, false],
    ['resourceType inside a datatype (medplum ignores it)', { ...obs, code: { ...spo2.code, resourceType: 'CodeableConcept' } }, false],
    ['undefined choice property beside another', { ...obs, valueString: undefined }, false],
    ['undefined choice property alone (medplum: unknown property)', { ...noValue, valueString: undefined }, false],
    ['undefined optional property', { ...obs, issued: undefined }, true],
    ['undefined required property', { ...obs, status: undefined }, false],
    ['_status alone', { ...obs, status: undefined, _status: EXTENSION }, true],
    ['repeating primitive with extensions', { ...richPatient, name: [{ given: ['Jane', 'Q.'], _given: [null, EXTENSION] }] }, false],
    ['SampledData.dimensions 0 (positiveInt)', { ...sampled, valueSampledData: { ...sampled.valueSampledData, dimensions: 0 } }, false],
    [
      'SampledData.dimensions 2^31 (medplum has no 32-bit limit)',
      { ...sampled, valueSampledData: { ...sampled.valueSampledData, dimensions: 2 ** 31 } },
      true,
    ],
    ['Patient.multipleBirthInteger -1', { ...richPatient, multipleBirthInteger: -1 }, true],
    ['a string of more than 1 MB', { ...noValue, valueString: 'x'.repeat(1024 * 1024 + 1) }, false],
    ['narrative of one space', { ...rich, text: { status: 'generated', div: ' ' } }, false],
    ['an id with a space (medplum checks Resource.id as a string)', { ...obs, id: 'a b' }, true],
    ['__proto__ key (medplum lets it pass)', JSON.parse('{"resourceType":"Device","status":"active","__proto__":{"x":1}}'), false],
    ['resource of an abstract type', { resourceType: 'DomainResource', id: 'x' }, false],
    ['datatype as a resource', { resourceType: 'Quantity', value: 1 }, false],
    ['unknown resource type', { resourceType: 'Gadget', id: 'x' }, false],
    ['resource with nothing but its type', { resourceType: 'Device' }, false],
    ['component of a panel with an unknown property', { ...bpPanel, component: [{ ...component, foo: 1 }] }, false],
    ['coding with an unknown property', { ...obs, code: { coding: [{ system: 'http://loinc.org', code: '2708-6', foo: 'x' }] } }, false],
    [
      'bundle entry with neither resource nor request',
      { ...bundle, entry: [{ fullUrl: 'urn:uuid:2dac892f-6459-5ea4-be1f-07fd17619845' }] },
      false,
    ],
    [
      'bundle entry with an invalid resource',
      { ...bundle, entry: [{ resource: { ...obs, status: 5 }, request: { method: 'POST', url: 'Observation' } }] },
      false,
    ],
    ['document bundle without identifier (bdl-9)', { ...bundle, type: 'document', entry: undefined }, false],
  ];
}

describe('fast structural validation, differentially against medplum', function () {
  this.timeout(120_000);
  // Every R4 type: these cases call medplum directly, on Bundles and other types the gateway itself does not validate.
  before(() => initValidation({ allTypes: true }));

  it('proves every resource the gateway produces valid, as medplum does', () => {
    assert.ok(VALID.length + MORE.length > 40, `${VALID.length + MORE.length} resources`);
    for (const [name, r] of [...VALID, ...MORE]) {
      assert.equal(medplum(r), undefined, `medplum: ${name}`);
      assert.equal(fast(r), true, `fast path: ${name} ${JSON.stringify(r)}`);
    }
  });

  it("never says valid where medplum finds an error; validate() then reports exactly medplum's issues", () => {
    const cases: [string, unknown][] = [
      ...VALID.flatMap(([name, r]) => mutations(r).map(([m, c]): [string, unknown] => [`${name}: ${m}`, c])),
      ...targeted().map(([name, c]): [string, unknown] => [name, c]),
    ];
    const unsound: string[] = [];
    let proven = 0;
    let invalid = 0;
    let referred = 0;
    for (const [i, [name, c]] of cases.entries()) {
      if (fast(c)) {
        proven++;
        if (medplum(c) !== undefined) unsound.push(name);
        continue;
      }
      // Not proven: validate() asks medplum and reports its errors as issues (medplum throws them as an
      // OperationOutcome). Checked on one such case in three: each costs two medplum runs.
      if (i % 3) continue;
      const verdict = medplum(c);
      if (verdict === undefined) {
        referred++;
        continue;
      }
      invalid++;
      assert.deepEqual(issuesOrThrown(c), expectedIssues(c, verdict), name);
    }
    assert.deepEqual(unsound, [], 'the fast path said valid where medplum reports an error');
    assert.ok(cases.length > 5000 && proven > 1000 && invalid > 3000, `${cases.length} cases, ${proven} proven, ${invalid} invalid`);
    console.log(
      `      ${cases.length} cases, ${proven} proven valid by the fast path (and by medplum); of a third of the others, ${invalid} invalid for medplum, ${referred} valid but referred to it`,
    );
  });

  it('proves the targeted cases it models, and refers the others to medplum', () => {
    for (const [name, c, proven] of targeted()) assert.equal(fast(c), proven, name);
  });
});

describe('validate() on malformed resources (what a faulty plugin adapter could produce)', () => {
  before(() => initValidation());

  it('reports structural errors as issues, located, instead of throwing', () => {
    const issues = validate({ resourceType: 'Observation', status: 123, code: { text: 'x' } } as never, 'reading[0]');
    assert.equal(issues.length, 1);
    assert.equal(issues[0].severity, 'error');
    assert.deepEqual(issues[0].expression, ['reading[0]: Observation.status']);
  });

  it('does not crash on shapes medplum lets through (an object where an array belongs)', () => {
    for (const o of [
      { resourceType: 'Observation', status: 'final', code: { coding: {} } },
      { resourceType: 'Observation', status: 'final', code: { text: 'x' }, category: {}, component: {} },
    ]) {
      assert.doesNotThrow(() => validate(o as never), JSON.stringify(o));
    }
  });
});
