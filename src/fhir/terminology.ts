/**
 * Terminology: IEEE 11073-10101 (MDC) metric and unit codes, the LOINC codes the FHIR R4 vital-signs profiles require,
 * and UCUM units. Every row comes from the verified reference (MDC code = partition × 65536 + term code, LOINC pairing
 * as published in the HL7 PHD / PoCD IGs or fixed by the R4 profile). A row without `loinc` has no verified LOINC
 * pairing: the gateway then sends the MDC coding alone rather than guess. A wrong code is a patient-safety defect:
 * test/terminology.test.ts checks this table against the profiles in profiles/ and the arithmetic of the codes.
 */

export const MDC_SYSTEM = 'urn:iso:std:iso:11073:10101';
export const LOINC_SYSTEM = 'http://loinc.org';
export const UCUM_SYSTEM = 'http://unitsofmeasure.org';
export const OBSERVATION_CATEGORY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/observation-category';

export const Category = {
  vitalSigns: 'vital-signs',
  laboratory: 'laboratory',
  activity: 'activity',
} as const;
export type Category = (typeof Category)[keyof typeof Category];

export const CATEGORY_DISPLAY: Record<Category, string> = {
  'vital-signs': 'Vital Signs',
  laboratory: 'Laboratory',
  activity: 'Activity',
};

/** Which part of a blood-pressure panel a metric is. */
export type BpRole = 'panel' | 'systolic' | 'diastolic' | 'mean';

export interface MdcMetric {
  refId: string;
  /** 32-bit context-free code (partition × 65536 + term). */
  code: number;
  partition: number;
  term: number;
  display: string;
  loinc?: { code: string; display: string };
  category: Category;
  /** UCUM code the profile expects by default (what device units are normalised towards). */
  ucum?: string;
  /** Blood-pressure family (NONINV, generic, ART, ABP) and role within it. */
  bp?: { family: string; role: BpRole };
}

const L = {
  spo2: { code: '2708-6', display: 'Oxygen saturation in Arterial blood' },
  hr: { code: '8867-4', display: 'Heart rate' },
  bpPanel: { code: '85354-9', display: 'Blood pressure panel with all children optional' },
  sys: { code: '8480-6', display: 'Systolic blood pressure' },
  dia: { code: '8462-4', display: 'Diastolic blood pressure' },
  mean: { code: '8478-0', display: 'Mean blood pressure' },
  temp: { code: '8310-5', display: 'Body temperature' },
  weight: { code: '29463-7', display: 'Body weight' },
  height: { code: '8302-2', display: 'Body height' },
  bmi: { code: '39156-5', display: 'Body mass index (BMI) [Ratio]' },
  head: { code: '9843-4', display: 'Head Occipital-frontal circumference' },
  resp: { code: '9279-1', display: 'Respiratory rate' },
  etco2: { code: '19891-1', display: 'Carbon dioxide [Partial pressure] in Exhaled gas --at end expiration' },
} as const;

type Row = [
  refId: string,
  partition: number,
  term: number,
  loinc: { code: string; display: string } | undefined,
  category: Category,
  ucum: string | undefined,
  bp?: { family: string; role: BpRole },
];

