/**
 * The logger's PHI redaction (redactPhi) against pino's own `redact` option with the same paths, line for line, on
 * objects shaped like what the code logs and like what it might log by mistake: PHI at the top, one level down, under
 * an Error, in request headers, in arrays (not reached by the paths, by either), and lines with nothing to redact.
 */
import { strict as assert } from 'node:assert';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { createLogger, PHI_REDACT_PATHS, redactPhi } from '../../src/observability/logger.js';

function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return { stream, lines };
}

/** A line without its time (the two loggers write at different moments). */
const withoutTime = (line: string) => {
  const o = JSON.parse(line) as Record<string, unknown>;
  delete o.time;
  return o;
};

class EhrAnswer extends Error {
  constructor(
    message: string,
    readonly body: unknown,
    readonly status: number,
  ) {
    super(message);
    this.name = 'EhrAnswer';
  }
}

const samples = (): Record<string, unknown>[] => [
  { channel: 'mllp', controlIdHash: 'abcdef0123456789', type: 'ORU^R01', app: 'MONITOR', jobs: 1, observations: 4, ack: 'AA' },
  { patient: 'MRN-1', patientId: 'P-2', mrn: '123', name: 'Erika Mustermann', birthDate: '1964-08-12', deviceId: 'D-1' },
  { value: 97, valueQuantity: { value: 97, unit: '%' }, body: '{"a":1}', payload: 'raw', subject: { reference: 'Patient/1' } },
  { token: 'secret', key: 'gw_abc', keyId: 'abc' },
  { job: { patient: 'MRN-1', id: 'j1', translations: [{ patient: 'MRN-1' }] }, reading: { name: 'x', value: 3, code: '8867-4' } },
  {
    headers: { authorization: 'Bearer x', accept: 'application/json' },
    req: { headers: { authorization: 'Bearer y', host: 'h' }, url: '/x' },
  },
  { err: new EhrAnswer('the EHR answered 400', { resourceType: 'OperationOutcome' }, 400), destination: 'ehr' },
  { list: [{ patient: 'MRN-1' }], nested: { deeper: { patient: 'MRN-1' } }, n: null, flag: true },
  { auth: { authorization: 'Basic abc', token: 't', user: 'u' }, msg2: 'plain' },
];

describe('logger: PHI redaction', () => {
  it('writes the same lines as pino’s redact option with PHI_REDACT_PATHS', () => {
    const ours = capture();
    const theirs = capture();
    const a = createLogger('info', ours.stream);
    const b = pino(
      { level: 'info', base: { service: 'iomt-gateway' }, redact: { paths: PHI_REDACT_PATHS, censor: '[redacted]' } },
      theirs.stream,
    );
    for (const s of samples()) {
      a.info(s, 'a line');
      b.info(s, 'a line');
    }
    const down = new EhrAnswer('down', { x: 1 }, 503);
    a.error(down);
    b.error(down);
    // Bindings of a child logger, as pino's redact option redacted them.
    a.child({ patient: 'MRN-9', adapter: 'x', req: { headers: { authorization: 'Bearer z' } } }).info({ n: 1 }, 'child');
    b.child({ patient: 'MRN-9', adapter: 'x', req: { headers: { authorization: 'Bearer z' } } }).info({ n: 1 }, 'child');
    a.child({ adapter: 'y' }).child({ mrn: 'MRN-8' }).info('grandchild');
    b.child({ adapter: 'y' }).child({ mrn: 'MRN-8' }).info('grandchild');
    assert.equal(ours.lines.length, samples().length + 3);
    for (const phi of ['MRN-9', 'MRN-8', 'Bearer z']) assert.ok(!ours.lines.join('\n').includes(phi), `${phi} from a child's bindings`);
    assert.deepEqual(ours.lines.map(withoutTime), theirs.lines.map(withoutTime));
  });

  it('censors PHI at the top and one level down, keeps the rest, and changes nothing in place', () => {
    const s = samples();
    const before = JSON.stringify(s[4]);
    const out = redactPhi(s[4]) as { job: Record<string, unknown>; reading: Record<string, unknown> };
    assert.equal(out.job.patient, '[redacted]');
    assert.equal(out.job.id, 'j1');
    assert.deepEqual(out.job.translations, [{ patient: 'MRN-1' }], 'an array is not reached by the paths (as with pino)');
    assert.equal(out.reading.name, '[redacted]');
    assert.equal(out.reading.code, '8867-4');
    assert.equal(JSON.stringify(s[4]), before, 'the object logged is left as it was');
    const clean = s[0];
    assert.equal(redactPhi(clean), clean, 'a line with nothing to redact is not copied');
  });

  it('an Error keeps its class, message and stack, with its PHI censored', () => {
    const err = new EhrAnswer('the EHR answered 400', { patient: 'x' }, 400);
    const out = redactPhi({ err }).err as EhrAnswer;
    assert.ok(out instanceof EhrAnswer);
    assert.equal(out.message, 'the EHR answered 400');
    assert.equal(out.stack, err.stack);
    assert.equal(out.body, '[redacted]');
    assert.equal(out.status, 400);
    assert.deepEqual(err.body, { patient: 'x' }, 'the original error is untouched');
  });
});
