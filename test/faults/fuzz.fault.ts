/**
 * Property-based fuzzing (fast-check) of what reads untrusted bytes, 15,000 cases each (10,000 of the richer kind):
 *   - the HL7v2 path of an MLLP frame: bytes → character set → messages → MSH → parse → translation (ORU, ADT) →
 *     validation → ACK, on arbitrary bytes and text and on real PCD-01 / ADT messages mutated (delimiters, escapes,
 *     charsets, truncation, repeated and reordered segments, hostile field values);
 *   - the measurements format: arbitrary JSON and well-shaped readings with hostile values → translation and
 *     validation;
 *   - the mapping engine: every mapping in mappings/ against arbitrary JSON and its own samples mutated, and mutated
 *     templates at registration (compile, terminology check, then the mapping's samples).
 * The property: the only things thrown are the gateway's own refusals (GatewayError, with its OperationOutcome;
 * Hl7ParseError; MappingError at registration), never a TypeError, a RangeError or a library's error, and no case
 * takes long (the slowest is printed; a bound of 2 s per case catches a hang or catastrophic backtracking without
 * failing on a busy machine).
 *
 * FAULTS_FUZZ_SEED replays a run (fast-check prints the seed and the shrunk counterexample of a failure);
 * FAULTS_FUZZ_RUNS changes the number of cases (default 10,000); FAULTS_FUZZ_VERBOSE=1 prints the commonest refusals
 * and the slowest case of each property.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import type { Reading, TranslationContext } from '../../src/core/contract.js';
import { GatewayError } from '../../src/core/errors.js';
import { acceptedCodes } from '../../src/adapters/measurements-format.js';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { createMappingAdapter, loadMappingsDir, MappingError } from '../../src/adapters/mapping/index.js';
import { initValidation, validateReadings } from '../../src/fhir/validate.js';
import { buildAck } from '../../src/hl7v2/ack.js';
import { createHl7Adapter, unsupportedReason } from '../../src/hl7v2/adapter.js';
import {
  decodeBytes,
  Hl7ParseError,
  loadHl7Package,
  parseMessage,
  readHeader,
  SUPPORTED_CHARSETS,
  splitMessages,
} from '../../src/hl7v2/parse.js';
import { REPO_ROOT } from '../helpers/harness.js';

const RUNS = Number(process.env.FAULTS_FUZZ_RUNS ?? 10000);
const SEED = process.env.FAULTS_FUZZ_SEED ? Number(process.env.FAULTS_FUZZ_SEED) : undefined;
const CASE_BOUND_MS = 2000;
const CTX: TranslationContext = { deviceIdentifierSystem: 'urn:fuzz:device', patientIdentifierSystem: 'urn:fuzz:mrn' };

/** An error the gateway turns into a clear refusal (OperationOutcome, ACK AE/AR, registration issues). */
const isOwnRefusal = (err: unknown) => err instanceof GatewayError || err instanceof Hl7ParseError || err instanceof MappingError;

/** Runs `check` on each case; records the slowest; anything but the gateway's own refusal fails the property. */
function fuzz<T>(name: string, arb: fc.Arbitrary<T>, check: (input: T) => void, runs = RUNS) {
  const figures = { cases: 0, refused: 0, accepted: 0, slowestMs: 0 };
  let slowest: T | undefined;
  const reasons = new Map<string, number>();
  fc.assert(
    fc.property(arb, (input) => {
      const t0 = performance.now();
      try {
        check(input);
        figures.accepted++;
      } catch (err) {
        if (!isOwnRefusal(err)) throw err;
        figures.refused++;
        if (process.env.FAULTS_FUZZ_VERBOSE) {
          const k = String((err as Error).message)
            .replace(/'[^']*'/g, "'…'")
            .replace(/\d+/g, 'N')
            .slice(0, 90);
          reasons.set(k, (reasons.get(k) ?? 0) + 1);
        }
      } finally {
        figures.cases++;
      }
      const ms = performance.now() - t0;
      if (ms > figures.slowestMs && process.env.FAULTS_FUZZ_VERBOSE) slowest = input;
      figures.slowestMs = Math.max(figures.slowestMs, ms);
      assert.ok(ms < CASE_BOUND_MS, `one case took ${ms.toFixed(0)} ms`);
    }),
    { numRuns: runs, seed: SEED },
  );
  console.log(
    `      ${name}: ${figures.cases} cases, ${figures.accepted} accepted, ${figures.refused} refused, slowest ${figures.slowestMs.toFixed(1)} ms`,
  );
  if (reasons.size)
    console.log(
      [...reasons]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 6)
        .map(([k, n]) => `        ${n} × ${k}`)
        .join('\n'),
    );
  if (slowest !== undefined)
    console.log(
      `      slowest case: ${Buffer.isBuffer(slowest) ? JSON.stringify(slowest.toString('latin1').slice(0, 600)) : JSON.stringify(slowest)?.slice(0, 600)}`,
    );
  assert.ok(figures.cases >= runs);
  return figures;
}

