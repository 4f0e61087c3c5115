/**
 * coalesceWrites (queue/connection.ts) on a real Redis: the commands a connection issues in one turn of the event loop
 * leave in one write of its socket, every one is answered, and a socket opened by a reconnect gathers its writes too.
 */
import { strict as assert } from 'node:assert';
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { coalesceWrites, createRedis } from '../../src/queue/connection.js';
import { startRedis, type TestRedis } from '../helpers/harness.js';

/** Counts the writes the socket hands to the system (Writable's _write and _writev) from now on. */
function countWrites(socket: Socket): { writes: number } {
  const counter = { writes: 0 };
  const s = socket as Socket & { _write: (...a: unknown[]) => void; _writev?: (...a: unknown[]) => void };
  const write = s._write;
  s._write = function (...a: unknown[]) {
    counter.writes++;
    return write.apply(this, a);
  };
  const writev = s._writev;
  if (writev)
    s._writev = function (...a: unknown[]) {
      counter.writes++;
      return writev.apply(this, a);
    };
  return counter;
}

const ready = (c: Redis) => (c.status === 'ready' ? Promise.resolve() : new Promise<void>((r) => c.once('ready', () => r())));
const socketOf = (c: Redis) => (c as Redis & { stream: Socket }).stream;

describe('queue: a connection writes what one turn of the event loop issues in one system call', function () {
  this.timeout(20_000);
  let redis: TestRedis;
  const clients: Redis[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await redis?.stop();
  });
  const connect = async (gather: boolean) => {
    const c = createRedis(redis.url) as Redis;
    clients.push(c);
    if (gather) coalesceWrites(c);
    await ready(c);
    return c;
  };
  const burst = (c: Redis, tag: string) =>
    Promise.all([
      c.set(`${tag}:a`, '1'),
      c.incr(`${tag}:n`),
      c.incr(`${tag}:n`),
      c.get(`${tag}:a`),
      c.eval("return redis.call('GET', KEYS[1])", 1, `${tag}:n`),
    ]);

  it('five commands of one turn: one write, each answered in order', async () => {
    const c = await connect(true);
    const counter = countWrites(socketOf(c));
    assert.deepEqual(await burst(c, 'one'), ['OK', 1, 2, '1', '2']);
    assert.equal(counter.writes, 1);
  });

  it('without it, the same five commands are five writes (what the gathering saves)', async () => {
    const c = await connect(false);
    const counter = countWrites(socketOf(c));
    assert.deepEqual(await burst(c, 'five'), ['OK', 1, 2, '1', '2']);
    assert.equal(counter.writes, 5);
  });

  it('commands of later turns are not held back; after a reconnect the new socket gathers too', async () => {
    const c = await connect(true);
    for (let i = 0; i < 3; i++) assert.equal(await c.incr('later'), i + 1);
    const before = socketOf(c);
    const admin = await connect(false);
    await admin.client('KILL', 'ID', String(await c.client('ID')));
    await new Promise<void>((r) => c.once('ready', () => r()));
    assert.notEqual(socketOf(c), before, 'a new socket');
    const counter = countWrites(socketOf(c));
    assert.deepEqual(await burst(c, 'again'), ['OK', 1, 2, '1', '2']);
    assert.equal(counter.writes, 1);
  });
});