const VS = Category.vitalSigns;
const ROWS: Row[] = [
  ['MDC_PULS_OXIM_SAT_O2', 2, 19384, L.spo2, VS, '%'],
  ['MDC_SAT_O2_ART', 2, 19252, L.spo2, VS, '%'],
  ['MDC_PULS_OXIM_PULS_RATE', 2, 18458, L.hr, VS, '/min'],
  ['MDC_ECG_HEART_RATE', 2, 16770, L.hr, VS, '/min'],
  ['MDC_PULS_RATE_NON_INV', 2, 18474, L.hr, VS, '/min'],
  ['MDC_PRESS_BLD_NONINV', 2, 18948, L.bpPanel, VS, undefined, { family: 'NONINV', role: 'panel' }],
  ['MDC_PRESS_BLD_NONINV_SYS', 2, 18949, L.sys, VS, 'mm[Hg]', { family: 'NONINV', role: 'systolic' }],
  ['MDC_PRESS_BLD_NONINV_DIA', 2, 18950, L.dia, VS, 'mm[Hg]', { family: 'NONINV', role: 'diastolic' }],
  ['MDC_PRESS_BLD_NONINV_MEAN', 2, 18951, L.mean, VS, 'mm[Hg]', { family: 'NONINV', role: 'mean' }],
  ['MDC_PRESS_BLD', 2, 18944, L.bpPanel, VS, undefined, { family: 'BLD', role: 'panel' }],
  ['MDC_PRESS_BLD_SYS', 2, 18945, L.sys, VS, 'mm[Hg]', { family: 'BLD', role: 'systolic' }],
  ['MDC_PRESS_BLD_DIA', 2, 18946, L.dia, VS, 'mm[Hg]', { family: 'BLD', role: 'diastolic' }],
  ['MDC_PRESS_BLD_MEAN', 2, 18947, L.mean, VS, 'mm[Hg]', { family: 'BLD', role: 'mean' }],
  ['MDC_PRESS_BLD_ART', 2, 18960, L.bpPanel, VS, undefined, { family: 'ART', role: 'panel' }],
  ['MDC_PRESS_BLD_ART_SYS', 2, 18961, L.sys, VS, 'mm[Hg]', { family: 'ART', role: 'systolic' }],
  ['MDC_PRESS_BLD_ART_DIA', 2, 18962, L.dia, VS, 'mm[Hg]', { family: 'ART', role: 'diastolic' }],
  ['MDC_PRESS_BLD_ART_MEAN', 2, 18963, L.mean, VS, 'mm[Hg]', { family: 'ART', role: 'mean' }],
  ['MDC_PRESS_BLD_ART_ABP', 2, 18964, L.bpPanel, VS, undefined, { family: 'ART_ABP', role: 'panel' }],
  ['MDC_PRESS_BLD_ART_ABP_SYS', 2, 18965, L.sys, VS, 'mm[Hg]', { family: 'ART_ABP', role: 'systolic' }],
  ['MDC_PRESS_BLD_ART_ABP_DIA', 2, 18966, L.dia, VS, 'mm[Hg]', { family: 'ART_ABP', role: 'diastolic' }],
  ['MDC_PRESS_BLD_ART_ABP_MEAN', 2, 18967, L.mean, VS, 'mm[Hg]', { family: 'ART_ABP', role: 'mean' }],
  ['MDC_TEMP_BODY', 2, 19292, L.temp, VS, 'Cel'],
  ['MDC_MASS_BODY_ACTUAL', 2, 57664, L.weight, VS, 'kg'],
  ['MDC_LEN_BODY_ACTUAL', 2, 57668, L.height, VS, 'cm'],
  ['MDC_RATIO_MASS_BODY_LEN_SQ', 2, 57680, L.bmi, VS, 'kg/m2'],
  ['MDC_CIRCUM_HEAD', 2, 22784, L.head, VS, 'cm'],
  ['MDC_RESP_RATE', 2, 20490, L.resp, VS, '/min'],
  ['MDC_AWAY_RESP_RATE', 2, 20498, L.resp, VS, '/min'],
  ['MDC_TTHOR_RESP_RATE', 2, 20506, L.resp, VS, '/min'],
  ['MDC_CO2_RESP_RATE', 2, 20522, L.resp, VS, '/min'],
  // Not R4 vital signs. LOINC pairings below are only those the reference verified; the others travel as MDC alone.
  ['MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD', 2, 29112, undefined, Category.laboratory, 'mg/dL'],
  ['MDC_CONC_AWAY_CO2_ET', 2, 20636, L.etco2, VS, 'mm[Hg]'],
  ['MDC_AWAY_CO2_ET', 2, 20656, undefined, VS, 'mm[Hg]'],
  ['MDC_BLD_PERF_INDEX', 2, 19416, undefined, VS, '%'],
  ['MDC_PULS_OXIM_PERF_REL', 2, 19376, undefined, VS, '1'],
];

export const MDC_METRICS: ReadonlyMap<string, MdcMetric> = new Map(
  ROWS.map(([refId, partition, term, loinc, category, ucum, bp]) => [
    refId,
    { refId, partition, term, code: partition * 65536 + term, display: refId, loinc, category, ucum, bp },
  ]),
);
const BY_CODE = new Map([...MDC_METRICS.values()].map((m) => [m.code, m]));

