/**
 * The delivery thread's log lines reach the gateway logger's stream by their own level: with a pino multistream (an
 * embedding program that sends errors to a stream of their own), a thread's error goes where errors go even when the
 * gateway's last line was an info line, and a thread's info line does not go there.
 */
import { strict as assert } from 'node:assert';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { writeThreadLines } from '../../src/app/delivery-host.js';
import { createLogger } from '../../src/observability/logger.js';

function collector(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  return {
    stream,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('delivery thread: its log lines reach the streams of their level', () => {
  it('through a pino multistream, by each line’s own level, whatever the gateway logged last', () => {
    const all = collector();
    const errors = collector();
    const multi = pino.multistream([
      { level: 'info', stream: all.stream },
      { level: 'error', stream: errors.stream },
    ]);
    const gateway = pino({ level: 'info' }, multi);
    // The thread's lines as its own logger writes them (JSON, a batch of several in one text).
    const threadOut = collector();
    const thread = createLogger('info', threadOut.stream).child({ thread: 'delivery' });
    thread.info('a transaction was written');
    thread.error({ status: 500 }, 'the EHR refused a transaction');
    thread.warn('a job will be retried');
    const batch = threadOut
      .lines()
      .map((l) => `${JSON.stringify(l)}\n`)
      .join('');

    gateway.info('the gateway is ready'); // the multistream's last level is now info
    writeThreadLines(multi, batch);
    gateway.error('a gateway error');

    assert.deepEqual(
      errors.lines().map((l) => l.msg),
      ['the EHR refused a transaction', 'a gateway error'],
      'the thread’s error reaches the error stream, its info and warn lines do not',
    );
    assert.deepEqual(
      all.lines().map((l) => l.msg),
      ['the gateway is ready', 'a transaction was written', 'the EHR refused a transaction', 'a job will be retried', 'a gateway error'],
    );
    assert.equal(errors.lines()[0].thread, 'delivery');
  });

  it('to a plain stream, the batch as it came, in one write', () => {
    const writes: string[] = [];
    const plain = { write: (t: string) => writes.push(t) };
    writeThreadLines(plain, '{"level":30,"msg":"a"}\n{"level":50,"msg":"b"}\n');
    assert.deepEqual(writes, ['{"level":30,"msg":"a"}\n{"level":50,"msg":"b"}\n']);
  });
});
