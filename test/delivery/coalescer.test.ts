/**
 * The group-commit rules of the Coalescer (src/delivery/coalescer.ts), without Redis or an EHR: weights and the batch
 * maximum, keys shared with a batch in flight, the in-flight limit, solo items, and that a quiet coalescer sends at
 * once. Each batch runs until the test opens its gate; "did not start" is checked after the event loop has gone idle
 * (setImmediate turns), never after a sleep, so nothing here depends on how fast the machine is.
 */
import { strict as assert } from 'node:assert';
import { Coalescer } from '../../src/delivery/coalescer.js';

interface Item {
  id: string;
  weight?: number;
  keys?: string[];
  solo?: boolean;
}

/** One batch handed to run(): its items, and the gate that lets it finish with the given answer. */
interface Batch {
  ids: string[];
  finish(answer?: Array<string | Error> | Error): void;
}

/**
 * Lets every turn the coalescer has scheduled run. It schedules its flush with setImmediate, from a submit or from the
 * end of a batch (a promise callback); the turns queued behind it run after it, so a few turns leave it idle.
 */
async function idle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

function coalescer(maxBatch: number, maxInFlight: number) {
  const running: Batch[] = [];
  const c = new Coalescer<Item, string>({
    maxBatch,
    maxInFlight,
    weightOf: (i) => i.weight ?? 1,
    keysOf: (i) => i.keys ?? [],
    solo: (i) => i.solo ?? false,
    run: (items) =>
      new Promise((resolve, reject) => {
        const batch: Batch = {
          ids: items.map((i) => i.id),
          finish: (answer = items.map((i) => `done:${i.id}`)) => {
            running.splice(running.indexOf(batch), 1);
            if (answer instanceof Error) reject(answer);
            else resolve(answer);
          },
        };
        running.push(batch);
      }),
  });
  const results = new Map<string, Promise<string | Error>>();
  return {
    running,
    results,
    submit(...items: Item[]): void {
      for (const i of items)
        results.set(
          i.id,
          c.submit(i).catch((e: Error) => e),
        );
    },
    /** The ids of the batches running, oldest first. */
    batches: () => running.map((b) => b.ids),
  };
}

interface Case {
  name: string;
  maxBatch: number;
  maxInFlight: number;
  /** Submitted (and running) before `items`. */
  inFlight?: Item[];
  /** Submitted in one turn of the event loop. */
  items: Item[];
  /** The batches running at the start, then after each time the oldest running batch finishes. */
  waves: string[][][];
}