const validated = (readings: Reading[]) => {
  const issues = validateReadings(readings);
  assert.ok(Array.isArray(issues));
  return readings;
};

// ---------------------------------------------------------------------------------------------------------------
// HL7v2

const hl7 = createHl7Adapter();

/** What the MLLP session does with one frame, minus the queue: every step that reads the sender's bytes. */
function hl7Frame(bytes: Buffer): void {
  const { text } = decodeBytes(bytes);
  const { messages } = splitMessages(text);
  for (const m of messages) {
    let header: ReturnType<typeof readHeader> | undefined;
    try {
      header = readHeader(m);
      if (unsupportedReason(header.messageCode, header.triggerEvent)) {
        buildAck({ header, code: 'AR', errors: [{ code: 200, text: 'not supported' }] });
        continue;
      }
      const msg = parseMessage(m);
      validated(hl7.translate({ body: msg, channel: 'mllp', receivedAt: new Date().toISOString() }, CTX));
      buildAck({ header, code: 'AA' });
    } catch (err) {
      // The refusal must still make an ACK (with the sender's own delimiters, when MSH could be read).
      if (isOwnRefusal(err))
        buildAck({ header: header ?? (err as Hl7ParseError).header, code: 'AE', errors: [{ code: 207, text: String(err) }] });
      throw err;
    }
  }
}

const FIXTURES = join(REPO_ROOT, 'test/hl7v2/fixtures');
const hl7Fixtures = readdirSync(FIXTURES)
  .filter((n) => n.endsWith('.hl7'))
  .map((n) => readFileSync(join(FIXTURES, n), 'latin1'));

/** Field values a hostile or broken sender writes. */
const hostileValue = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom(
    '',
    '""',
    '\\',
    '\\X00\\',
    '\\XZZ\\',
    '\\X\\',
    '\\E\\\\F\\\\S\\\\T\\\\R\\',
    '\\H\\\\N\\',
    '\\.br\\',
    '\\Cxxyy\\',
    '\\M\\',
    '~'.repeat(500),
    '^'.repeat(300),
    '&'.repeat(300),
    '|'.repeat(100),
    '-1e308',
    '1e309',
    'NaN',
    '99999999999999999999999',
    '20261301256199+9999',
    '0000',
    '9999',
    '\u0000',
    '\ud800',
    '\u202e',
  ),
);

type Mutation =
  | { op: 'field'; seg: number; field: number; value: string }
  | { op: 'insert'; at: number; text: string }
  | { op: 'delete'; at: number; len: number }
  | { op: 'truncate'; at: number }
  | { op: 'dupSegment'; seg: number; times: number }
  | { op: 'swapSegments'; a: number; b: number }
  | { op: 'delimiters'; chars: string }
  | { op: 'charset'; name: string }
  | { op: 'newlines'; style: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('field' as const), seg: fc.nat(12), field: fc.nat(25), value: hostileValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), text: hostileValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.nat(40) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('dupSegment' as const), seg: fc.nat(12), times: fc.integer({ min: 1, max: 200 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('swapSegments' as const), a: fc.nat(12), b: fc.nat(12) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delimiters' as const), chars: fc.string({ minLength: 0, maxLength: 6 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('charset' as const),
      name: fc.oneof(fc.constantFrom(...SUPPORTED_CHARSETS), fc.string({ maxLength: 20 })),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('newlines' as const), style: fc.constantFrom('\n', '\r\n', '\n\r', '\r\r', '') }) },
);

