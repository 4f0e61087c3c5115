/**
 * The gateway's own reading format (the `measurements` adapter) described for the people who send it: a JSON Schema
 * (served at GET /formats/measurements/schema.json) and the table of every code it accepts with its LOINC, MDC and
 * unit (GET /formats/measurements/codes, and docs/codes.md, generated from the same table the adapter resolves with).
 */
import { DEFAULT_READING_CHECKS, PLAUSIBLE_RANGES, rangeOf } from '../fhir/plausibility.js';
import { LOINC_VITALS, MDC_METRICS } from '../fhir/terminology.js';

const reading = {
  type: 'object',
  required: ['timestamp', 'measurements'],
  properties: {
    deviceId: {
      type: 'string',
      minLength: 1,
      description: 'The device. On MQTT it may be left out: the topic names the device.',
    },
    manufacturer: { type: 'string' },
    model: { type: 'string' },
    patientId: {
      type: 'string',
      description: "The patient's identifier (PATIENT_IDENTIFIER_SYSTEM). Absent: the device's assigned patient.",
    },
    timestamp: {
      description: 'When it was measured: ISO 8601 with a time zone, or an epoch time in seconds or milliseconds',
      anyOf: [
        { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:\\d{2})$' },
        { type: 'number', minimum: 100000000 },
        { type: 'string', pattern: '^\\d{9,16}(\\.\\d+)?$' },
      ],
    },
    measurements: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['code', 'value', 'unit'],
        properties: {
          code: {
            description: 'An MDC reference id (MDC_PULS_OXIM_SAT_O2), or { system: "http://loinc.org", code } (see the codes table)',
            anyOf: [
              { type: 'string', minLength: 1 },
              {
                type: 'object',
                required: ['code'],
                properties: { system: { type: 'string' }, code: { type: ['string', 'number'] } },
              },
            ],
          },
          value: { type: 'number' },
          unit: { type: 'string', minLength: 1, description: 'UCUM or a common spelling (bpm, %, mmHg, degC, kg)' },
        },
      },
    },
  },
};

/** JSON Schema (2020-12) of a POST /ingest/measurements body: one reading or an array of readings. */
export const MEASUREMENTS_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'urn:iomt-gateway:schema:measurements',
  title: 'IoMT gateway measurements format',
  description: "One reading, or an array of readings, of the gateway's vendor-neutral format",
  $defs: { reading },
  anyOf: [{ $ref: '#/$defs/reading' }, { type: 'array', minItems: 1, items: { $ref: '#/$defs/reading' } }],
} as const;

export interface AcceptedCode {
  /** What to send as `code`. */
  code: string;
  mdc?: { code: number; refId: string };
  loinc?: { code: string; display: string };
  /** The UCUM unit readings are converted to (when the code has one). */
  unit?: string;
  category: string;
  /** The physiologically possible range (built-in table, fhir/plausibility.ts): values outside it are refused. */
  plausible?: { min: number; max: number; unit: string };
}

/** Every code the measurements format accepts: the MDC metrics, then the LOINC vital signs, each once. */
export function acceptedCodes(): AcceptedCode[] {
  const plausible = (code: { loinc?: string; mdc?: number }) => {
    const r = rangeOf(DEFAULT_READING_CHECKS, code);
    return r ? { plausible: { min: r.min, max: r.max, unit: r.unit } } : {};
  };
  const out: AcceptedCode[] = [...MDC_METRICS.values()].map((m) => ({
    code: m.refId,
    mdc: { code: m.code, refId: m.refId },
    ...(m.loinc ? { loinc: m.loinc } : {}),
    ...(m.ucum ? { unit: m.ucum } : {}),
    category: m.category,
    ...plausible({ loinc: m.loinc?.code, mdc: m.code }),
  }));
  for (const [code, v] of LOINC_VITALS) {
    out.push({
      code: `http://loinc.org|${code}`,
      loinc: { code, display: v.display },
      ...(v.ucum ? { unit: v.ucum } : {}),
      category: 'vital-signs',
      ...plausible({ loinc: code }),
    });
  }
  return out;
}

/** The plausible-range table with its basis, as Markdown (a section of docs/codes.md). */
function plausibilityMarkdown(): string[] {
  return [
    '## Physiologically possible ranges',
    '',
    'A reading whose value lies outside the range of its code is refused (HTTP 422 naming the value, HL7 AE with ERR-2 at',
    'OBX-5). These are bounds of what a living human body can show, set beyond the most extreme values reported in people,',
    'not clinical alarm limits: a value outside them is a device or mapping fault (a sign error, a unit slip, an overflow).',
    'Values in another unit of the same dimension (`[degF]`, `[lb_av]`, `g`, `[in_i]`, `m`, `mm`, `kPa`, glucose in',
    '`mmol/L`) are converted before the comparison; a value in a unit that cannot be compared is left to the unit checks.',
    'A number that is not finite is refused whatever its code; a code without a range is checked for that only.',
    'Override per code with `PLAUSIBILITY_RANGES_FILE` (see [security.md](security.md#patient-integrity-and-plausibility)).',
    '',
    '| code | what | range | basis |',
    '|---|---|---|---|',
    ...PLAUSIBLE_RANGES.map((r) => `| \`${r.key}\` | ${r.what} | ${r.min} to ${r.max} \`${r.unit}\` | ${r.basis} |`),
    '',
  ];
}

/** The codes as a Markdown table (docs/codes.md). */
export function acceptedCodesMarkdown(): string {
  const rows = acceptedCodes().map((c) => {
    const send = c.mdc ? `\`${c.code}\`` : `\`{ "system": "http://loinc.org", "code": "${c.loinc?.code}" }\``;
    const range = c.plausible ? `${c.plausible.min} to ${c.plausible.max} \`${c.plausible.unit}\`` : '';
    return `| ${send} | ${c.mdc ? `${c.mdc.code}` : ''} | ${c.loinc ? `${c.loinc.code} ${c.loinc.display}` : '(none: sent with its MDC code only)'} | ${c.unit ? `\`${c.unit}\`` : ''} | ${c.category} | ${range} |`;
  });
  return [
    '# Accepted codes of the measurements format',
    '',
    'Generated from the terminology table the gateway translates with (`src/fhir/terminology.ts`); also served as JSON at',
    '`GET /formats/measurements/codes`, and the body format as JSON Schema at `GET /formats/measurements/schema.json`.',
    'Regenerate with `node dist/main.js formats --codes > docs/codes.md`. A code not listed here is refused (422).',
    '',
    '| send as `code` | MDC code | LOINC | unit (UCUM) | category | possible range |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
    ...plausibilityMarkdown(),
  ].join('\n');
}
