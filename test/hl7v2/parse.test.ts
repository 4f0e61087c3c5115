import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import {
  charsetLabel,
  DEFAULT_PARSE_LIMITS,
  decodeBytes,
  get,
  getRaw,
  Hl7ParseError,
  parseMessage,
  readHeader,
  repetitions,
  segment,
  splitMessages,
  unescapeText,
  loadHl7Package,
} from '../../src/hl7v2/parse.js';
import { hl7TsToFhir, tsOffset } from '../../src/hl7v2/time.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

const MSG =
  'MSH|^~\\&|APP|FAC|RAPP|RFAC|20261123101500+0100||ORU^R01^ORU_R01|C-1|P|2.6\rPID|||ID-1^^^AUTH^MR~ID-2^^^OTHER^PI||Family^Given\rOBX|1|ST|X^text^L||value\r';

describe('hl7v2 parse', () => {
  // Loaded on demand in the gateway (parse.ts); these tests parse messages the fast path declines.
  before(() => loadHl7Package());

  it('accepts CR, LF and CRLF segment separators alike', () => {
    for (const sep of ['\r', '\n', '\r\n']) {
      const m = parseMessage(MSG.replaceAll('\r', sep));
      assert.deepEqual(
        m.segments.map((s) => s.name),
        ['MSH', 'PID', 'OBX'],
      );
      assert.equal(get(segment(m, 'OBX'), 5), 'value');
    }
  });

  it('reads MSH: type, trigger, structure, control id, version, ack types', () => {
    const h = readHeader(MSG);
    assert.equal(h.messageCode, 'ORU');
    assert.equal(h.triggerEvent, 'R01');
    assert.equal(h.messageStructure, 'ORU_R01');
    assert.equal(h.controlId, 'C-1');
    assert.equal(h.version, '2.6');
    assert.equal(h.sendingApplication, 'APP');
    assert.equal(h.receivingFacility, 'RFAC');
  });

  it('decodes every escape: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh\\, \\.br\\', () => {
    const m = parseMessage(
      'MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5\rPID|||1||Smith\\F\\\\S\\\\R\\\\E\\\\T\\^Jo\\X41\\n\rNTE|1||line1\\.br\\line2\r',
    );
    const pid = segment(m, 'PID');
    assert.equal(get(pid, 5, 1), 'Smith|^~\\&');
    assert.equal(get(pid, 5, 2), 'JoAn');
    assert.equal(get(segment(m, 'NTE'), 3), 'line1\nline2');
  });

  it('decodes \\Xhh\\ bytes in the message character set', () => {
    const d = { field: '|', component: '^', repetition: '~', escape: '\\', subComponent: '&' };
    assert.equal(unescapeText('Gr\\XF6\\\\XDF\\e', d, '\\', '8859/1'), 'Größe');
    assert.equal(unescapeText('Gr\\XC3B6\\\\XC39F\\e', d, '\\', 'UNICODE UTF-8'), 'Größe');
  });

  it('honours custom delimiters from MSH-1/MSH-2', () => {
    const m = parseMessage('MSH#!$*@#A#B#####ORU!R01#2#P#2.5\rPID###1$2##Sm*F*x*S*y!Jo@hn\r');
    const pid = segment(m, 'PID');
    assert.equal(repetitions(pid, 3), 2);
    assert.equal(get(pid, 3, 1, 1, 1), '2');
    assert.equal(get(pid, 5, 1), 'Sm#x!y');
    assert.equal(get(pid, 5, 2, 1), 'Jo');
    assert.equal(get(pid, 5, 2, 2), 'hn');
    assert.equal(m.header.triggerEvent, 'R01');
  });

  it('keeps a backslash as data when the escape character is not a backslash', () => {
    const m = parseMessage('MSH|^~#&|A|B|||20260101||ORU^R01|1|P|2.5\rOBX|1|ST|X||C:\\temp #F# x\r');
    assert.equal(get(segment(m, 'OBX'), 5), 'C:\\temp | x');
  });

  it('tells an explicit null ("") from an empty value', () => {
    const m = parseMessage('MSH|^~\\&|A|B|||20260101||ADT^A08|1|P|2.5\rPID|||1||""^Given||\r');
    const pid = segment(m, 'PID');
    assert.equal(getRaw(pid, 5, 1), null);
    assert.equal(get(pid, 5, 1), undefined);
    assert.equal(getRaw(pid, 7), '');
  });

  it('splits sub-components uniformly, keeping empty leading and trailing ones', () => {
    const m = parseMessage('MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.5\rOBX|1|&&foo^bar&bar2&^baz|\r');
    assert.deepEqual(segment(m, 'OBX')?.fields[2], [[['', '', 'foo'], ['bar', 'bar2', ''], ['baz']]]);
  });

  it('ignores Z-segments safely', () => {
    const m = parseMessage(fixture('pcd01-monitor.hl7').toString('utf8'));
    assert.equal(get(segment(m, 'ZXT'), 2), 'vendor private data');
  });

  it('decodes bytes by MSH-18: 8859/1, UTF-8, a UTF-8 BOM, and falls back to 8859/1 for non-UTF-8 bytes without MSH-18', () => {
    const latin = decodeBytes(fixture('adt-a04-latin1.hl7'));
    assert.equal(latin.charset, '8859/1');
    assert.equal(get(segment(parseMessage(latin.text), 'PID'), 5, 1), 'Größe');
    const utf8 = Buffer.from('MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5|||||||UNICODE UTF-8\rPID|||1||Jürgen\r', 'utf8');
    assert.equal(get(segment(parseMessage(decodeBytes(utf8).text), 'PID'), 5), 'Jürgen');
    const bom = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf]),
      Buffer.from('MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5\rPID|||1||Jürgen\r', 'utf8'),
    ]);
    const b = decodeBytes(bom);
    assert.ok(b.text.startsWith('MSH'));
    assert.equal(get(segment(parseMessage(b.text), 'PID'), 5), 'Jürgen');
    const legacy = Buffer.from('MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5\rPID|||1||J\xfcrgen\r', 'latin1');
    assert.equal(get(segment(parseMessage(decodeBytes(legacy).text), 'PID'), 5), 'Jürgen');
    assert.equal(decodeBytes(legacy, '8859/1').charset, '8859/1');
  });

  it('treats an MSH-18 that names an Object property (toString, constructor, __proto__) as an unknown character set', () => {
    // Found by the fault suite's fuzzing: the lookup read inherited properties, and TextDecoder threw a RangeError.
    for (const name of ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf']) {
      const bytes = Buffer.from(`MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5||||||${name}\rPID|||1||J\\XFC\\rgen\r`, 'latin1');
      const d = decodeBytes(bytes);
      assert.equal(d.charset, 'UNICODE UTF-8', name);
      assert.equal(charsetLabel(name), undefined, name);
      const m = parseMessage(d.text);
      assert.equal(m.header.charset, name);
      assert.ok(get(segment(m, 'PID'), 5)?.startsWith('J'), name);
    }
  });

  it('splits batches with and without trailers, and several messages in one payload', () => {
    const withTrailers = splitMessages(fixture('batch-adt.hl7').toString('utf8'));
    assert.equal(withTrailers.messages.length, 2);
    assert.ok(withTrailers.batch?.fhs && withTrailers.batch.bhs);
    assert.equal(readHeader(withTrailers.messages[1]).controlId, 'ADT-0005');
    const noTrailers = splitMessages('FHS|^~\\&\rBHS|^~\\&\r' + MSG + MSG.replace('C-1', 'C-2'));
    assert.deepEqual(
      noTrailers.messages.map((m) => readHeader(m).controlId),
      ['C-1', 'C-2'],
    );
    const plain = splitMessages(MSG + MSG);
    assert.equal(plain.messages.length, 2);
    assert.equal(plain.batch, undefined);
  });

  it('refuses a malformed MSH with an HL7 error code and location', () => {
    const cases: [string, number, number | undefined][] = [
      ['PID|||1\r', 100, undefined],
      ['MSH|^~\\&|A|B|||20260101||ADT^A01\r', 101, 10],
      ['MSH|^~\\&|A|B|||20260101|||1|P|2.5\r', 101, 9],
      ['MSH|^~\\&|A|B|||20260101||ADT^A01|1|P\r', 101, 12],
      ['MSH|^^|A\r', 102, 2],
    ];
    for (const [text, code, field] of cases) {
      assert.throws(
        () => parseMessage(text),
        (e: unknown) => e instanceof Hl7ParseError && e.code === code && e.location?.field === field,
        text,
      );
    }
  });

  it('refuses a segment that is not a segment', () => {
    assert.throws(() => parseMessage('MSH|^~\\&|A|B|||20260101||ADT^A01|1|P|2.5\rthis is not hl7\r'), Hl7ParseError);
  });
});