function mutate(text: string, m: Mutation): string {
  const segs = text.split(/\r\n|\r|\n/).filter((s) => s);
  const at = (n: number) => n % Math.max(1, text.length + 1);
  switch (m.op) {
    case 'field': {
      const s = segs[m.seg % segs.length];
      if (!s) return text;
      const f = s.split('|');
      f[Math.min(m.field, f.length)] = m.value;
      segs[m.seg % segs.length] = f.join('|');
      return segs.join('\r');
    }
    case 'insert':
      return text.slice(0, at(m.at)) + m.text + text.slice(at(m.at));
    case 'delete':
      return text.slice(0, at(m.at)) + text.slice(at(m.at) + m.len);
    case 'truncate':
      return text.slice(0, at(m.at));
    case 'dupSegment': {
      const s = segs[m.seg % segs.length];
      segs.splice(m.seg % segs.length, 0, ...Array(m.times).fill(s));
      return segs.join('\r');
    }
    case 'swapSegments': {
      const a = m.a % segs.length;
      const b = m.b % segs.length;
      [segs[a], segs[b]] = [segs[b], segs[a]];
      return segs.join('\r');
    }
    case 'delimiters':
      return text.startsWith('MSH') ? `MSH${m.chars}${text.slice(8)}` : text;
    case 'charset': {
      const f = (segs[0] ?? '').split('|');
      f[17] = m.name;
      segs[0] = f.join('|');
      return segs.join('\r');
    }
    case 'newlines':
      return segs.join(m.style);
  }
}

/** A real message, mutated, in one of the byte encodings a sender may use. */
const mutatedHl7 = fc
  .record({
    base: fc.constantFrom(...hl7Fixtures),
    mutations: fc.array(mutation, { minLength: 1, maxLength: 6 }),
    encoding: fc.constantFrom('utf8', 'latin1', 'utf16le-bom', 'utf8-bom') as fc.Arbitrary<string>,
  })
  .map(({ base, mutations, encoding }) => {
    const text = mutations.reduce(mutate, base);
    if (encoding === 'latin1') return Buffer.from(text, 'latin1');
    if (encoding === 'utf16le-bom') return Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    if (encoding === 'utf8-bom') return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]);
    return Buffer.from(text, 'utf8');
  });

/** Arbitrary bytes and text, some starting like a message. */
const arbitraryHl7 = fc.oneof(
  fc.uint8Array({ maxLength: 2000 }).map((a) => Buffer.from(a)),
  fc.string({ unit: 'binary', maxLength: 2000 }).map((s) => Buffer.from(s, 'utf8')),
  fc.tuple(fc.string({ maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 2000 })).map(([d, s]) => Buffer.from(`MSH${d}${s}`, 'utf8')),
  fc
    .array(
      fc.tuple(
        fc.constantFrom('MSH', 'PID', 'OBR', 'OBX', 'EVN', 'PV1', 'FHS', 'BHS', 'BTS', 'FTS', 'ZZZ'),
        fc.array(hostileValue, { maxLength: 20 }),
      ),
      {
        maxLength: 12,
      },
    )
    .map((segs) => Buffer.from(segs.map(([n, f]) => `${n}|${n === 'MSH' ? '^~\\&|' : ''}${f.join('|')}`).join('\r'), 'utf8')),
);

