/**
 * Failed authentications cannot wipe the audit trail or saturate the gateway: they are aggregated per source (address
 * and key id) and window in the audit trail, refusals are kept apart from lifecycle history, and an address over
 * AUTH_FAILURE_LIMIT is answered 429 before any key is checked (counted in Redis, so on every instance).
 */
import { strict as assert } from 'node:assert';
import { request } from 'node:http';
import IORedis from 'ioredis';
import type { AuditEvent, Bundle } from 'fhir/r4';
import { eventually, startEhr, startRedis, type TestEhr, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, startDmGateway, type DmGateway } from '../devices/wire.js';
import { sourceAddress } from '../../src/access/auth-failures.js';
import { scryptVerifications } from '../../src/access/credentials.js';

const kindOf = (e: AuditEvent) => e.subtype?.find((s) => s.system === 'urn:iomt-gateway:audit')?.code;
const addressOf = (e: AuditEvent) => e.agent.find((a) => a.requestor)?.network?.address?.replace('::ffff:', '');
const countOf = (e: AuditEvent) => e.entity?.flatMap((en) => en.detail ?? []).find((d) => d.type === 'count')?.valueString;
const credentialOf = (e: AuditEvent) =>
  e.entity?.find((en) => en.what?.identifier?.system === 'urn:iomt-gateway:credential')?.what?.identifier?.value;

async function auditOf(url: string, q = 'limit=1000'): Promise<AuditEvent[]> {
  const r = await call(url, 'GET', `/api/audit?${q}`, ADMIN);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return (r.body as Bundle).entry?.map((e) => e.resource as AuditEvent) ?? [];
}

