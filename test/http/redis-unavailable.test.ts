/**
 * The API answers 503 "retry later" when Redis cannot serve it, never 500 and never silence: with Redis paused
 * (connected, not answering: as blocked or behind a network partition) a request waits at most
 * REDIS_COMMAND_TIMEOUT_MS for a command; with Redis stopped, the Redis client's failure is a 503 too. Real gateway,
 * real Redis.
 */
import { strict as assert } from 'node:assert';
import { Redis } from 'ioredis';
import { useStack } from '../helpers/harness.js';
import { ADMIN, call, type Res } from '../devices/wire.js';

/** Routes whose handlers read Redis and have no readiness check of their own in front. */
const PATHS = ['/api/devices', '/api/audit'];

describe('the API when Redis cannot serve it: 503, within REDIS_COMMAND_TIMEOUT_MS', function () {
  this.timeout(60000);
  const stack = useStack({ ADMIN_API_KEY: ADMIN, REDIS_COMMAND_TIMEOUT_MS: '500' });
  before(async () => {
    for (const p of PATHS) assert.equal((await call(stack.gw.url, 'GET', p, ADMIN)).status, 200, p);
  });

  const assertUnavailable = (r: Res, what: string) => {
    assert.equal(r.status, 503, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.resourceType, 'OperationOutcome');
    assert.equal(r.body.issue[0].code, 'transient');
    assert.ok(r.headers.get('retry-after'), `${what}: Retry-After`);
  };

  it('Redis paused: 503 after the command timeout, not after the pause', async () => {
    const admin = new Redis(stack.redis.url);
    try {
      // Every client waits out a pause of ALL commands: it ends on its own.
      await admin.call('CLIENT', 'PAUSE', '4000', 'ALL');
      for (const p of PATHS) {
        const t0 = Date.now();
        const r = await call(stack.gw.url, 'GET', p, ADMIN);
        const took = Date.now() - t0;
        assertUnavailable(r, p);
        // Bounded by the setting (500 ms); the pause lasts 4 s. Generous for a loaded machine.
        assert.ok(took < 2500, `${p} answered after ${took} ms`);
      }
    } finally {
      admin.disconnect();
    }
  });

  it('Redis stopped: 503, not an internal error', async () => {
    // Once the pause is over, the same requests are answered.
    for (const p of PATHS) {
      let r = await call(stack.gw.url, 'GET', p, ADMIN);
      for (let i = 0; r.status !== 200 && i < 100; i++) {
        await new Promise((res) => setTimeout(res, 100));
        r = await call(stack.gw.url, 'GET', p, ADMIN);
      }
      assert.equal(r.status, 200, `${p} once Redis answers again`);
    }
    await stack.redis.redis.stop();
    for (const p of PATHS) assertUnavailable(await call(stack.gw.url, 'GET', p, ADMIN), p);
  });
});

describe('a refusal that names a Redis error word is still itself', function () {
  this.timeout(60000);
  const stack = useStack({ ADMIN_API_KEY: ADMIN });

  it('404 for a device id such as READONLY-1 or LOADING, not 503', async () => {
    for (const id of ['READONLY-1', 'LOADING', 'Connection is closed']) {
      const r = await call(stack.gw.url, 'GET', `/api/devices/${encodeURIComponent(id)}`, ADMIN);
      assert.equal(r.status, 404, `${id}: ${JSON.stringify(r.body)}`);
    }
  });
});
