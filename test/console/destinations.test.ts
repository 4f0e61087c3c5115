/**
 * The console with two destinations, two real sandbox EHRs: a reading the second EHR refuses dies there only. The
 * message browser lists that dead letter, named with its destination (before, it showed the first destination's
 * alone), opens it, and its replay queues it again for that destination only: each EHR ends with the reading once.
 * The overview gives each destination's EHR (with its circuit breaker), queue and dead letters.
 */
import assert from 'node:assert/strict';
import {
  eventually,
  postJson,
  startEhr,
  startGateway,
  startRedis,
  type TestEhr,
  type TestGateway,
  type TestRedis,
} from '../helpers/harness.js';
import { destinationsFile, observations, reading } from '../destinations/helpers.js';
import { ADMIN, csrfOf, get, operatorKey, post, signIn } from './helpers.js';

describe('console: dead letters and queues of every destination', function () {
  this.timeout(90_000);
  let redis: TestRedis;
  let a: TestEhr;
  let b: TestEhr;
  let gw: TestGateway;

  before(async () => {
    redis = await startRedis();
    a = await startEhr();
    b = await startEhr();
    gw = await startGateway({
      REDIS_URL: redis.url,
      ADMIN_API_KEY: ADMIN,
      UNKNOWN_PATIENT_POLICY: 'create',
      DESTINATIONS_FILE: destinationsFile({
        destinations: [
          { name: 'ehr', baseUrl: a.url },
          { name: 'research', baseUrl: b.url },
        ],
      }),
    });
  });
  after(async () => {
    await gw?.stop();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  it("lists the second destination's dead letter with its name, opens it, and replays it to that destination only", async () => {
    // research refuses (400: not retried) the first delivery of this device's reading; ehr takes it.
    b.faults.push({ status: 400, match: (req) => req.method === 'POST' && JSON.stringify(req.body ?? '').includes('DL-RESEARCH') });
    const r = await postJson(`${gw.url}/ingest/measurements`, reading('DL-RESEARCH', 93), { authorization: `Bearer ${ADMIN}` });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await eventually(async () => (await observations(a)).total === 1, 30_000, 'the reading at ehr');
    const dead = await eventually(
      async () => {
        const l = await fetch(`${gw.url}/api/dead-letters?destination=research`, { headers: { authorization: `Bearer ${ADMIN}` } });
        const body = (await l.json()) as { total: number; items: { id: string }[] };
        return body.total === 1 ? body.items[0].id : undefined;
      },
      30_000,
      'the dead letter at research',
    );

    const s = await signIn(gw.url, (await operatorKey(gw.url, 'dest-op')).key);
    assert.equal(s.status, 303);
    const list = await get(`${gw.url}/console/messages?kind=dead-letter`, s.cookie);
    assert.equal(list.status, 200);
    assert.match(list.text, new RegExp(`<tr data-id="${dead}"><td>[^<]+</td><td>dead letter at research</td>`));
    assert.match(list.text, /Replay all 1 listed/);
    // The search narrows to one destination; the first destination has none.
    assert.match((await get(`${gw.url}/console/messages?kind=dead-letter&destination=ehr`, s.cookie)).text, /Replay all 0 listed/);
    assert.match((await get(`${gw.url}/console/messages?kind=dead-letter&destination=research`, s.cookie)).text, /Replay all 1 listed/);

    const link = new RegExp(`href="(/console/messages/dead-letter/${dead}\\?destination=research)"`).exec(list.text)?.[1];
    assert.ok(link, 'the row links to the dead letter at its destination');
    const detail = await get(`${gw.url}${link}`, s.cookie);
    assert.equal(detail.status, 200, detail.text.slice(0, 300));
    assert.match(detail.text, /<dt>Destination<\/dt><dd>research<\/dd>/);

    // The overview gives both destinations' dead letters.
    const overview = await get(`${gw.url}/console/overview/panel`, s.cookie);
    assert.match(overview.text, /<li>ehr: 0 <a/);
    assert.match(overview.text, /<li>research: 1 <a/);
    // And each destination's EHR with its circuit breaker.
    assert.match(overview.text, new RegExp(`<li>ehr: ${a.url}[^<]* <span class="ok">\\(circuit closed\\)</span></li>`));
    assert.match(overview.text, new RegExp(`<li>research: ${b.url}[^<]* <span class="ok">\\(circuit closed\\)</span></li>`));

    const replay = await post(`${gw.url}${link.replace('?', '/replay?')}`, s.cookie, { _csrf: csrfOf(detail.text) });
    assert.equal(replay.status, 200, replay.text.slice(0, 300));
    assert.match(replay.text, /Replay: queued again as job \S+ for research/);
    await eventually(async () => (await observations(b)).total === 1, 30_000, 'the replayed reading at research');
    const none = await fetch(`${gw.url}/api/dead-letters?destination=research`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(((await none.json()) as { total: number }).total, 0);
    assert.equal((await observations(a)).total, 1, 'ehr was not written again');
  });
});