/** GET from a chosen local address (127.0.0.0/8 is all loopback on Linux): another source for the gateway. */
function getFrom(localAddress: string, url: string, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress, headers: { authorization: `Bearer ${key}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

const fake = (keyId: string) => `gw_${keyId}_wrongwrongwrongwrongwrong`;

describe('failed authentications: aggregated, kept apart, limited per address', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    await ehr?.stop();
    await redis?.stop();
  });

  it('groups IPv6 addresses by /64 and IPv4-mapped ones as IPv4', () => {
    assert.equal(sourceAddress('::ffff:10.0.0.7'), '10.0.0.7');
    assert.equal(sourceAddress('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(sourceAddress('2001:db8:1:2:bbbb:cccc:dddd:eeee'), '2001:db8:1:2::/64');
    assert.equal(sourceAddress('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(sourceAddress('::1'), '0:0:0:0::/64');
    assert.equal(sourceAddress(undefined), 'unknown');
  });

  describe('aggregation (no limit)', () => {
    let gw: DmGateway;
    before(async () => {
      gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, AUTH_FAILURE_LIMIT: '0', AUTH_FAILURE_WINDOW_S: '600' });
    });
    after(() => gw?.stop());

    it('records one AuditEvent per source at its first failure and one summary with the count when the window ends', async () => {
      const keyA = '00000000000000aa';
      const keyB = '00000000000000bb';
      for (let i = 0; i < 30; i++) assert.equal((await call(gw.url, 'GET', '/api/devices')).status, 401);
      for (let i = 0; i < 20; i++) assert.equal((await call(gw.url, 'GET', '/api/vendors', fake(keyA))).status, 401);
      for (let i = 0; i < 5; i++) assert.equal((await call(gw.url, 'GET', '/api/status', fake(keyB))).status, 401);

      const refused = async () => (await auditOf(gw.url, 'kind=access-refused&limit=1000')).filter((e) => addressOf(e) === '127.0.0.1');
      const first = await refused();
      assert.equal(first.length, 3, `one event per source so far, not one per request (${first.length} for 55 failures)`);
      assert.deepEqual(first.map(credentialOf).sort(), [keyA, keyB, undefined].sort());

      await gw.dm.access.failures.flush(Date.now() + 601_000);
      const all = await refused();
      const summaries = all.filter((e) => countOf(e) !== undefined);
      assert.equal(all.length, 6, 'and one summary per source when the window ends');
      const bySource = Object.fromEntries(summaries.map((e) => [credentialOf(e) ?? 'none', Number(countOf(e))]));
      assert.deepEqual(bySource, { none: 30, [keyA]: 20, [keyB]: 5 });
      for (const e of summaries) {
        assert.ok(e.period?.start && e.period.end && e.period.start <= e.period.end, 'first and last failure');
        assert.equal(e.outcome, '4');
        assert.match(e.outcomeDesc ?? '', /failed authentications from 127\.0\.0\.1/);
      }
      const vendors = summaries.find((e) => credentialOf(e) === keyA);
      assert.ok(
        vendors?.entity?.some((en) => en.what?.identifier?.value === 'GET /api/vendors'),
        'the paths tried',
      );
      assert.equal((await auditOf(gw.url, `entity=${keyA}`)).length, 2, 'found by the key id');

      // Another flush finds nothing more: each window is summarised once.
      await gw.dm.access.failures.flush(Date.now() + 601_000);
      assert.equal((await refused()).length, 6);
    });

    it('made-up key ids do not bring back one event per request: at most 10 sources of their own per address', async () => {
      const before = (await auditOf(gw.url, 'kind=access-refused&limit=1000')).length;
      for (let i = 0; i < 40; i++) {
        const r = await call(gw.url, 'GET', '/api/devices', fake(`1111111111${String(i).padStart(6, '0')}`));
        assert.equal(r.status, 401);
      }
      const added = (await auditOf(gw.url, 'kind=access-refused&limit=1000')).length - before;
      assert.ok(added <= 11, `${added} events for 40 made-up key ids`);
      await gw.dm.access.failures.flush(Date.now() + 601_000);
      const shared = (await auditOf(gw.url, 'kind=access-refused&limit=1000')).find((e) =>
        /more than 10 other key ids/.test(e.outcomeDesc ?? ''),
      );
      assert.equal(countOf(shared as AuditEvent), '30', 'the other 30 in one summary');
    });
  });

  describe('short windows, summarised by the gateway itself', () => {
    let gw: DmGateway;
    before(async () => {
      // Windows of 2 s: three requests of a loaded machine fit in one (with 1 s they could straddle two).
      gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, AUTH_FAILURE_LIMIT: '0', AUTH_FAILURE_WINDOW_S: '2' });
    });
    after(() => gw?.stop());

    it('each window of a source gets its first event and, when it ends, its summary', async () => {
      const key = fake('3333333333333333');
      for (let i = 0; i < 3; i++) assert.equal((await call(gw.url, 'GET', '/api/devices', key)).status, 401);
      await new Promise((r) => setTimeout(r, 2200));
      for (let i = 0; i < 4; i++) assert.equal((await call(gw.url, 'GET', '/api/devices', key)).status, 401);
      const events = await eventually(
        async () => {
          const es = await auditOf(gw.url, 'entity=3333333333333333');
          return es.filter((e) => countOf(e)).length === 2 && es;
        },
        10000,
        'two summaries',
      );
      assert.equal(events.length, 4, 'two windows: a first event and a summary each');
      assert.deepEqual(events.map(countOf).filter(Boolean).sort(), ['3', '4']);
    });
  });

  describe('two streams', () => {
    let gw: DmGateway;
    before(async () => {
      gw = await startDmGateway({
        REDIS_URL: redis.url,
        FHIR_BASE_URL: ehr.url,
        AUDIT_MAX_EVENTS: '100',
        AUDIT_SECURITY_MAX_EVENTS: '100',
        RATE_LIMIT_PER_MINUTE: '0',
      });
    });
    after(() => gw?.stop());

    it('a flood of refusals rolls over the security stream only: lifecycle history stays', async () => {
      assert.equal((await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'KEEP-1', adapter: 'measurements' })).status, 201);
      const device = (await call(gw.url, 'POST', '/api/devices/KEEP-1/credentials', ADMIN)).body.key as string;
      // 403s are recorded one by one (an authenticated caller, rate-limited per credential): 150 of them.
      for (let i = 0; i < 150; i++) assert.equal((await call(gw.url, 'GET', '/api/vendors', device)).status, 403);

      const lifecycle = await auditOf(gw.url, 'entity=KEEP-1');
      assert.deepEqual(lifecycle.map(kindOf).sort(), ['credential-issued', 'device-registered'], 'survived 150 refusals with a cap of 100');
      const client = new IORedis.default(redis.url);
      try {
        assert.equal(await client.zcard('gw:audit:security'), 100, 'the security stream keeps its own cap');
        assert.ok((await client.zrange('gw:audit', 0, -1)).every((s) => !s.includes('"access-refused"')));
      } finally {
        client.disconnect();
      }
      // The API reads both streams, newest first.
      const all = await auditOf(gw.url, 'limit=1000');
      assert.ok(all.some((e) => kindOf(e) === 'access-refused') && all.some((e) => kindOf(e) === 'credential-issued'));
      for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].recorded >= all[i].recorded, 'ordered by time');
    });
  });

  describe('the limit per address', () => {
    let a: DmGateway;
    let b: DmGateway;
    before(async () => {
      const env = { REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, AUTH_FAILURE_LIMIT: '5', AUTH_FAILURE_WINDOW_S: '60' };
      a = await startDmGateway(env);
      b = await startDmGateway(env);
    });
    after(async () => {
      await a?.stop();
      await b?.stop();
    });

    it('after AUTH_FAILURE_LIMIT failures the address gets 429 before any key check, on every instance', async () => {
      const opKey = (await call(a.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'limit-op' })).body.key as string;
      assert.equal((await call(a.url, 'GET', '/api/status', opKey)).status, 200);
      for (let i = 0; i < 3; i++) assert.equal((await call(a.url, 'GET', '/api/status', fake('2222222222222222'))).status, 401);
      for (let i = 0; i < 2; i++) assert.equal((await call(b.url, 'GET', '/api/status')).status, 401);

      const scrypt = scryptVerifications();
      for (const gw of [a, b]) {
        const r = await call(gw.url, 'GET', '/api/status', fake('2222222222222222'));
        assert.equal(r.status, 429, 'the sixth failure from this address, counted across both instances');
        assert.equal(r.body.resourceType, 'OperationOutcome');
        assert.equal(r.body.issue[0].code, 'throttled');
        const retry = Number(r.headers.get('retry-after'));
        assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
      }
      assert.equal(scryptVerifications(), scrypt, 'no scrypt was spent on a blocked address');
      assert.equal((await call(a.url, 'GET', '/api/status', opKey)).status, 429, 'a valid key from that address waits too');
      assert.equal((await call(a.url, 'GET', '/api/status', ADMIN)).status, 429, 'the admin key as well');
      assert.equal((await call(a.url, 'GET', '/healthz')).status, 200, 'routes without a credential still answer');
      assert.equal(await getFrom('127.0.0.2', `${a.url}/api/status`, opKey), 200, 'another address is not affected');

      // Ending the window (as its end would) lifts the block and writes the summaries.
      await a.dm.access.failures.flush(Date.now() + 61_000);
      const events = await auditOf(a.url, 'kind=access-refused&limit=1000');
      const limited = events.find((e) => e.entity?.some((en) => en.what?.identifier?.value === 'auth-failure-limit'));
      assert.ok(limited, 'a summary of the requests the limit refused');
      assert.equal(countOf(limited), '4');
      assert.match(limited.outcomeDesc ?? '', /^429: 4 requests from 127\.0\.0\.1 refused without a key check after 5 failed/);
      assert.equal(countOf(events.find((e) => credentialOf(e) === '2222222222222222' && countOf(e)) as AuditEvent), '3');
    });
  });

  describe('the verdict of an address under its limit is remembered for a second, until a request from it fails', () => {
    let gw: DmGateway;
    before(async () => {
      gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, AUTH_FAILURE_LIMIT: '3', AUTH_FAILURE_WINDOW_S: '60' });
    });
    after(() => gw?.stop());

    it('asks Redis once for a run of passing requests, and again after each failure, so the limit still holds', async () => {
      const failures = gw.dm.access.failures;
      const original = failures.blockedFor.bind(failures);
      let asked = 0;
      failures.blockedFor = (remote) => {
        asked++;
        return original(remote);
      };
      const opKey = (await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'verdict-op' })).body.key as string;
      const from = '127.0.0.5';
      asked = 0;
      for (let i = 0; i < 5; i++) assert.equal(await getFrom(from, `${gw.url}/api/status`, opKey), 200);
      assert.equal(asked, 1, 'one check for five passing requests within the second');
      // Each failure drops the verdict: the request after it is checked, and the fourth failure is refused 429.
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push(await getFrom(from, `${gw.url}/api/status`, fake('5555555555555555')));
      assert.deepEqual(statuses, [401, 401, 401, 429]);
      assert.equal(await getFrom(from, `${gw.url}/api/status`, opKey), 429, 'a valid key from the blocked address waits');
      assert.ok(asked >= 4, `checked after every failure (${asked})`);
    });
  });
});
