/**
 * The token cache on its own, with a clock the test moves: one fetch for any number of concurrent callers, renewal
 * ahead of expiry while the current token is still handed out, a refused token forgotten once.
 */
import { strict as assert } from 'node:assert';
import { TokenCache } from '../../src/ehr-auth/token-cache.js';

function setup(lifetimeS = 100) {
  let now = 0;
  let fetches = 0;
  const gates: (() => void)[] = [];
  const cache = new TokenCache(
    () =>
      new Promise((resolve) => {
        const n = ++fetches;
        gates.push(() => resolve({ value: `t${n}`, expiresInS: lifetimeS }));
      }),
    { now: () => now },
  );
  return {
    cache,
    fetches: () => fetches,
    release: async () => {
      for (const g of gates.splice(0)) g();
      await new Promise((r) => setImmediate(r));
    },
    at: (ms: number) => {
      now = ms;
    },
  };
}

describe('EHR authentication: the token cache', () => {
  it('fetches once for many concurrent callers', async () => {
    const t = setup();
    const callers = Array.from({ length: 50 }, () => t.cache.get());
    await t.release();
    assert.deepEqual(new Set(await Promise.all(callers)), new Set(['t1']));
    assert.equal(t.fetches(), 1);
  });

  it('renews in the background from 75% of the lifetime, handing out the current token meanwhile; waits once it is no longer usable', async () => {
    const t = setup(100);
    const first = t.cache.get();
    await t.release();
    assert.equal(await first, 't1');
    t.at(70_000);
    assert.equal(await t.cache.get(), 't1');
    assert.equal(t.fetches(), 1, 'not renewed before 75%');
    t.at(80_000);
    assert.equal(await t.cache.get(), 't1', 'still handed out while the renewal runs');
    assert.equal(await t.cache.get(), 't1');
    assert.equal(t.fetches(), 2, 'one renewal however many callers');
    await t.release();
    assert.equal(await t.cache.get(), 't2');
    t.at(80_000 + 91_000);
    const waiting = t.cache.get();
    assert.equal(t.fetches(), 3, 'past 90%: a new token is fetched and waited for');
    await t.release();
    assert.equal(await waiting, 't3');
  });

  it('forgets a refused token once: concurrent refusals of the same token make one fetch', async () => {
    const t = setup();
    const first = t.cache.get();
    await t.release();
    assert.equal(await first, 't1');
    t.cache.invalidate('t1');
    const a = t.cache.get();
    t.cache.invalidate('t1');
    const b = t.cache.get();
    await t.release();
    assert.deepEqual([await a, await b], ['t2', 't2']);
    t.cache.invalidate('t1');
    assert.equal(await t.cache.get(), 't2', 'a refusal of an older token does not drop the new one');
    assert.equal(t.fetches(), 2);
  });

  it('a failed fetch fails its waiting callers; the next caller fetches again', async () => {
    let n = 0;
    const cache = new TokenCache(async () => {
      n++;
      if (n === 1) throw new Error('refused');
      return { value: 'ok', expiresInS: 60 };
    });
    const results = await Promise.allSettled([cache.get(), cache.get()]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected'],
    );
    assert.equal(await cache.get(), 'ok');
    assert.equal(n, 2);
  });
});
