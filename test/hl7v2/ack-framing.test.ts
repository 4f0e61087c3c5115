import { strict as assert } from 'node:assert';
import { batchAck, buildAck, freshControlId, issuesToErrors, readAck } from '../../src/hl7v2/ack.js';
import { MllpDecoder, type MllpEvent, mllpFrame } from '../../src/channels/mllp/server.js';
import { get, parseMessage, readHeader, segment } from '../../src/hl7v2/parse.js';

const IN = 'MSH|^~\\&|DEV-APP|DEV-FAC|GW-APP|GW-FAC|20261123101500+0100||ORU^R01^ORU_R01|CTRL-42|P|2.6||||||UNICODE UTF-8\rPID|||1\r';

describe('hl7v2 ACK building', () => {
  it('swaps sender and receiver, echoes MSH-10 in MSA-2, keeps version and charset, fresh control id, ACK^<trigger>^ACK', () => {
    const h = readHeader(IN);
    const ack = buildAck({ header: h, code: 'AA' });
    const m = parseMessage(ack);
    const msh = segment(m, 'MSH');
    assert.equal(get(msh, 3), 'GW-APP');
    assert.equal(get(msh, 4), 'GW-FAC');
    assert.equal(get(msh, 5), 'DEV-APP');
    assert.equal(get(msh, 6), 'DEV-FAC');
    assert.equal(m.header.messageCode, 'ACK');
    assert.equal(m.header.triggerEvent, 'R01');
    assert.equal(m.header.messageStructure, 'ACK');
    assert.equal(m.header.version, '2.6');
    assert.equal(m.header.charset, 'UNICODE UTF-8');
    assert.notEqual(m.header.controlId, 'CTRL-42');
    assert.notEqual(buildAck({ header: h, code: 'AA' }).match(/\|ACK\^R01\^ACK\|([^|]+)/)?.[1], m.header.controlId);
    assert.equal(get(segment(m, 'MSA'), 1), 'AA');
    assert.equal(get(segment(m, 'MSA'), 2), 'CTRL-42');
  });

  it('makes control ids that fit MSH-10 (20 characters), need no escaping, and do not repeat', () => {
    const ids = Array.from({ length: 50_000 }, () => freshControlId());
    for (const id of ids.slice(0, 100)) assert.match(id, /^GW[0-9A-Z]{1,18}$/);
    assert.ok(ids.every((id) => id.length <= 20));
    assert.equal(new Set(ids).size, ids.length);
  });

  it('answers with the incoming delimiters', () => {
    const h = readHeader('MSH#!$*@#A#B#C#D#20260101##ORU!R01#X-1#P#2.5\r');
    const ack = buildAck({
      header: h,
      code: 'AE',
      errors: [{ code: 101, text: 'PID-3 a#b!c is empty', location: { segment: 'PID', sequence: 1, field: 3 } }],
    });
    assert.ok(ack.startsWith('MSH#!$*@#C#D#A#B#'));
    const r = readAck(ack);
    assert.equal(r.code, 'AE');
    assert.equal(r.controlId, 'X-1');
    assert.equal(r.errors[0].code, '101');
    assert.equal(r.errors[0].text, 'PID-3 a#b!c is empty');
    assert.equal(r.errors[0].location, 'PID-1-3');
  });

  it('writes ERR per version: ERR-2/3/4/8 from v2.5, ERR-1 before', () => {
    const err = { code: 207 as const, text: 'queue unavailable', location: { segment: 'MSH', sequence: 1, field: 10 } };
    const v26 = buildAck({ header: readHeader(IN), code: 'AE', errors: [err] });
    assert.match(v26, /\rERR\|\|MSH\^1\^10\|207\^Application internal error\^HL70357\|E\|\|\|\|queue unavailable\r/);
    const v23 = buildAck({ header: readHeader(IN.replace('|2.6|', '|2.3|')), code: 'AE', errors: [err] });
    assert.match(v23, /\rERR\|MSH\^1\^10\^207&queue unavailable&HL70357\r/);
    assert.match(v23, /\|ACK\^R01\|/);
    assert.equal(readAck(v23).errors[0].code, '207');
  });

  it('answers even when MSH could not be read', () => {
    const r = readAck(buildAck({ code: 'AR', errors: [{ code: 100, text: 'no MSH' }] }));
    assert.equal(r.code, 'AR');
    assert.equal(r.controlId, '');
  });

  it('maps OperationOutcome issues to HL7 error codes and locations', () => {
    const errs = issuesToErrors([
      { severity: 'error', code: 'required', diagnostics: 'PID missing', expression: ['PID'] },
      { severity: 'error', code: 'required', diagnostics: 'PID-3 empty', expression: ['PID[1]-3'] },
      { severity: 'error', code: 'value', diagnostics: 'not a number', expression: ['OBX[4]-5'] },
      {
        severity: 'error',
        code: 'code-invalid',
        diagnostics: 'unit',
        expression: ['observation[0] (8867-4): Observation.valueQuantity.code'],
      },
      { severity: 'warning', code: 'informational', diagnostics: 'ignored' },
    ]);
    assert.deepEqual(
      errs.map((e) => [e.code, e.location?.segment, e.location?.sequence, e.location?.field]),
      [
        [100, 'PID', 1, undefined],
        [101, 'PID', 1, 3],
        [102, 'OBX', 4, 5],
        [103, undefined, undefined, undefined],
      ],
    );
    assert.match(errs[3].text, /^observation\[0\] \(8867-4\): Observation\.valueQuantity\.code: unit$/);
  });

  it('wraps the ACKs of a batch in BHS/BTS (and FHS/FTS)', () => {
    const a = buildAck({ header: readHeader(IN), code: 'AA' });
    const b = batchAck([a, a], { fhs: 'FHS|^~\\&', bhs: 'BHS|^~\\&' });
    const lines = b
      .split('\r')
      .filter(Boolean)
      .map((l) => l.slice(0, 3));
    assert.deepEqual(lines, ['FHS', 'BHS', 'MSH', 'MSA', 'MSH', 'MSA', 'BTS', 'FTS']);
    assert.match(b, /\rBTS\|2\r/);
  });
});

