/**
 * The console's bulk paths over HTTP, through a real session (sign in with a key, the CSRF token from the page):
 * bulk device registration from a CSV upload with a result per row, bulk replay of a filtered selection of dead
 * letters with its progress and per-item results (delivered once to the EHR), and the audit export (FHIR Bundle and
 * NDJSON) with its filters and its refusal to a vendor.
 */
import assert from 'node:assert/strict';
import type { Observation } from 'fhir/r4';
import { eventually, postJson, useStack } from '../helpers/harness.js';
import { ADMIN, csrfOf, get, operatorKey, post, signIn, vendorKey } from './helpers.js';

/** Posts a CSV file as multipart/form-data, as the browser's file input does. */
async function upload(url: string, cookie: string, csv: string, csrf?: string): Promise<{ status: number; text: string }> {
  const form = new FormData();
  if (csrf !== undefined) form.set('_csrf', csrf);
  form.set('csv', new Blob([csv], { type: 'text/csv' }), 'devices.csv');
  const r = await fetch(url, { method: 'POST', headers: { cookie }, body: form, redirect: 'manual' });
  return { status: r.status, text: await r.text() };
}

/** The rows of the console's per-row result table: [row, device, result]. */
function bulkRows(page: string): string[][] {
  const table = /<table id="bulk-results">([\s\S]*?)<\/table>/.exec(page);
  assert.ok(table, `the page shows the per-row results: ${page.slice(0, 800)}`);
  const body = /<tbody>([\s\S]*?)<\/tbody>/.exec(table[1])?.[1] ?? '';
  return [...body.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) =>
    [...m[1].matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) =>
      c[1]
        .replace(/&#39;/g, "'")
        .replace(/&quot;/g, '"')
        .trim(),
    ),
  );
}

const adminGet = async (url: string) => {
  const r = await fetch(url, { headers: { authorization: `Bearer ${ADMIN}` } });
  return { status: r.status, body: r.status === 200 ? await r.json() : undefined };
};