describe('hl7v2 time', () => {
  it('converts TS to FHIR with the offset, the MSH-7 offset, or the default zone', () => {
    assert.equal(hl7TsToFhir('20261123101405+0100'), '2026-11-23T10:14:05+01:00');
    assert.equal(hl7TsToFhir('20261123101405.25-0500'), '2026-11-23T10:14:05.25-05:00');
    assert.equal(hl7TsToFhir('202611231014', { fallbackOffset: '+02:00' }), '2026-11-23T10:14:00+02:00');
    assert.equal(hl7TsToFhir('20261123101405', { defaultZone: 'Europe/Berlin' }), '2026-11-23T10:14:05+01:00');
    assert.equal(hl7TsToFhir('20260701101405', { defaultZone: 'Europe/Berlin' }), '2026-07-01T10:14:05+02:00');
    assert.equal(hl7TsToFhir('20261123101405', { defaultZone: 'UTC' }), '2026-11-23T10:14:05+00:00');
    assert.equal(hl7TsToFhir('20261123'), '2026-11-23');
    assert.equal(hl7TsToFhir('20260230'), undefined);
    assert.equal(hl7TsToFhir('2026112325'), undefined);
    assert.equal(hl7TsToFhir('yesterday'), undefined);
    assert.equal(tsOffset('20261123101405-0330'), '-03:30');
  });
});