describe('hl7v2 MLLP framing', () => {
  const frames = (events: MllpEvent[]) =>
    events.filter((e) => e.type === 'frame').map((e) => (e as { data: Buffer }).data.toString('utf8'));

  it('finds several frames in one chunk', () => {
    const d = new MllpDecoder(1 << 20);
    const chunk = Buffer.concat([mllpFrame('one'), mllpFrame('two'), mllpFrame('three')]);
    assert.deepEqual(frames(d.push(chunk)), ['one', 'two', 'three']);
  });

  it('reassembles a frame split over many chunks, one byte at a time', () => {
    const d = new MllpDecoder(1 << 20);
    const bytes = Buffer.concat([mllpFrame('MSH|^~\\&|split'), mllpFrame('second')]);
    const out: MllpEvent[] = [];
    for (const b of bytes) out.push(...d.push(Buffer.from([b])));
    assert.deepEqual(frames(out), ['MSH|^~\\&|split', 'second']);
  });

  it('skips and reports bytes between frames; drops an unfinished frame when a new one starts', () => {
    const d = new MllpDecoder(1 << 20);
    const out = d.push(
      Buffer.concat([
        Buffer.from('junk'),
        mllpFrame('a'),
        Buffer.from('\r\n'),
        Buffer.from([0x0b]),
        Buffer.from('unfinished'),
        mllpFrame('b'),
      ]),
    );
    assert.deepEqual(frames(out), ['a', 'b']);
    const garbage = out.filter((e) => e.type === 'garbage').reduce((n, e) => n + (e as { bytes: number }).bytes, 0);
    assert.equal(garbage, 4 + 'unfinished'.length);
  });

  it('accepts 0x1C without the trailing 0x0D', () => {
    const d = new MllpDecoder(1 << 20);
    assert.deepEqual(frames(d.push(Buffer.from('\x0bone\x1c\x0btwo\x1c\r'))), ['one', 'two']);
  });

  it('reports a frame over the limit as oversized with its head, without buffering the rest, and carries on', () => {
    const d = new MllpDecoder(100);
    const big = 'MSH|^~\\&|' + 'x'.repeat(10000);
    const out: MllpEvent[] = [];
    const bytes = Buffer.concat([mllpFrame(big), mllpFrame('next')]);
    for (let i = 0; i < bytes.length; i += 333) out.push(...d.push(bytes.subarray(i, i + 333)));
    const over = out.find((e) => e.type === 'oversized') as { head: Buffer; size: number };
    assert.ok(over);
    assert.equal(over.size, big.length);
    assert.ok(over.head.toString().startsWith('MSH|^~\\&|xxx'));
    assert.ok(over.head.length <= 4096);
    assert.deepEqual(frames(out), ['next']);
  });
});