describe('console: bulk registration, bulk replay and audit export (HTTP)', function () {
  this.timeout(90_000);
  // One EHR transaction in flight, so that the bulk replay's test can hold one and have the next readings share one.
  const stack = useStack({ ADMIN_API_KEY: ADMIN, UNKNOWN_PATIENT_POLICY: 'create', DELIVERY_TRANSACTIONS: '1' });
  const url = () => stack.gw.url;

  it('registers the valid rows of a CSV upload and reports each refused row with its line and reason; CSRF required', async () => {
    const vkey = await vendorKey(url(), 'acme-bulk');
    await vendorKey(url(), 'globex-bulk');
    const s = await signIn(url(), vkey);
    assert.equal(s.status, 303);
    const csv = [
      'id,serialNumber,eui64,type,vendor',
      'csv-ok-1,SN-1,,pulse-oximeter,',
      'csv-bad-eui,SN-2,not-hex,pulse-oximeter,',
      '', // a blank line: skipped, but it still counts as a line of the file
      'csv-other-vendor,"SN-3',
      'second line of a quoted field",,pulse-oximeter,globex-bulk',
      'csv-ok-2,SN-4,00-11-22-33-44-55-66-77,thermometer,acme-bulk',
      'bad id with spaces,SN-5,,,',
    ].join('\r\n');

    // Without the token, and with a wrong one: 403, nothing registered.
    assert.equal((await upload(`${url()}/console/devices/bulk`, s.cookie, csv)).status, 403);
    assert.equal((await upload(`${url()}/console/devices/bulk`, s.cookie, csv, 'y'.repeat(43))).status, 403);
    assert.equal((await adminGet(`${url()}/api/devices/csv-ok-1`)).status, 404, 'a refused upload registered nothing');

    const token = csrfOf((await get(`${url()}/console/devices`, s.cookie)).text);
    const r = await upload(`${url()}/console/devices/bulk`, s.cookie, csv, token);
    assert.equal(r.status, 200, r.text.slice(0, 500));
    assert.match(r.text, /<strong>2<\/strong> registered, <strong>3<\/strong> refused/);
    const rows = bulkRows(r.text);
    assert.equal(rows.length, 5, JSON.stringify(rows));
    // Each row names the line of the file it came from (the header is line 1) and the reason of a refusal.
    assert.deepEqual(
      rows.map((x) => x.slice(0, 2)),
      [
        ['2', 'csv-ok-1'],
        ['3', 'csv-bad-eui'],
        ['5', 'csv-other-vendor'],
        ['7', 'csv-ok-2'],
        ['8', 'bad id with spaces'],
      ],
    );
    assert.equal(rows[0][2], 'registered');
    assert.equal(rows[3][2], 'registered');
    assert.match(rows[1][2], /^422: .*eui64 must be 16 hex digits/);
    assert.match(rows[2][2], /^422: .*registers devices of its own vendor \('acme-bulk'\) only/);
    assert.match(rows[4][2], /^422: .*id 'bad id with spaces' must match/);

    // Valid rows registered as the vendor, whole; refused rows not at all.
    const ok1 = await adminGet(`${url()}/api/devices/csv-ok-1`);
    assert.equal(ok1.body.vendor, 'acme-bulk');
    assert.deepEqual(ok1.body.identifiers, { serialNumber: 'SN-1' });
    assert.equal((await adminGet(`${url()}/api/devices/csv-ok-2`)).body.vendor, 'acme-bulk', 'its own vendor named in the row');
    for (const id of ['csv-bad-eui', 'csv-other-vendor'])
      assert.equal((await adminGet(`${url()}/api/devices/${id}`)).status, 404, `${id} not registered`);
    const other = await adminGet(`${url()}/api/devices?vendor=globex-bulk`);
    assert.deepEqual(other.body, [], 'nothing registered for the other vendor');

    // The same file again: every row refused (already registered or invalid), nothing changed.
    const again = await upload(`${url()}/console/devices/bulk`, s.cookie, csv, token);
    assert.match(again.text, /<strong>0<\/strong> registered, <strong>5<\/strong> refused/);
    assert.match(bulkRows(again.text)[0][2], /^409: .*already registered/);

    // A file with only a header is refused as a whole, with the reason shown.
    const empty = await upload(`${url()}/console/devices/bulk`, s.cookie, 'id,type\r\n', token);
    assert.match(empty.text, /The file was refused: the batch is empty/);
  });
  it('replays a filtered selection of dead letters in bulk: progress, a result per item, each delivered once', async () => {
    const reading = (deviceId: string, minute: number) => ({
      deviceId,
      patientId: 'MRN-BULK',
      timestamp: `2026-11-24T09:${String(minute).padStart(2, '0')}:00Z`,
      measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + minute, unit: '%' }],
    });
    // The EHR refuses (400: not retried) every delivery of these two devices until the replay below, however delivery
    // groups their readings. Readings that share a transaction the EHR refuses are written again one by one, and each
    // of those is refused too: so more refusals than any grouping can use.
    const naming = (device: string) => (req: { method: string; body?: unknown }) =>
      req.method === 'POST' && JSON.stringify(req.body ?? '').includes(device);
    let open = () => {};
    const held = new Promise<void>((r) => (open = r));
    // The first reading's transaction is held, then refused: the next three wait for it and then share a transaction.
    stack.ehr.faults.push({ status: 400, gate: held, match: naming('replay-a') });
    for (let i = 0; i < 8; i++)
      stack.ehr.faults.push({ status: 400, match: naming('replay-a') }, { status: 400, match: naming('replay-b') });
    const auth = { authorization: `Bearer ${ADMIN}` };
    assert.equal((await postJson(`${url()}/ingest/measurements`, reading('replay-a', 1), auth)).status, 202);
    await eventually(() => stack.ehr.faults.length === 16, 10_000, "the first reading's transaction at the EHR");
    for (let i = 2; i <= 3; i++) assert.equal((await postJson(`${url()}/ingest/measurements`, reading('replay-a', i), auth)).status, 202);
    assert.equal((await postJson(`${url()}/ingest/measurements`, reading('replay-b', 9), auth)).status, 202);
    const queue = stack.gw.gateway.queue;
    await eventually(async () => (await queue?.counts())?.active === 4, 10_000, 'the three later readings taken by the worker');
    open();
    await eventually(async () => (await adminGet(`${url()}/api/dead-letters`)).body?.total === 4, 30_000, 'four dead letters');
    // The three later readings went together once, then alone: five transactions, each refused.
    assert.equal(stack.ehr.requests.filter((r) => r.method === 'POST').length, 5);
    stack.ehr.faults.length = 0;
    // The Observations at the EHR of a device's readings, told apart by their times (minute 1-3: replay-a, 9: replay-b).
    const minutes = { 'replay-a': ['01', '02', '03'], 'replay-b': ['09'] };
    const delivered = async (device: keyof typeof minutes) =>
      (await stack.ehr.search<Observation>('Observation', { _count: '100' }))
        .map((o) => o.effectiveDateTime?.slice(14, 16) ?? '')
        .filter((m) => minutes[device].includes(m))
        .sort();
    assert.deepEqual(await delivered('replay-a'), []);

    const op = await operatorKey(url(), 'bulk-op');
    const s = await signIn(url(), op.key);
    const list = await get(`${url()}/console/messages?kind=dead-letter&deviceId=replay-a`, s.cookie);
    assert.equal(list.status, 200);
    assert.match(list.text, /Replay all 3 listed/);
    const ids = [...list.text.matchAll(/<tr data-id="([^"]+)">/g)].map((m) => m[1]);
    assert.equal(ids.length, 3);
    const token = csrfOf(list.text);

    // Without the token: refused, nothing replayed.
    const noToken = await post(`${url()}/console/messages/replay`, s.cookie, { kind: 'dead-letter', deviceId: 'replay-a' });
    assert.equal(noToken.status, 403);

    // As htmx sends it: a fragment with the progress bar, polling until done.
    const r = await fetch(`${url()}/console/messages/replay`, {
      method: 'POST',
      headers: { cookie: s.cookie, 'hx-request': 'true', 'x-csrf-token': token },
      body: new URLSearchParams({ kind: 'dead-letter', deviceId: 'replay-a' }),
    });
    assert.equal(r.status, 200);
    const fragment = await r.text();
    const bulkId = /id="bulk-([0-9a-f-]{36})"/.exec(fragment)?.[1];
    assert.ok(bulkId, fragment);
    assert.match(fragment, /<progress id="p-[^"]+" max="3" value="[0-3]">/);
    const done = await eventually(
      async () => {
        const p = await get(`${url()}/console/messages/bulk/${bulkId}`, s.cookie);
        return /Replayed 3 of 3: done/.test(p.text) ? p.text : undefined;
      },
      30_000,
      'the bulk replay to finish',
    );
    assert.match(done, /<progress id="p-[^"]+" max="3" value="3">/);
    assert.doesNotMatch(done, /hx-trigger="every 1s"/, 'a finished bulk replay stops polling');
    const results = [...done.matchAll(/<tr><td>dead-letter ([^<]+)<\/td><td class="(ok|error)">([^<]*)<\/td><\/tr>/g)];
    assert.deepEqual(results.map((m) => m[1]).sort(), [...ids].sort(), 'one result per item of the selection');
    for (const m of results) {
      assert.equal(m[2], 'ok');
      assert.match(m[3], /queued again as job \S+/);
    }

    // Each replayed reading is delivered once; the one outside the filter stays a dead letter.
    await eventually(async () => (await delivered('replay-a')).length === 3, 30_000, 'the three replayed readings delivered');
    const left = (await adminGet(`${url()}/api/dead-letters`)).body;
    assert.equal(left.total, 1);
    assert.deepEqual(await delivered('replay-b'), []);
    // Replaying the same selection again finds nothing to replay: no second delivery.
    const again = await get(`${url()}/console/messages?kind=dead-letter&deviceId=replay-a`, s.cookie);
    assert.match(again.text, /Replay all 0 listed/);
    assert.deepEqual(await delivered('replay-a'), ['01', '02', '03'], 'each reading once');

    // Another user cannot follow this bulk replay.
    const other = await signIn(url(), (await operatorKey(url(), 'bulk-op-2')).key);
    assert.equal((await get(`${url()}/console/messages/bulk/${bulkId}`, other.cookie)).status, 404);
  });
  it("exports the audit trail as a FHIR Bundle and as NDJSON, filtered, with the console's own events; a vendor is refused", async () => {
    const before = new Date().toISOString();
    const a = await signIn(url(), ADMIN);
    const token = csrfOf((await get(`${url()}/console/devices`, a.cookie)).text);
    await vendorKey(url(), 'acme-audit');
    const reg = await post(`${url()}/console/devices/register`, a.cookie, { id: 'audit-dev', vendor: 'acme-audit', _csrf: token });
    assert.equal(reg.status, 303, reg.text.slice(0, 300));
    const op = await operatorKey(url(), 'audit-op');
    const o = await signIn(url(), op.key);
    const opToken = csrfOf((await get(`${url()}/console/devices/audit-dev`, o.cookie)).text);
    assert.equal((await post(`${url()}/console/devices/audit-dev/activate`, o.cookie, { _csrf: opToken })).status, 200);

    const exported = async (format: 'json' | 'ndjson', filter: Record<string, string>, cookie = o.cookie) => {
      const r = await fetch(`${url()}/console/audit/export.${format}?${new URLSearchParams(filter)}`, { headers: { cookie } });
      return {
        status: r.status,
        type: r.headers.get('content-type') ?? '',
        disposition: r.headers.get('content-disposition') ?? '',
        text: await r.text(),
      };
    };
    const ndjson = (text: string) =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
    const subtypes = (e: any): string[] => (e.subtype ?? []).map((x: any) => x.code);
    const agentOf = (e: any): string => e.agent?.[0]?.who?.identifier?.value;

    // By entity, as NDJSON: one AuditEvent per line, every one about the device; its registration is there.
    const byEntity = await eventually(
      async () => {
        const r = await exported('ndjson', { entity: 'audit-dev' });
        const events = ndjson(r.text);
        return events.some((e) => subtypes(e).includes('device-activate')) ? { r, events } : undefined;
      },
      10_000,
      'the activation in the trail',
    );
    assert.equal(byEntity.r.status, 200);
    assert.match(byEntity.r.type, /^application\/fhir\+ndjson/);
    assert.match(byEntity.r.disposition, /^attachment; filename="audit-[^"]+\.ndjson"$/);
    assert.ok(byEntity.r.text.endsWith('\n'));
    for (const e of byEntity.events) {
      assert.equal(e.resourceType, 'AuditEvent');
      assert.ok(
        e.entity.some((x: any) => x.what?.identifier?.value === 'audit-dev'),
        JSON.stringify(e.entity),
      );
    }
    assert.ok(byEntity.events.some((e) => subtypes(e).includes('device-registered')));

    // By action (a gateway subtype), as a FHIR Bundle: the console's own sign-ins, the admin's and the operator's.
    const signIns = await exported('json', { action: 'console-sign-in', since: before });
    assert.equal(signIns.status, 200);
    assert.match(signIns.type, /^application\/fhir\+json/);
    assert.match(signIns.disposition, /\.json"$/);
    const bundle = JSON.parse(signIns.text);
    assert.equal(bundle.resourceType, 'Bundle');
    const events = bundle.entry.map((x: any) => x.resource);
    assert.ok(events.length >= 2);
    for (const e of events) {
      assert.equal(e.resourceType, 'AuditEvent');
      assert.ok(subtypes(e).includes('console-sign-in'), subtypes(e).join(','));
    }
    const opAgent = events.map(agentOf).find((x: string) => x?.startsWith('operator:'));
    assert.ok(opAgent, events.map(agentOf).join(','));
    assert.ok(events.map(agentOf).includes('admin:admin') || events.some((e: any) => agentOf(e)?.startsWith('admin')));

    // By agent, C/R/U/D/E action and time: the operator's console change (E) after the sign-in, nothing of others.
    const mine = await eventually(
      async () => {
        const r = ndjson((await exported('ndjson', { agent: opAgent, since: before })).text);
        return r.some((e) => subtypes(e).includes('console-action')) ? r : undefined;
      },
      10_000,
      "the operator's console action in the trail",
    );
    for (const e of mine) assert.equal(agentOf(e), opAgent);
    const kinds = mine.flatMap(subtypes);
    assert.ok(kinds.includes('console-sign-in') && kinds.includes('console-action') && kinds.includes('device-activate'), kinds.join(','));
    const action = mine.find((e) => subtypes(e).includes('console-action'));
    assert.ok(action.entity.some((x: any) => x.what?.identifier?.value === 'POST /console/devices/audit-dev/activate'));
    // A time window before any of it: empty (an empty NDJSON file, not an error).
    const empty = await exported('ndjson', { agent: opAgent, until: before });
    assert.equal(empty.status, 200);
    assert.equal(empty.text, '');

    // A vendor may not see the audit trail: neither the page nor either export.
    const v = await signIn(url(), await vendorKey(url(), 'acme-audit'));
    for (const format of ['json', 'ndjson'] as const) {
      const r = await exported(format, { entity: 'audit-dev' }, v.cookie);
      assert.equal(r.status, 403);
      assert.doesNotMatch(r.text, /AuditEvent/);
    }
    assert.equal((await get(`${url()}/console/audit`, v.cookie)).status, 403);
  });
});