/** Looks a metric up by reference id (MDC_...) or by its numeric context-free code. */
export function findMdcMetric(refOrCode: string | number): MdcMetric | undefined {
  if (typeof refOrCode === 'number') return BY_CODE.get(refOrCode);
  const s = refOrCode.trim();
  if (/^\d+$/.test(s)) return BY_CODE.get(Number(s));
  return MDC_METRICS.get(s.toUpperCase());
}

/** LOINC codes the gateway knows as vital signs (those the R4 profiles name), with their MDC-less display. */
export const LOINC_VITALS: ReadonlyMap<string, { display: string; ucum?: string; bp?: BpRole }> = new Map([
  [L.spo2.code, { display: L.spo2.display, ucum: '%' }],
  [L.hr.code, { display: L.hr.display, ucum: '/min' }],
  [L.bpPanel.code, { display: L.bpPanel.display, bp: 'panel' }],
  [L.sys.code, { display: L.sys.display, ucum: 'mm[Hg]', bp: 'systolic' }],
  [L.dia.code, { display: L.dia.display, ucum: 'mm[Hg]', bp: 'diastolic' }],
  [L.mean.code, { display: L.mean.display, ucum: 'mm[Hg]', bp: 'mean' }],
  [L.temp.code, { display: L.temp.display, ucum: 'Cel' }],
  [L.weight.code, { display: L.weight.display, ucum: 'kg' }],
  [L.height.code, { display: L.height.display, ucum: 'cm' }],
  [L.bmi.code, { display: L.bmi.display, ucum: 'kg/m2' }],
  [L.head.code, { display: L.head.display, ucum: 'cm' }],
  [L.resp.code, { display: L.resp.display, ucum: '/min' }],
]);

export const BP_PANEL_LOINC = L.bpPanel;
export const BP_COMPONENT_LOINC = { systolic: L.sys, diastolic: L.dia, mean: L.mean } as const;

/** MDC dimension (unit) codes → UCUM (reference Table 2). Keyed by reference id and by CF code. */
const MDC_UNITS: [refId: string, term: number, ucum: string][] = [
  ['MDC_DIM_PERCENT', 544, '%'],
  ['MDC_DIM_BEAT_PER_MIN', 2720, '/min'],
  ['MDC_DIM_PULS_PER_MIN', 2752, '/min'],
  ['MDC_DIM_PER_MIN', 2528, '/min'],
  ['MDC_DIM_RESP_PER_MIN', 2784, '/min'],
  ['MDC_DIM_MMHG', 3872, 'mm[Hg]'],
  ['MDC_DIM_KILO_PASCAL', 3843, 'kPa'],
  ['MDC_DIM_DEGC', 6048, 'Cel'],
  ['MDC_DIM_FAHR', 4416, '[degF]'],
  ['MDC_DIM_KILO_G', 1731, 'kg'],
  ['MDC_DIM_X_G', 1728, 'g'],
  ['MDC_DIM_MILLI_G', 1746, 'mg'],
  ['MDC_DIM_LB', 1760, '[lb_av]'],
  ['MDC_DIM_CENTI_M', 1297, 'cm'],
  ['MDC_DIM_X_M', 1280, 'm'],
  ['MDC_DIM_INCH', 1376, '[in_i]'],
  ['MDC_DIM_MILLI_G_PER_DL', 2130, 'mg/dL'],
  ['MDC_DIM_MILLI_MOLE_PER_L', 4722, 'mmol/L'],
  ['MDC_DIM_KG_PER_M_SQ', 1952, 'kg/m2'],
  ['MDC_DIM_MILLI_L_PER_HR', 3122, 'mL/h'],
  ['MDC_DIM_MILLI_L', 1618, 'mL'],
  ['MDC_DIM_X_L_PER_MIN', 3072, 'L/min'],
  ['MDC_DIM_CM_H2O', 3904, 'cm[H2O]'],
  ['MDC_DIM_MILLI_VOLT', 4274, 'mV'],
  ['MDC_DIM_DIMLESS', 512, '1'],
  ['MDC_DIM_MIN', 2208, 'min'],
  ['MDC_DIM_HR', 2240, 'h'],
  ['MDC_DIM_X_SEC', 2176, 's'],
];
export const MDC_UNIT_TABLE: ReadonlyMap<string, { refId: string; code: number; ucum: string }> = new Map(
  MDC_UNITS.flatMap(([refId, term, ucum]) => {
    const v = { refId, code: 4 * 65536 + term, ucum };
    return [
      [refId, v],
      [String(v.code), v],
    ] as [string, typeof v][];
  }),
);

