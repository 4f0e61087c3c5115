/**
 * Differential tests of the parser's fast path against the `hl7v2` package: on every sample (test fixtures and the
 * public samples in ../shared/samples/hl7v2, skipped when absent), on hand-written edge cases, and on generated
 * messages, `parseMessage` (fast path, the package only where the fast path declines) and `parseMessageWithPackage`
 * (always the package) must give the same parsed message, the same translation (or the same refusal), and the same
 * error for malformed input.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { OperationOutcomeIssue } from 'fhir/r4';
import fc from 'fast-check';
import type { TranslationContext } from '../../src/core/contract.js';
import { buildAck, issuesToErrors } from '../../src/hl7v2/ack.js';
import { hl7v2Adapter } from '../../src/hl7v2/adapter.js';
import { valueText } from '../../src/hl7v2/oru/values.js';
import {
  DEFAULT_PARSE_LIMITS,
  decodeBytes,
  type Hl7Message,
  type Hl7Segment,
  isNormalised,
  normaliseSegments,
  type ParseOptions,
  parseMessage,
  parseMessageFast,
  parseMessageWithPackage,
  readHeader,
  splitMessages,
  loadHl7Package,
} from '../../src/hl7v2/parse.js';
import { REPO_ROOT } from '../helpers/harness.js';

const FIXTURES = resolve(REPO_ROOT, 'test/hl7v2/fixtures');
const SAMPLES = resolve(REPO_ROOT, '../shared/samples/hl7v2');
const ctx: TranslationContext = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:mrn' };

type Outcome = { ok: Hl7Message } | { error: { name: string; message: string; code?: number; location?: unknown; controlId?: string } };

function outcome(fn: () => Hl7Message): Outcome {
  try {
    return { ok: fn() };
  } catch (e) {
    const err = e as { name: string; message: string; code?: number; location?: unknown; header?: { controlId: string } };
    return { error: { name: err.name, message: err.message, code: err.code, location: err.location, controlId: err.header?.controlId } };
  }
}

function translation(msg: Hl7Message): { readings?: unknown; refused?: string; issues?: OperationOutcomeIssue[] } {
  try {
    return { readings: hl7v2Adapter.translate({ body: msg, channel: 'test', receivedAt: '2026-11-23T10:00:00Z' }, ctx) };
  } catch (e) {
    return { refused: (e as Error).message, issues: (e as { outcome?: { issue: OperationOutcomeIssue[] } }).outcome?.issue };
  }
}

/** The ACK the message gets after translation (fixed time and control id, so that two runs compare). */
function ackAfter(msg: Hl7Message): string {
  const t = translation(msg);
  const fixed = { now: new Date('2026-11-23T10:00:00Z'), controlId: 'ACK-1' };
  if (t.readings) return buildAck({ header: msg.header, code: 'AA', ...fixed });
  return buildAck({ header: msg.header, code: 'AE', errors: issuesToErrors(t.issues ?? []), ...fixed });
}

/** Asserts that the fast path and the package agree on this message; returns whether the fast path took it. */
function assertSame(text: string, options: ParseOptions = {}, label = JSON.stringify(text.slice(0, 80))): boolean {
  const fast = outcome(() => parseMessage(text, options));
  const pkg = outcome(() => parseMessageWithPackage(text, options));
  assert.deepEqual(fast, pkg, `parse differs: ${label}`);
  if ('ok' in fast && 'ok' in pkg) {
    assert.deepEqual(translation(fast.ok), translation(pkg.ok), `translation differs: ${label}`);
    assert.equal(ackAfter(fast.ok), ackAfter(pkg.ok), `ACK differs: ${label}`);
  }
  return 'ok' in fast && parseMessageFast(text, options) !== undefined;
}

function corpus(): { name: string; text: string; charset: string }[] {
  const out: { name: string; text: string; charset: string }[] = [];
  for (const dir of [FIXTURES, SAMPLES]) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.hl7'))) {
      const { text, charset } = decodeBytes(readFileSync(resolve(dir, f)));
      splitMessages(text).messages.forEach((m, i) => out.push({ name: `${f}#${i + 1}`, text: m, charset }));
    }
  }
  return out;
}

const H = 'MSH|^~\\&|APP|FAC|RAPP|RFAC|20261123101500+0100||ORU^R01^ORU_R01|C-1|P|2.6';