describe('hl7v2 payload splitting', () => {
  it('drops stray lines before the first MSH, but keeps a payload without MSH whole (so it is refused)', () => {
    const r = splitMessages('junk line\r' + MSG);
    assert.equal(r.messages.length, 1);
    assert.equal(r.skippedLines, 1);
    const none = splitMessages('hello\rworld\r');
    assert.deepEqual(none.messages, ['hello\rworld\r']);
  });
});

describe('hl7v2 parser limits (time and memory bounded per message)', () => {
  const HEAD = 'MSH|^~\\&|APP|FAC|RAPP|RFAC|20261123101500||ORU^R01^ORU_R01|C-9|P|2.6\r';
  const refused = (text: string, limits = DEFAULT_PARSE_LIMITS): Hl7ParseError => {
    try {
      parseMessage(text, { limits });
    } catch (e) {
      assert.ok(e instanceof Hl7ParseError, String(e));
      return e;
    }
    assert.fail('the message was parsed');
  };

  it('refuses 1 MB of repetition separators before the package parses it, naming the limit and the field', () => {
    const before = process.memoryUsage().heapUsed;
    const e = refused(`${HEAD}PID|||${'~'.repeat(1048000)}\r`);
    // Without the limit the package builds a million repetition objects (about 700 MB of heap).
    assert.ok(process.memoryUsage().heapUsed - before < 100 * 1024 * 1024, 'the refusal costs little memory');
    assert.equal(e.code, 207);
    assert.match(e.message, /PID-3 has more than 100 repetitions \(HL7_MAX_REPETITIONS = 100\)/);
    assert.deepEqual(e.location, { segment: 'PID', sequence: 1, field: 3 });
    assert.equal(e.header?.controlId, 'C-9', 'the header is known, so the AR echoes MSH-10');
  });

  const tight = { segments: 4, fields: 14, repetitions: 2, components: 3, subComponents: 2, elements: 30 };
  const cases: [string, string, RegExp, object][] = [
    ['segments', `${HEAD}${'NTE|1\r'.repeat(4)}`, /more than 4 segments \(HL7_MAX_SEGMENTS/, { segment: 'NTE', sequence: 4 }],
    ['fields', `${HEAD}PID${'|x'.repeat(15)}\r`, /PID has more than 14 fields \(HL7_MAX_FIELDS/, { segment: 'PID', sequence: 1 }],
    ['repetitions', `${HEAD}PID|||a~b~c\r`, /PID-3 has more than 2 repetitions/, { segment: 'PID', sequence: 1, field: 3 }],
    ['components', `${HEAD}NTE|1\rNTE|||a^b^c^d\r`, /NTE-3 has more than 3 components/, { segment: 'NTE', sequence: 2, field: 3 }],
    [
      'sub-components',
      `${HEAD}PID|||a^b^c&d&e\r`,
      /PID-3.3 has more than 2 sub-components \(HL7_MAX_SUBCOMPONENTS/,
      { segment: 'PID', sequence: 1, field: 3, component: 3 },
    ],
    [
      'elements in all',
      `${HEAD}OBX|1|2\rOBX|1|2|3^4\rOBX${'|x'.repeat(14)}\r`,
      /more than 30 fields, repetitions, components and sub-components/,
      {},
    ],
  ];
  for (const [what, text, re, where] of cases) {
    it(`refuses too many ${what}, located`, () => {
      const e = refused(text, tight);
      assert.match(e.message, re);
      for (const [k, v] of Object.entries(where)) assert.equal((e.location as unknown as Record<string, unknown>)[k], v, k);
    });
  }

  it('counts neither the delimiters of MSH-2 nor escaped delimiters', () => {
    const m = parseMessage(`${HEAD}PID|||a\\R\\b\\R\\c\\R\\d\r`, { limits: { ...tight, elements: 1000 } });
    assert.equal(get(segment(m, 'PID'), 3), 'a~b~c~d');
  });

  it('passes every fixture with the default limits', () => {
    for (const f of ['pcd01-monitor.hl7', 'oru-lab.hl7', 'adt-a01.hl7', 'adt-a40.hl7', 'pcd01-spo2-lf.hl7']) {
      const { text, charset } = decodeBytes(fixture(f));
      for (const m of splitMessages(text).messages) parseMessage(m, { charset });
    }
  });
});
