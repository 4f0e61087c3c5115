/**
 * Ingest reads a message's devices from memory that Redis keeps true (devices/record-cache.ts): a change made anywhere
 * (another gateway process, this one, a script, FLUSHALL) is seen by the next message, and nothing is served from
 * memory while the connection that hears of changes is down.
 */
import { strict as assert } from 'node:assert';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import IORedis from 'ioredis';
import { createLogger } from '../../src/observability/logger.js';
import { createRecordCache, type RecordCache } from '../../src/devices/record-cache.js';
import type { DeviceRecord } from '../../src/devices/model.js';
import { DeviceRegistry } from '../../src/devices/registry.js';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway, type DmGateway } from './wire.js';

const log = createLogger('silent');

describe('device record cache', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let admin: IORedis.default;
  before(async () => {
    redis = await startRedis();
    admin = new IORedis.default(redis.url);
  });
  after(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  describe('RecordCache on a real Redis', () => {
    let cache: RecordCache;
    afterEach(async () => {
      await cache?.stop();
      await admin.flushall();
    });
    const start = async (max = 100) => {
      cache = createRecordCache(admin, ['t:rec:'], { max, ttlMs: 60_000 }, log) as RecordCache;
      await cache.start();
      assert.equal(cache.active, true, 'tracking is set up');
    };

    it('serves a second read from memory, and a change made by another client at once after Redis announces it', async () => {
      await start();
      await admin.set('t:rec:a', '1');
      assert.deepEqual(await cache.mget(['t:rec:a', 't:rec:none']), ['1', null]);
      assert.deepEqual(await cache.mget(['t:rec:a', 't:rec:none']), ['1', null]);
      assert.equal(cache.hits, 2);
      assert.equal(cache.misses, 2);

      const other = new IORedis.default(redis.url);
      try {
        const before = cache.invalidations;
        await other.set('t:rec:a', '2');
        await other.set('t:rec:none', 'now');
        await eventually(async () => cache.invalidations >= before + 2 || undefined, 5000, 'the announcements');
        assert.deepEqual(await cache.mget(['t:rec:a', 't:rec:none']), ['2', 'now']);
      } finally {
        other.disconnect();
      }
    });

    it('keys outside its prefixes are not announced and not held', async () => {
      await start();
      await admin.set('t:other', 'x');
      const before = cache.invalidations;
      await admin.set('t:other', 'y');
      await admin.set('t:rec:b', 'z');
      await eventually(async () => cache.invalidations > before || undefined, 5000, 'an announcement');
      assert.equal(cache.invalidations, before + 1, 'only t:rec:b was announced');
    });

    it('FLUSHALL empties it', async () => {
      await start();
      await admin.set('t:rec:a', '1');
      await cache.mget(['t:rec:a']);
      assert.equal(cache.size, 1);
      await admin.flushall();
      await eventually(async () => cache.size === 0 || undefined, 5000, 'emptied');
      assert.deepEqual(await cache.mget(['t:rec:a']), [null]);
    });

    it('does not keep a read that was in flight when a change was heard of', async () => {
      await start();
      await admin.set('t:rec:a', '1');
      const read = cache.mget(['t:rec:a']);
      cache.forget([]); // what an announcement, or a write of this process, does to the epoch
      assert.deepEqual(await read, ['1']);
      assert.equal(cache.size, 0, 'the answer may predate the change: not kept');
      await cache.mget(['t:rec:a']);
      assert.equal(cache.size, 1, 'a read with nothing heard meanwhile is kept');
    });

    it('reads from Redis while its connection is down, and serves again once it is set up anew', async () => {
      await start();
      await admin.set('t:rec:a', '1');
      await cache.mget(['t:rec:a']);
      assert.equal(cache.size, 1);
      // Kill the tracking connection: changes made before it is back would be missed, so nothing may be served meanwhile.
      const clients = (await admin.client('LIST')) as string;
      const tracker = /id=(\d+) [^\n]*cmd=subscribe/.exec(clients)?.[1];
      assert.ok(tracker, 'the tracking connection is subscribed');
      await admin.client('KILL', 'ID', tracker);
      await admin.set('t:rec:a', '2');
      assert.equal(cache.active, false, 'the loss is seen before the next read');
      assert.equal(cache.size, 0);
      assert.deepEqual(await cache.mget(['t:rec:a']), ['2']);
      await eventually(async () => cache.active || undefined, 10000, 'tracking set up again');
      await admin.set('t:rec:a', '3');
      await eventually(async () => ((await cache.mget(['t:rec:a']))[0] === '3' ? true : undefined), 5000, 'the change after the reconnect');
    });

    /**
     * A TCP relay to Redis whose connections can be frozen (bytes stop flowing both ways, the sockets stay open), all
     * of them or those after the first `keep`.
     */
    async function relay(keep = 0, cutOn?: string) {
      let frozen = false;
      let cut = false;
      const sockets: Socket[] = [];
      let n = 0;
      const server = createServer((client) => {
        const spared = n++ < keep;
        const upstream = connect(Number(new URL(redis.url).port), '127.0.0.1');
        sockets.push(client, upstream);
        client.on('data', (d) => {
          // Cut the connection the first time a command carries `cutOn`, before Redis has it.
          if (cutOn && !cut && !spared && d.toString().toUpperCase().includes(cutOn)) {
            cut = true;
            client.destroy();
            upstream.destroy();
            return;
          }
          if (spared || !frozen) upstream.write(d);
        });
        upstream.on('data', (d) => (spared || !frozen) && client.write(d));
        client.on('error', () => undefined);
        upstream.on('error', () => undefined);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const client = new IORedis.default(`redis://127.0.0.1:${(server.address() as AddressInfo).port}`);
      await client.ping();
      return {
        client,
        wasCut: () => cut,
        freeze: () => void (frozen = true),
        close: () => {
          client.disconnect();
          for (const s of sockets) s.destroy();
          server.close();
        },
      };
    }

    it('stops serving when its connection stops answering without closing (a Redis host gone in a failover)', async () => {
      const r = await relay();
      try {
        cache = createRecordCache(r.client, ['t:rec:'], { max: 100, ttlMs: 60_000 }, log) as RecordCache;
        await cache.start();
        assert.equal(cache.active, true);
        await admin.set('t:rec:a', '1');
        await cache.mget(['t:rec:a']);
        assert.equal(cache.size, 1);
        r.freeze();
        await eventually(async () => (!cache.active ? true : undefined), 10000, 'the silence noticed');
        assert.equal(cache.size, 0);
      } finally {
        await cache.stop();
        r.close();
      }
    });

    for (const step of ['TRACKING', 'SUBSCRIBE'])
      it(`sets tracking up again when its connection is cut at ${step} while it sets it up`, async () => {
        const r = await relay(1, step);
        try {
          cache = createRecordCache(r.client, ['t:rec:'], { max: 100, ttlMs: 60_000 }, log) as RecordCache;
          await cache.start();
          await eventually(async () => (cache.active ? true : undefined), 15000, 'tracking set up on the next connection');
          assert.ok(r.wasCut(), 'the connection was cut');
          await admin.set('t:rec:a', '1');
          assert.deepEqual(await cache.mget(['t:rec:a']), ['1']);
          const before = cache.invalidations;
          await admin.set('t:rec:a', '2');
          await eventually(async () => (cache.invalidations > before ? true : undefined), 5000, 'announcements heard');
          assert.deepEqual(await cache.mget(['t:rec:a']), ['2']);
        } finally {
          await cache.stop();
          r.close();
        }
      });

    it('a stop while it starts ends the start', async () => {
      cache = createRecordCache(admin, ['t:rec:'], { max: 100, ttlMs: 60_000 }, log) as RecordCache;
      const starting = cache.start();
      await cache.stop();
      await starting;
      assert.equal(cache.active, false);
    });

    it('does not serve from memory once its connection has gone silent, and reads the change from Redis', async () => {
      // Reads through the first connection; the announcements come on the second, frozen: changes go unheard.
      const r = await relay(1);
      try {
        cache = createRecordCache(r.client, ['t:rec:'], { max: 100, ttlMs: 60_000 }, log) as RecordCache;
        await cache.start();
        await admin.set('t:rec:a', '1');
        // The announcement of this write first, so that what is frozen below is only what follows.
        await eventually(async () => (cache.invalidations > 0 ? true : undefined), 5000, 'the first announcement');
        await cache.mget(['t:rec:a']);
        assert.deepEqual(await cache.mget(['t:rec:a']), ['1']);
        assert.equal(cache.hits, 1, 'served from memory');
        r.freeze();
        await admin.set('t:rec:a', '2');
        assert.deepEqual(await cache.mget(['t:rec:a']), ['1'], 'unheard: still served, until the silence is noticed');
        await eventually(async () => ((await cache.mget(['t:rec:a']))[0] === '2' ? true : undefined), 10000, 'the change read from Redis');
        assert.equal(cache.active, false);
      } finally {
        await cache.stop();
        r.close();
      }
    });

    it("serves this process's own change at once, before Redis's announcement arrives", async () => {
      // The registry's reads go through the first connection; the announcements come on the second, frozen.
      const r = await relay(1);
      try {
        const registry = new DeviceRegistry(r.client);
        cache = createRecordCache(r.client, registry.readPrefixes, { max: 100, ttlMs: 60_000 }, log) as RecordCache;
        registry.cache = cache;
        await cache.start();
        const record = { id: 'OWN-1', state: 'active', adapter: 'measurements', version: 1 } as unknown as DeviceRecord;
        assert.equal(await registry.create(record), true);
        assert.equal((await registry.getMany(['OWN-1'])).get('OWN-1')?.state, 'active');
        assert.equal((await registry.getMany(['OWN-1'])).get('OWN-1')?.state, 'active');
        assert.ok(cache.hits > 0, 'held');
        r.freeze();
        await registry.update('OWN-1', (d) => ({ ...d, state: 'suspended' }));
        assert.equal((await registry.getMany(['OWN-1'])).get('OWN-1')?.state, 'suspended');
      } finally {
        await cache.stop();
        r.close();
      }
    });

    it('holds at most max keys, the oldest going first', async () => {
      await start(2);
      await admin.mset('t:rec:1', 'a', 't:rec:2', 'b', 't:rec:3', 'c');
      await cache.mget(['t:rec:1']);
      await cache.mget(['t:rec:2']);
      await cache.mget(['t:rec:3']);
      assert.equal(cache.size, 2);
      const misses = cache.misses;
      await cache.mget(['t:rec:3', 't:rec:2']);
      assert.equal(cache.misses, misses, 'the newest two are held');
    });

    it('reads from Redis where tracking is refused (an ACL without CLIENT), says so once, and tries again less often', async () => {
      await admin.call('ACL', 'SETUSER', 'noclient', 'on', '>secret-pw', '~*', '&*', '+@all', '-client');
      const limited = new IORedis.default(redis.url.replace('redis://', 'redis://noclient:secret-pw@'));
      const warnings: string[] = [];
      const quiet = { warn: (_o: object, m: string) => warnings.push(m), info: () => undefined } as unknown as typeof log;
      try {
        cache = createRecordCache(limited, ['t:rec:'], { max: 100, ttlMs: 60_000 }, quiet) as RecordCache;
        await cache.start();
        assert.equal(cache.active, false);
        await admin.set('t:rec:a', '1');
        assert.deepEqual(await cache.mget(['t:rec:a']), ['1'], 'read from Redis');
        assert.equal(cache.size, 0, 'nothing held');
        await eventually(async () => (cache.setupFailures >= 2 ? true : undefined), 15000, 'a second try');
        assert.equal(warnings.length, 1, 'one warning for the run of failures');
        assert.match(warnings[0], /tracking could not be set up/);
      } finally {
        await cache.stop();
        limited.disconnect();
        await admin.call('ACL', 'DELUSER', 'noclient');
      }
    });

    it('is not made for max 0', () => {
      assert.equal(createRecordCache(admin, ['t:rec:'], { max: 0, ttlMs: 1000 }, log), undefined);
    });
  });

  describe('the ingest guard', () => {
    let ehr: TestEhr;
    let a: DmGateway;
    let b: DmGateway;
    before(async () => {
      ehr = await startEhr();
      const env = { REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'reject', DEVICE_PATIENT_BINDING: 'any' };
      a = await startDmGateway(env, 'ingest');
      b = await startDmGateway(env, 'all');
    });
    after(async () => {
      await a?.stop();
      await b?.stop();
      await ehr?.stop();
    });

    it('refuses the next message of a device suspended through another gateway process', async () => {
      const id = 'CACHE-1';
      await call(b.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' });
      await call(b.url, 'POST', `/api/devices/${id}/activate`, ADMIN);
      assert.equal((await call(a.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 1))).status, 202);
      const cache = a.dm.service.registry.cache as RecordCache;
      const hits = cache.hits;
      assert.equal((await call(a.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 2))).status, 202);
      assert.ok(cache.hits > hits, 'the second message found its device in memory');

      assert.equal((await call(b.url, 'POST', `/api/devices/${id}/suspend`, ADMIN)).status, 200);
      const r = await call(a.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 3));
      assert.equal(r.status, 403, 'the suspension is seen by the other process');
      assert.match(JSON.stringify(r.body), /suspended/);

      assert.equal((await call(b.url, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 200);
      assert.equal((await call(a.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 4))).status, 202);
    });

    it('refuses the next message of a device this process has just suspended', async () => {
      const id = 'CACHE-2';
      await call(b.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' });
      await call(b.url, 'POST', `/api/devices/${id}/activate`, ADMIN);
      assert.equal((await call(b.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 1))).status, 202);
      assert.equal((await call(b.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 2))).status, 202);
      assert.equal((await call(b.url, 'POST', `/api/devices/${id}/decommission`, ADMIN)).status, 200);
      const r = await call(b.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 3));
      assert.equal(r.status, 403);
      assert.match(JSON.stringify(r.body), /decommissioned/);
    });

    it('finds a device registered after a message found it unknown', async () => {
      const id = 'CACHE-3';
      assert.equal((await call(a.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 1))).status, 403, 'unknown: rejected');
      await call(b.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' });
      await call(b.url, 'POST', `/api/devices/${id}/activate`, ADMIN);
      assert.equal((await call(a.url, 'POST', '/ingest/measurements', ADMIN, reading(id, {}, 2))).status, 202);
    });

    it('says in /metrics whether it is in use', async () => {
      const text = (await call(a.url, 'GET', '/metrics', ADMIN)).body as string;
      assert.match(text, /^iomt_device_cache_active 1$/m);
      assert.match(text, /^iomt_device_cache_lookups_total\{result="hit"\} [1-9]\d*$/m);
    });
  });
});