describe('hl7v2 parse: fast path vs the hl7v2 package (differential)', () => {
  // Loaded on demand in the gateway (parse.ts); these tests parse messages the fast path declines.
  before(() => loadHl7Package());

  it('gives the same message, translation and ACK on every fixture', () => {
    const names = readdirSync(FIXTURES);
    const all = corpus().filter((c) => names.includes(c.name.split('#')[0]));
    let fast = 0;
    for (const c of all) if (assertSame(c.text, { charset: c.charset }, c.name)) fast++;
    assert.ok(all.length >= 7, `fixtures found: ${all.length}`);
    // The fast path must actually take ordinary messages (it declines only for dictionary-dependent cases).
    assert.ok(fast >= all.length - 2, `fast path took ${fast} of ${all.length}`);
  });

  it('a header read already is taken as readHeader would give it, and only for the text it was read from', () => {
    for (const c of corpus()) {
      const plain = parseMessage(c.text, { charset: c.charset });
      assert.deepEqual(parseMessage(c.text, { charset: c.charset, header: readHeader(c.text) }), plain, c.name);
      // A text that is not yet normalised is read again once normalised: a header given for it is not used.
      const lf = c.text.replaceAll('\r', '\n');
      const wrong = { ...readHeader(lf), controlId: 'NOT-THIS-ONE' };
      assert.deepEqual(parseMessage(lf, { charset: c.charset, header: wrong }), parseMessage(lf, { charset: c.charset }), `${c.name} (LF)`);
    }
  });

  it("the parsed text without its last CR is the message's segments joined by CR (the ACK cache's content hash)", () => {
    for (const c of corpus())
      for (const [form, text] of [
        ['CR', c.text],
        ['LF', c.text.replaceAll('\r', '\n')],
        ['CRLF', c.text.replaceAll('\r', '\r\n')],
        ['no last CR', c.text.replace(/\r$/, '')],
      ]) {
        const parsed = parseMessage(text, { charset: c.charset }).text;
        assert.equal(parsed.at(-1), '\r', `${c.name} (${form})`);
        assert.equal(parsed.slice(0, -1), normaliseSegments(text).join('\r'), `${c.name} (${form})`);
      }
  });

  it('gives the same message, translation and ACK on every public sample', function () {
    if (!existsSync(SAMPLES)) this.skip();
    const samples = corpus().filter((c) => readdirSync(SAMPLES).includes(c.name.split('#')[0]));
    assert.ok(samples.length >= 10);
    for (const c of samples) {
      assertSame(c.text, { charset: c.charset }, c.name);
      // The LF form, as a sender might write it, too.
      assertSame(c.text.replaceAll('\r', '\n'), { charset: c.charset }, `${c.name} (LF)`);
    }
  });

  const cases: [string, string][] = [
    [
      'escapes \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X41\\ \\.br\\ \\H\\',
      `${H}\rPID|||1||Sm\\F\\i\\S\\t\\T\\h\\R\\x\\E\\^Jo\\X41\\n\\.br\\b\\H\\c\\N\\\r`,
    ],
    ['an unterminated escape (data, kept as sent)', `${H}\rNTE|1||a\\b|\\\r`],
    ['unterminated and unknown escapes', `${H}\rNTE|1||a\\Zxx\\b\\Cxxyy\\c\\.sp2\\d\\.fi\\e\\Xzz\\f\\ok\r`],
    ['\\Xhh\\ in 8859/1', `MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.5|||||8859/1\rNTE|1||Gr\\XF6\\\\XDF\\e\r`],
    ['repetitions, components, sub-components', `${H}\rPID|||A^^^X&1.2&ISO^MR~B^^^Y^PI~~||F^G^^^^^L~A^B\r`],
    ['empty leading and trailing sub-components', `${H}\rOBX|1|CWE|&&x&^&a&||&^^&&|\r`],
    ['explicit nulls', `${H}\rPID|||""||""^""~""|""|\r`],
    ['a sub-component that is exactly "" (dictionary-dependent: the package decides)', `${H}\rPID|||1^^^A&""&ISO||x&""\r`],
    ['custom delimiters', 'MSH#!$*@#A#B#####ORU!R01#2#P#2.5\rPID###1$2##Sm*F*x*S*y!Jo@hn*E**T*\rNTE#1##C:\\t\\emp\r'],
    ['a backslash as data with a custom escape', `MSH|^~#&|A|B|||20260101||ORU^R01|1|P|2.5\rOBX|1|ST|X||C:\\temp #F# x\\F\\\r`],
    ['Z segments and segments without fields', `${H}\rZXY\rZAB|\rZCD|||\rPID|\r`],
    ['a second MSH inside the message', `${H}\rMSH|^~\\&|X\rMSH\rPID|1\r`],
    ['private-use characters in the data', `${H}\rNTE|1||a\ue000b\ue001c\\E\\\r`],
    ['an unknown version', `MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|9.9\rPID|||1\r`],
    ['version with components', `MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.5^DEU&&ISO\rPID|||1\r`],
    ['a lower-case segment id', `${H}\rpid|||1\r`],
    ['a segment id of two letters', `${H}\rPI|||1\r`],
    ['a long segment id', `${H}\rPIDX|||1\r`],
    ['a segment id that names an Object property', `${H}\r__proto__|1|2\r`],
    ['no MSH', 'PID|||1\r'],
    ['MSH without encoding characters', 'MSH|\rPID|1\r'],
    ['MSH-2 with repeated delimiters', 'MSH|^^\\&|A|B|||20260101||ORU^R01|1|P|2.5\r'],
    ['MSH-9 missing', 'MSH|^~\\&|A|B|||20260101|||1|P|2.5\r'],
    ['MSH-10 missing', 'MSH|^~\\&|A|B|||20260101||ORU^R01||P|2.5\r'],
    ['blank lines, leading blanks, MLLP bytes, CRLF', `\u000b${H}\r\n\r\n  PID|||1\n\tOBX|1|NM|X||5\u001c\r`],
  ];
  for (const [label, text] of cases) {
    it(`agrees on ${label}`, () => {
      assertSame(text);
      assertSame(text, { charset: '8859/1' });
    });
  }

  it('takes ordinary messages itself and hands dictionary-dependent ones to the package', () => {
    const text = (label: string) => cases.find(([l]) => l.startsWith(label))?.[1] ?? assert.fail(label);
    assert.ok(parseMessageFast(text('escapes')));
    assert.ok(parseMessageFast(text('repetitions')));
    assert.ok(parseMessageFast(text('custom delimiters')));
    assert.equal(parseMessageFast(text('a sub-component that is exactly')), undefined, 'a "" sub-component');
    assert.equal(parseMessageFast(text('private-use')), undefined, 'private-use characters');
    assert.equal(parseMessageFast(text('a lower-case segment id')), undefined, 'a segment id the package may refuse');
  });

  it('keeps an unterminated escape character as data on both paths', () => {
    const text = `${H}\rNTE|1||a\\b|\\\rZZ1|x\\\r`;
    for (const m of [parseMessage(text), parseMessageWithPackage(text)]) {
      assert.deepEqual(m.segments[1].fields.slice(3), [[[['a\\b']]], [[['\\']]]]);
      assert.deepEqual(m.segments[2].fields[1], [[['x\\']]]);
    }
  });

  it('refuses over the parser limits before either path runs, with the same error', () => {
    const many = `${H}\rOBX|1|NA|X||${Array.from({ length: 50 }, (_, i) => i).join('^')}\r`;
    const limits = { segments: 10, fields: 20, repetitions: 5, components: 10, subComponents: 5, elements: 1000 };
    const fast = outcome(() => parseMessage(many, { limits }));
    assert.ok('error' in fast && fast.error.code === 207 && /HL7_MAX_COMPONENTS/.test(fast.error.message));
    assert.deepEqual(
      fast,
      outcome(() => parseMessageWithPackage(many, { limits })),
    );
  });

  it('agrees on generated messages (delimiters, escapes, nulls, odd segment ids)', () => {
    fc.assert(
      fc.property(generatedMessage, (text) => {
        assertSame(text);
      }),
      { numRuns: 400 },
    );
  });

  it('refuses generated messages over small parser limits as checkLimits does, and takes those under them as without limits', () => {
    // The fast path counts as it splits; the package path runs checkLimits in full first (see parseWith).
    // checkLimits counts MSH-2 of an MSH after the first (and only there):
    const limits5 = { ...DEFAULT_PARSE_LIMITS, components: 5 };
    const second = `${H}\rMSH|^^^^^^^^^^|x\r`;
    assert.ok('error' in outcome(() => parseMessageWithPackage(second, { limits: limits5 })));
    assert.deepEqual(
      outcome(() => parseMessage(second, { limits: limits5 })),
      outcome(() => parseMessageWithPackage(second, { limits: limits5 })),
    );
    assert.ok(parseMessageFast(`${H}\rMSH|^^^^|x\r`, { limits: limits5 }), 'taken by the fast path when within the limits');
    const n = fc.integer({ min: 1, max: 12 });
    const limits = fc.record({
      segments: n,
      fields: n,
      repetitions: n,
      components: n,
      subComponents: n,
      elements: fc.integer({ min: 1, max: 80 }),
    });
    fc.assert(
      fc.property(generatedMessage, limits, (text, l) => {
        assertSame(text, { limits: l });
        const fast = outcome(() => parseMessageFast(text, { limits: l }) as Hl7Message);
        const full = outcome(() => parseMessageWithPackage(text, { limits: l }));
        if ('error' in fast || ('error' in full && full.error.code === 207)) assert.deepEqual(fast, full);
        else if (fast.ok !== undefined) assert.deepEqual(fast.ok, parseMessageFast(text));
        else assert.equal(parseMessageFast(text), undefined, 'a message within the limits is taken as without limits');
      }),
      { numRuns: 3000 },
    );
  });
});