const cases: Case[] = [
  {
    name: 'a quiet coalescer sends an item at once, in a batch of its own',
    maxBatch: 10,
    maxInFlight: 1,
    items: [{ id: 'a' }],
    waves: [[['a']]],
  },
  {
    name: 'items handed in during the same turn leave together',
    maxBatch: 10,
    maxInFlight: 4,
    items: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
    waves: [[['a', 'b', 'c']]],
  },
  {
    name: 'items handed in while the in-flight limit is reached wait and leave together in the next batch',
    maxBatch: 10,
    maxInFlight: 1,
    inFlight: [{ id: 'held' }],
    items: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
    waves: [[['held']], [['a', 'b', 'c']]],
  },
  {
    name: 'the batch maximum counts weight (readings): the rest leave in the next batch',
    maxBatch: 3,
    maxInFlight: 1,
    inFlight: [{ id: 'held' }],
    items: ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id })),
    waves: [[['held']], [['a', 'b', 'c']], [['d', 'e']]],
  },
  {
    name: 'a lighter item later in the queue fills the room a heavier one left',
    maxBatch: 5,
    maxInFlight: 1,
    inFlight: [{ id: 'held' }],
    items: [
      { id: 'a', weight: 3 },
      { id: 'b', weight: 3 },
      { id: 'c', weight: 2 },
    ],
    waves: [[['held']], [['a', 'c']], [['b']]],
  },
  {
    name: 'an item heavier than the batch maximum goes alone, not never',
    maxBatch: 5,
    maxInFlight: 1,
    inFlight: [{ id: 'held' }],
    items: [{ id: 'big', weight: 7 }, { id: 'x' }],
    waves: [[['held']], [['big']], [['x']]],
  },
  {
    name: 'the in-flight limit: no more batches run at once than allowed',
    maxBatch: 1,
    maxInFlight: 2,
    items: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
    waves: [[['a'], ['b']], [['b'], ['c']], [['c']]],
  },
  {
    name: 'an item sharing a key with a batch in flight waits for it; the others go',
    maxBatch: 10,
    maxInFlight: 2,
    inFlight: [{ id: 'held', keys: ['dev:1'] }],
    items: [
      { id: 'a', keys: ['dev:1'] },
      { id: 'b', keys: ['dev:2'] },
    ],
    waves: [[['held'], ['b']], [['b'], ['a']], [['a']]],
  },
  {
    name: 'items that share a key and arrive together share a batch',
    maxBatch: 10,
    maxInFlight: 2,
    items: [
      { id: 'a', keys: ['pat:1'] },
      { id: 'b', keys: ['pat:1', 'dev:2'] },
    ],
    waves: [[['a', 'b']]],
  },
  {
    name: 'an item that does not fit the batch holding its key waits for that batch, even with room in flight',
    maxBatch: 1,
    maxInFlight: 3,
    items: [
      { id: 'a', keys: ['dev:1'] },
      { id: 'b', keys: ['dev:1'] },
      { id: 'c', keys: ['dev:2'] },
    ],
    waves: [[['a'], ['c']], [['c'], ['b']], [['b']]],
  },
  {
    name: 'a solo item (a retry) forms a batch of its own, and nothing joins it',
    maxBatch: 10,
    maxInFlight: 1,
    items: [{ id: 'a' }, { id: 'retry-1', solo: true }, { id: 'b' }, { id: 'retry-2', solo: true }],
    waves: [[['a', 'b']], [['retry-1']], [['retry-2']]],
  },
  {
    name: 'a solo item still waits for its keys',
    maxBatch: 10,
    maxInFlight: 2,
    inFlight: [{ id: 'held', keys: ['dev:1'] }],
    items: [{ id: 'retry', solo: true, keys: ['dev:1'] }, { id: 'x' }],
    waves: [[['held'], ['x']], [['x'], ['retry']], [['retry']]],
  },
];

describe('Coalescer: group commit rules', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const q = coalescer(c.maxBatch, c.maxInFlight);
      if (c.inFlight) {
        q.submit(...c.inFlight);
        await idle();
      }
      q.submit(...c.items);
      await idle();
      for (const [n, wave] of c.waves.entries()) {
        assert.deepEqual(q.batches(), wave, `batches running at step ${n}`);
        q.running[0].finish();
        await idle();
      }
      assert.deepEqual(q.batches(), [], 'nothing left running');
      for (const [id, result] of q.results) assert.equal(await result, `done:${id}`, `the result of ${id} is its own`);
    });
  }

  it('answers each item with its own result or error: one refused item does not fail the others', async () => {
    const q = coalescer(10, 1);
    q.submit({ id: 'a' }, { id: 'b' }, { id: 'c' });
    await idle();
    q.running[0].finish(['done:a', new Error('refused b'), 'done:c']);
    assert.equal(await q.results.get('a'), 'done:a');
    assert.equal(((await q.results.get('b')) as Error).message, 'refused b');
    assert.equal(await q.results.get('c'), 'done:c');
  });

  it('fails every item of a batch whose run throws, and goes on with the next batch', async () => {
    const q = coalescer(10, 1);
    q.submit({ id: 'held' });
    await idle();
    q.submit({ id: 'a' }, { id: 'b' });
    await idle();
    q.running[0].finish(new Error('Redis is down'));
    await idle();
    assert.equal(((await q.results.get('held')) as Error).message, 'Redis is down');
    assert.deepEqual(q.batches(), [['a', 'b']], 'the waiting items leave after the failed batch');
    q.running[0].finish();
    assert.equal(await q.results.get('a'), 'done:a');
  });

  it('fails an item the batch gave no result for', async () => {
    const q = coalescer(10, 1);
    q.submit({ id: 'a' }, { id: 'b' });
    await idle();
    q.running[0].finish(['done:a']);
    assert.equal(await q.results.get('a'), 'done:a');
    assert.match(((await q.results.get('b')) as Error).message, /no result/);
  });
});
