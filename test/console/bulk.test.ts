/**
 * The console's bulk paths over HTTP, through a real session (sign in with a key, the CSRF token from the page):
 * bulk device registration from a CSV upload with a result per row, bulk replay of a filtered selection of dead
 * letters with its progress and per-item results (delivered once to the EHR), and the audit export (FHIR Bundle and
 * NDJSON) with its filters and its refusal to a vendor.
 */
import assert from 'node:assert/strict';
import { useStack } from '../helpers/harness.js';
import { ADMIN, csrfOf, get, signIn, vendorKey } from './helpers.js';

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
  const stack = useStack({ ADMIN_API_KEY: ADMIN });
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
});