const generatedMessage = (() => {
  const piece = fc.constantFrom(
    'a',
    'B',
    '1',
    ' ',
    '|',
    '^',
    '~',
    '&',
    '\\',
    '""',
    '\\F\\',
    '\\S\\',
    '\\X4142\\',
    '\\E\\',
    'é',
    '\r',
    '\n',
    'OBX|',
    'Z1',
  );
  const body = fc.array(piece, { maxLength: 60 }).map((p) => p.join(''));
  const header = fc.constantFrom(H, 'MSH|^~\\&|A|B|||20260101||ADT^A01|9|P|2.3.1', 'MSH#!$*@#A#B#####ORU!R01#2#P#2.5');
  return fc
    .tuple(header, fc.array(fc.tuple(fc.constantFrom('PID', 'OBX', 'ZZ1', 'NTE', 'pid', 'MSH', 'OBR'), body), { maxLength: 6 }))
    .map(([h, segs]) => `${h}\r${segs.map(([id, b]) => `${id}|${b}`).join('\r')}\r`);
})();

/** valueText as first written (maps, joins and a regular expression per repetition): the reference for the faster one. */
function referenceValueText(obx: Hl7Segment, compSep: string): string | undefined {
  const reps = obx.fields[5] ?? [];
  const t = reps
    .map((rep) =>
      rep
        .map((comp) =>
          comp
            .map((s) => s ?? '')
            .join('&')
            .replace(/&+$/, ''),
        )
        .join(compSep)
        .replace(new RegExp(`\\${compSep}+$`), ''),
    )
    .join('\n')
    .trim();
  return t || undefined;
}