describe('fault suite: fuzzing (fast-check)', function () {
  this.timeout(120000);
  before(async () => {
    initValidation();
    // The gateway loads the hl7v2 package on demand (hl7v2/parse.ts); the frames here are parsed synchronously.
    await loadHl7Package();
  });

  it(`the HL7v2 path of a frame: ${RUNS / 2} arbitrary byte strings and ${RUNS} mutated PCD-01 / ADT messages`, () => {
    fuzz('HL7v2, arbitrary bytes', arbitraryHl7, hl7Frame, RUNS / 2);
    const f = fuzz('HL7v2, mutated messages', mutatedHl7, hl7Frame);
    assert.ok(
      f.accepted > RUNS / 50,
      `few mutated messages were still accepted (${f.accepted}): the generator mutates too much to test translation`,
    );
  });

  it(`the measurements format: ${RUNS / 2} arbitrary JSON values and ${RUNS} well-shaped readings with hostile values`, () => {
    const translate = (body: unknown) =>
      validated(measurementsAdapter.translate({ body, channel: 'http', receivedAt: new Date().toISOString() }, CTX));
    fuzz('measurements, arbitrary JSON', fc.jsonValue(), translate, RUNS / 2);
    // Mostly well-formed fields (so that translation and validation run), each sometimes hostile.
    const codes = acceptedCodes().filter((c) => c.unit);
    const either = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>) =>
      fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: bad as fc.Arbitrary<T | U> });
    const measurement = fc.constantFrom(...codes).chain((c) =>
      fc.record(
        {
          code: either(fc.constant(c.mdc ? c.code : { system: 'http://loinc.org', code: c.loinc!.code }), fc.jsonValue()),
          value: either(
            fc.double({ min: 0, max: 300, noNaN: true }),
            fc.oneof(fc.double(), fc.constantFrom(-0, 1e308, -1e308), fc.jsonValue()),
          ),
          unit: either(
            fc.constant(c.unit!),
            fc.oneof(fc.constantFrom('%', 'bpm', 'mmHg', 'kPa', 'degF', '[degF]', 'lb', ''), fc.string({ maxLength: 12 })),
          ),
        },
        { requiredKeys: ['code', 'value', 'unit'] },
      ),
    );
    const recent = fc.integer({ min: Date.now() - 86400000 * 30, max: Date.now() });
    const timestamp = either(
      fc.oneof(
        recent.map((t) => new Date(t).toISOString()),
        recent,
        recent.map((t) => Math.floor(t / 1000)),
      ),
      fc.oneof(
        fc.date({ noInvalidDate: false }).map((d) => (Number.isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString())),
        fc.double(),
        fc.constantFrom('9999-12-31T23:59:59Z', '0000-01-01T00:00:00Z', '2026-02-30T10:00:00+14:00', '1e21', ''),
        fc.string({ maxLength: 30 }),
      ),
    );
    const id = either(
      fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$/),
      fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.jsonValue()),
    );
    const reading = fc.record(
      {
        deviceId: id,
        patientId: id,
        manufacturer: fc.string({ maxLength: 20 }),
        model: fc.string({ maxLength: 20 }),
        timestamp,
        measurements: either(fc.array(measurement, { minLength: 1, maxLength: 3 }), fc.jsonValue()),
      },
      { requiredKeys: ['deviceId', 'timestamp', 'measurements'] },
    );
    const f = fuzz('measurements, hostile readings', fc.oneof(reading, fc.array(reading, { minLength: 1, maxLength: 3 })), translate);
    assert.ok(f.accepted > RUNS / 50, `few well-shaped readings were accepted (${f.accepted}): the generator tests little but refusals`);
  });

  it(`the mapping engine: every mapping in mappings/ against ${RUNS} payloads, and ${RUNS / 2} mutated templates at registration`, () => {
    const loaded = loadMappingsDir(join(REPO_ROOT, 'mappings'));
    const mappings = readdirSync(join(REPO_ROOT, 'mappings')).map((id) => {
      const dir = join(REPO_ROOT, 'mappings', id);
      const json = (f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as unknown;
      const samples = readdirSync(join(dir, 'samples')).map((s) => json(`samples/${s}`));
      return { id, device: json('devicecontent.json'), fhir: json('fhirmapping.json'), samples };
    });
    const adapters = new Map(loaded.adapters.map((a) => [a.id, a]));
    assert.equal(adapters.size, mappings.length, `every sample mapping loads: ${JSON.stringify(loaded.errors ?? '')}`);

    /** A JSON value with one node replaced, removed or retyped (the path chosen by the numbers). */
    const replaceAt = (v: unknown, path: number[], replacement: unknown, remove: boolean): unknown => {
      if (!path.length || v === null || typeof v !== 'object') return replacement;
      const keys = Object.keys(v);
      if (!keys.length) return replacement;
      const k = keys[path[0] % keys.length];
      const copy: Record<string, unknown> | unknown[] = Array.isArray(v) ? [...v] : { ...(v as Record<string, unknown>) };
      if (remove && path.length === 1) {
        if (Array.isArray(copy)) copy.splice(Number(k), 1);
        else delete copy[k];
        return copy;
      }
      (copy as Record<string, unknown>)[k] = replaceAt((v as Record<string, unknown>)[k], path.slice(1), replacement, remove);
      return copy;
    };
    const nodeMutation = fc.record({
      path: fc.array(fc.nat(), { minLength: 1, maxLength: 7 }),
      value: fc.oneof(fc.jsonValue({ maxDepth: 2 }), hostileValue),
      remove: fc.boolean(),
    });
    const mutateJson = (v: unknown, ms: { path: number[]; value: unknown; remove: boolean }[]) =>
      ms.reduce((acc, m) => replaceAt(acc, m.path, m.value, m.remove), v);

    const payload = fc.oneof(
      fc.tuple(fc.constantFrom(...mappings), fc.jsonValue()).map(([m, body]) => ({ m, body })),
      fc
        .tuple(fc.constantFrom(...mappings), fc.array(nodeMutation, { minLength: 1, maxLength: 4 }))
        .chain(([m, ms]) => fc.constantFrom(...m.samples).map((s) => ({ m, body: mutateJson(s, ms) }))),
    );
    const run = ({ m, body }: { m: (typeof mappings)[number]; body: unknown }) =>
      validated(adapters.get(m.id)!.translate({ body, channel: 'http', receivedAt: new Date().toISOString() }, CTX));
    fuzz('mapping engine, payloads', payload, run);

    /** Expressions a vendor might write, or a hostile one (the safe evaluators must refuse or bound them). */
    const expression = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.constantFrom(
        '$',
        '$..*',
        '$..[?(@.spo2 != null)]',
        '$.Body.readings[?(@.spo2 > 90)]',
        '$.matchedToken.time',
        '$[?(@.constructor)]',
        '$..[?(@.__proto__)]',
        '$.x[(@.length-1)]',
        '$.readings[-1:]',
        'readings[?spo2 > `90`]',
        'to_string(@)',
        'length(@)',
        'max_by(readings, &spo2)',
        '@',
        '{',
        '[?(',
      ),
    );
    // Either one or two nodes replaced or removed, or one expression (a string leaf) rewritten.
    const template = fc
      .tuple(
        fc.constantFrom(...mappings),
        fc.array(nodeMutation, { maxLength: 2 }),
        fc.array(fc.record({ path: fc.array(fc.nat(), { minLength: 4, maxLength: 6 }), value: expression, remove: fc.constant(false) }), {
          maxLength: 1,
        }),
        fc.boolean(),
      )
      .map(([m, ms, exprs, fhirSide]) => ({
        m,
        device: fhirSide ? m.device : mutateJson(m.device, [...ms, ...exprs]),
        fhir: fhirSide ? mutateJson(m.fhir, [...ms, ...exprs]) : m.fhir,
      }));
    const register = ({ m, device, fhir }: { m: (typeof mappings)[number]; device: unknown; fhir: unknown }) => {
      const a = createMappingAdapter({ id: `fuzz-${m.id}`, description: 'fuzz', deviceMapping: device, fhirMapping: fhir });
      for (const body of m.samples) {
        try {
          validated(a.translate({ body, channel: 'http', receivedAt: new Date().toISOString() }, CTX));
        } catch (err) {
          if (!isOwnRefusal(err)) throw err;
        }
      }
    };
    const f = fuzz('mapping engine, mutated templates', template, register, RUNS / 2);
    assert.ok(f.accepted > 0 && f.refused > 0, 'the mutations should leave some templates valid and break others');
  });
});
