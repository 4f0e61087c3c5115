/**
 * The console with two destinations, two real sandbox EHRs: a reading the second EHR refuses dies there only. The
 * message browser lists that dead letter, named with its destination (before, it showed the first destination's
 * alone), opens it, and its replay queues it again for that destination only: each EHR ends with the reading once.
 * The overview gives each destination's EHR (with its circuit breaker), queue and dead letters.
 */
import assert from 'node:assert/strict';
import { eventually, postJson } from '../helpers/harness.js';
import { observations, reading, useTwoEhrs } from '../destinations/helpers.js';
import { ADMIN, csrfOf, get, operatorKey, post, signIn } from './helpers.js';

describe('console: dead letters and queues of every destination', function () {
  this.timeout(90_000);
  const two = useTwoEhrs(
    (a, b) => [
      { name: 'ehr', baseUrl: a.url },
      { name: 'research', baseUrl: b.url },
    ],
    { ADMIN_API_KEY: ADMIN },
  );

  it("lists the second destination's dead letter with its name, opens it, and replays it to that destination only", async () => {
    // research refuses (400: not retried) the first delivery of this device's reading; ehr takes it.
    two.b.faults.push({ status: 400, match: (req) => req.method === 'POST' && JSON.stringify(req.body ?? '').includes('DL-RESEARCH') });
    const r = await postJson(`${two.gw.url}/ingest/measurements`, reading('DL-RESEARCH', 93), { authorization: `Bearer ${ADMIN}` });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    await eventually(async () => (await observations(two.a)).total === 1, 30_000, 'the reading at ehr');
    const dead = await eventually(
      async () => {
        const l = await fetch(`${two.gw.url}/api/dead-letters?destination=research`, { headers: { authorization: `Bearer ${ADMIN}` } });
        const body = (await l.json()) as { total: number; items: { id: string }[] };
        return body.total === 1 ? body.items[0].id : undefined;
      },
      30_000,
      'the dead letter at research',
    );

    const s = await signIn(two.gw.url, (await operatorKey(two.gw.url, 'dest-op')).key);
    assert.equal(s.status, 303);
    const list = await get(`${two.gw.url}/console/messages?kind=dead-letter`, s.cookie);
    assert.equal(list.status, 200);
    assert.match(list.text, new RegExp(`<tr data-id="${dead}"><td>[^<]+</td><td>dead letter at research</td>`));
    assert.match(list.text, /Replay all 1 listed/);
    // The search narrows to one destination; the first destination has none.
    assert.match((await get(`${two.gw.url}/console/messages?kind=dead-letter&destination=ehr`, s.cookie)).text, /Replay all 0 listed/);
    assert.match((await get(`${two.gw.url}/console/messages?kind=dead-letter&destination=research`, s.cookie)).text, /Replay all 1 listed/);

    const link = new RegExp(`href="(/console/messages/dead-letter/${dead}\\?destination=research)"`).exec(list.text)?.[1];
    assert.ok(link, 'the row links to the dead letter at its destination');
    const detail = await get(`${two.gw.url}${link}`, s.cookie);
    assert.equal(detail.status, 200, detail.text.slice(0, 300));
    assert.match(detail.text, /<dt>Destination<\/dt><dd>research<\/dd>/);

    // The overview gives both destinations' dead letters.
    const overview = await get(`${two.gw.url}/console/overview/panel`, s.cookie);
    assert.match(overview.text, /<li>ehr: 0 <a/);
    assert.match(overview.text, /<li>research: 1 <a/);
    // And each destination's EHR with its circuit breaker.
    assert.match(overview.text, new RegExp(`<li>ehr: ${two.a.url}[^<]* <span class="ok">\\(circuit closed\\)</span></li>`));
    assert.match(overview.text, new RegExp(`<li>research: ${two.b.url}[^<]* <span class="ok">\\(circuit closed\\)</span></li>`));

    const replay = await post(`${two.gw.url}${link.replace('?', '/replay?')}`, s.cookie, { _csrf: csrfOf(detail.text) });
    assert.equal(replay.status, 200, replay.text.slice(0, 300));
    assert.match(replay.text, /Replay: queued again as job \S+ for research/);
    await eventually(async () => (await observations(two.b)).total === 1, 30_000, 'the replayed reading at research');
    const none = await fetch(`${two.gw.url}/api/dead-letters?destination=research`, { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(((await none.json()) as { total: number }).total, 0);
    assert.equal((await observations(two.a)).total, 1, 'ehr was not written again');
  });
});