describe('valueText (OBX-5 as text) agrees with the reference', () => {
  it('on generated OBX-5 structures and component separators', () => {
    const leaf = fc.oneof(fc.constant(null), fc.constantFrom('', ' ', '&', '^', '~', 'a', '12.5', ' x ', '\n', '^^', '\u00a0'));
    const field = fc.array(fc.array(fc.array(leaf, { maxLength: 3 }), { maxLength: 4 }), { maxLength: 3 });
    fc.assert(
      fc.property(field, fc.constantFrom('^', '#', '$', '\\', '&', '.'), (f5, sep) => {
        const obx: Hl7Segment = { name: 'OBX', fields: [[], [], [], [], [], f5] };
        assert.equal(valueText(obx, sep), referenceValueText(obx, sep));
      }),
      { numRuns: 20_000 },
    );
  });
});

/** normaliseSegments as first written (regular expressions throughout): the reference for the faster one. */
function referenceNormalise(text: string): string[] {
  return text
    .replace(/[\u000b\u001c]/g, '')
    .split(/\r\n|\n\r|\r|\n/)
    .map((l) => l.replace(/^[ \t]+/, ''))
    .filter((l) => l.trim() !== '');
}

describe('isNormalised: a message text that normalising would not change is parsed without normalising again', () => {
  it('normaliseSegments agrees with the reference on generated texts', () => {
    const char = fc.constantFrom('M', '|', '\r', '\n', ' ', '\t', '\u000b', '\u001c', '\u00a0', '\u2028', '\f', 'é');
    fc.assert(
      fc.property(fc.array(char, { maxLength: 16 }), (cs) => {
        const t = cs.join('');
        assert.deepEqual(normaliseSegments(t), referenceNormalise(t), JSON.stringify(t));
      }),
      { numRuns: 50_000 },
    );
  });

  it('is true only where normaliseSegments(text) joined by CR (plus a final CR) is the text itself, and for what splitMessages gives', () => {
    const char = fc.constantFrom('M', 'S', 'H', '|', '\r', '\r', '\n', ' ', '\t', '\u000b', '\u001c', '\u00a0', '\ufeff', '\u2028', '\f');
    const normalised = (t: string) => normaliseSegments(t).join('\r') + '\r' === t;
    fc.assert(
      fc.property(fc.array(char, { maxLength: 12 }), (cs) => {
        const t = cs.join('');
        if (isNormalised(t)) assert.ok(normalised(t), JSON.stringify(t));
        // The one text normalising leaves alone that is not taken as normalised: a lone CR (no segment at all).
        else assert.ok(!normalised(t) || t === '\r', JSON.stringify(t));
        const again = splitMessages(`MSH|${t}`).messages;
        for (const m of again) assert.ok(isNormalised(m), JSON.stringify(m));
      }),
      { numRuns: 50_000 },
    );
    for (const { text } of corpus()) {
      assert.equal(isNormalised(text), true, 'splitMessages gives normalised text');
      assert.equal(isNormalised(text.replaceAll('\r', '\n')), normalised(text.replaceAll('\r', '\n')));
    }
  });
});