/** Device spellings seen in the field → UCUM. Keys are compared case-sensitively first, then lower-cased. */
const UNIT_ALIASES: Record<string, string> = {
  '%': '%',
  percent: '%',
  pct: '%',
  '/min': '/min',
  '1/min': '/min',
  'min-1': '/min',
  bpm: '/min',
  'beats/min': '/min',
  '{beat}/min': '/min',
  '{beats}/min': '/min',
  '{pulse}/min': '/min',
  '{pulses}/min': '/min',
  'breaths/min': '/min',
  '{breath}/min': '/min',
  '{breaths}/min': '/min',
  '{resp}/min': '/min',
  brpm: '/min',
  rpm: '/min',
  'per min': '/min',
  '{count}/min': '/min',
  'mm[Hg]': 'mm[Hg]',
  mmhg: 'mm[Hg]',
  'mm hg': 'mm[Hg]',
  mm_hg: 'mm[Hg]',
  kPa: 'kPa',
  kpa: 'kPa',
  Cel: 'Cel',
  cel: 'Cel',
  degc: 'Cel',
  '°c': 'Cel',
  c: 'Cel',
  celsius: 'Cel',
  '[degF]': '[degF]',
  degf: '[degF]',
  '°f': '[degF]',
  f: '[degF]',
  fahrenheit: '[degF]',
  kg: 'kg',
  g: 'g',
  mg: 'mg',
  '[lb_av]': '[lb_av]',
  lb: '[lb_av]',
  lbs: '[lb_av]',
  cm: 'cm',
  m: 'm',
  mm: 'mm',
  '[in_i]': '[in_i]',
  in: '[in_i]',
  inch: '[in_i]',
  inches: '[in_i]',
  'mg/dL': 'mg/dL',
  'mg/dl': 'mg/dL',
  'mmol/L': 'mmol/L',
  'mmol/l': 'mmol/L',
  'kg/m2': 'kg/m2',
  'kg/m^2': 'kg/m2',
  'kg/m²': 'kg/m2',
  'L/min': 'L/min',
  'l/min': 'L/min',
  mL: 'mL',
  ml: 'mL',
  'mL/h': 'mL/h',
  'ml/h': 'mL/h',
  mV: 'mV',
  mv: 'mV',
  'cm[H2O]': 'cm[H2O]',
  cmh2o: 'cm[H2O]',
  '1': '1',
  '{unitless}': '1',
  unitless: '1',
  '{steps}': '{steps}',
  steps: '{steps}',
  step: '{steps}',
  '{count}': '{count}',
  count: '{count}',
  min: 'min',
  h: 'h',
  s: 's',
  kcal: 'kcal',
};

/** Normalises a device unit spelling, an MDC unit reference id or an MDC unit code to UCUM; undefined if unknown. */
export function toUcum(unit: string): string | undefined {
  const u = unit.trim();
  if (u === '') return undefined;
  const mdc = MDC_UNIT_TABLE.get(u) ?? MDC_UNIT_TABLE.get(u.toUpperCase());
  if (mdc) return mdc.ucum;
  return UNIT_ALIASES[u] ?? UNIT_ALIASES[u.toLowerCase()];
}

/**
 * Exact conversions the gateway applies so that a value fits the unit its profile requires. Only factors that are exact
 * by definition are listed; anything else is refused, not approximated.
 */
const EXACT_CONVERSIONS: Record<string, Record<string, number>> = {
  m: { cm: 100 },
  mm: { cm: 0.1 },
};

/** Converts a value to `target` if it is the same unit or an exact conversion exists. */
export function convertExact(value: number, from: string, target: string): number | undefined {
  if (from === target) return value;
  const f = EXACT_CONVERSIONS[from]?.[target];
  return f === undefined ? undefined : Number((value * f).toPrecision(15));
}
