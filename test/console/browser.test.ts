/**
 * The console in a real headless Chromium (Debian's, driven by playwright-core; never downloaded) against a real
 * gateway with Redis and the sandbox EHR behind its fault injector: sign in; register, activate and credential a device;
 * post a reading with the device key and watch the overview counters and the device's last seen change; register a
 * mapping with a mistake, see the located error, fix it, save; a reading the EHR refuses is found in the message
 * browser by device id, replayed and delivered; sign out (the old cookie no longer works); a vendor cannot open another
 * vendor's device. axe-core runs on every page (no serious or critical violation) and each page is saved as a
 * screenshot in test-artifacts/console/ (git-ignored).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { eventually, postJson, REPO_ROOT, useStack } from '../helpers/harness.js';
import { ADMIN, vendorKey } from './helpers.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = join(REPO_ROOT, 'test-artifacts/console');
const AXE = readFileSync(join(REPO_ROOT, 'node_modules/axe-core/axe.min.js'), 'utf8');

const reading = (deviceId: string, minute: number, value = 97) => ({
  deviceId,
  patientId: 'MRN-CON1',
  timestamp: `2026-11-23T12:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

const hrDevice = (valueExpression: string) =>
  JSON.stringify(
    {
      templateType: 'CollectionContent',
      template: [
        {
          templateType: 'JsonPathContent',
          template: {
            typeName: 'hr',
            typeMatchExpression: '$..[?(@heartRate)]',
            deviceIdExpression: '$.deviceId',
            patientIdExpression: '$.patientId',
            timestampExpression: '$.time',
            values: [{ valueName: 'hr', valueExpression, required: true }],
          },
        },
      ],
    },
    null,
    2,
  );
const hrFhir = JSON.stringify(
  {
    templateType: 'CollectionFhir',
    template: [
      {
        templateType: 'CodeValueFhir',
        template: {
          typeName: 'hr',
          periodInterval: 0,
          codes: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }],
          value: { valueName: 'hr', valueType: 'Quantity', unit: '/min', code: '/min', system: 'http://unitsofmeasure.org' },
        },
      },
    ],
  },
  null,
  2,
);
const hrSample = JSON.stringify({ deviceId: 'HR-C1', patientId: 'MRN-C1', heartRate: 71, time: '2026-11-23T08:00:00Z' });

describe('console: real flows in headless Chromium', function () {
  this.timeout(120_000);
  const stack = useStack({ ADMIN_API_KEY: ADMIN, UNKNOWN_DEVICE_POLICY: 'reject', UNKNOWN_PATIENT_POLICY: 'create' });
  let browser: Browser;
  let page: Page;
  const url = (p: string) => `${stack.gw.url}${p}`;
  const checked: string[] = [];

  /** axe-core on the page as it is now: no serious or critical violation; then a screenshot. */
  async function audit(name: string): Promise<void> {
    await page.evaluate(AXE); // through the DevTools protocol: the page's CSP (script-src 'self') does not apply
    const violations = (await page.evaluate(async () => {
      const r = await (window as any).axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v: any) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n: any) => n.target.join(' ')).slice(0, 3) }));
    })) as { id: string; impact: string; nodes: string[] }[];
    const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad, [], `${name}: axe-core found serious/critical violations`);
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    checked.push(name);
  }

  before(async function () {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium package (.ci/run does)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('dialog', (d) => void d.accept()); // the confirmations of lifecycle actions and replays
  });
  after(async () => {
    await browser?.close();
  });

  it('goes through sign-in, devices, overview, the mapping editor, the message browser, sign-out and vendor isolation', async () => {
    // ---- sign in ------------------------------------------------------------------------------------------------------
    await page.goto(url('/console'));
    assert.match(page.url(), /\/console\/login$/, 'without a session the console sends you to sign in');
    await audit('01-sign-in');
    await page.fill('#key', 'wrong-key');
    await page.click('button[type=submit]');
    await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
    await page.fill('#key', ADMIN);
    await page.keyboard.press('Enter'); // keyboard only
    await page.waitForURL(url('/console'));
    await page.locator('#overview').waitFor();
    await audit('02-overview-empty');

    // ---- register, activate and credential a device ------------------------------------------------------------------
    const vkey = await vendorKey(stack.gw.url, 'acme-ui');
    await page.click('nav >> text=Devices');
    await page.fill('#r-id', 'ui-dev-1');
    await page.fill('#r-type', 'pulse-oximeter');
    await page.fill('#r-adapter', 'measurements');
    await page.fill('#r-vendor', 'acme-ui');
    await page.click('form[action="/console/devices/register"] button');
    await page.waitForURL(/\/console\/devices\/ui-dev-1/);
    assert.match((await page.textContent('#device-state')) ?? '', /registered/);
    assert.equal((await page.textContent('#last-seen'))?.trim(), '—');
    await page.click('button:has-text("Activate")');
    await eventually(async () => /active/.test((await page.textContent('#device-state')) ?? ''), 10_000, 'the device to be active');
    await page.click('button:has-text("Issue a new key")');
    const key = ((await page.locator('#new-key').textContent({ timeout: 10_000 })) ?? '').trim();
    assert.match(key, /^gw_[0-9a-f]{16}_/);
    await audit('03-device-with-new-key');

    // ---- a reading with the device key: the overview counters and the device's last seen --------------------------------
    // A device key files readings only for its assigned patient (DEVICE_PATIENT_BINDING=assigned-only).
    const assign = await fetch(url('/api/devices/ui-dev-1/assignment'), {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ patientId: 'MRN-CON1' }),
    });
    assert.equal(assign.status, 200);
    assert.equal((await postJson(url('/ingest/measurements'), reading('ui-dev-1', 1), { authorization: `Bearer ${key}` })).status, 202);
    await page.click('nav >> text=Overview');
    const row = page.locator('#traffic tr[data-channel="http"][data-adapter="measurements"]');
    // No reload: the panel refreshes itself (htmx polling every 5 s).
    await eventually(
      async () =>
        /^1 \/ 1$/.test(
          (
            (await row
              .locator('[data-counter="delivered"]')
              .textContent()
              .catch(() => '')) ?? ''
          ).trim(),
        ),
      30_000,
      'the overview to show the delivered reading',
    ).catch(async (e) => {
      console.log(await page.textContent('#overview'));
      throw e;
    });
    assert.equal((await row.locator('[data-counter="received"]').textContent())?.trim(), '1 / 1');
    assert.equal((await page.textContent('#devices-online'))?.trim(), '1');
    await audit('04-overview-traffic');
    await page.goto(url('/console/devices/ui-dev-1'));
    assert.notEqual((await page.textContent('#last-seen'))?.trim(), '—', 'last seen moved');
    assert.equal((await page.textContent('#messages'))?.trim(), '1');
    await page.goto(url('/console/devices?status=online'));
    assert.equal(await page.locator('#devices tr[data-device="ui-dev-1"]').count(), 1);
    await audit('05-devices');

    // ---- the mapping editor: a mistake located, fixed, saved ---------------------------------------------------------------
    await page.goto(url('/console/adapters/new'));
    await page.fill('#e-id', 'acme-hr');
    await page.fill('#e-vendor', 'acme-ui');
    await page.fill('#e-fhirMapping', hrFhir);
    await page.fill('#e-sample', hrSample);
    await page.fill('#e-deviceMapping', hrDevice('heartRate')); // a JSONPath without its '$'
    // The error is located: the file and the JSONPath of the broken expression in it.
    const located = page.locator(
      '#issues li.error[data-file="deviceMapping"][data-path="$.template[0].template.values[0].valueExpression"]',
    );
    await located.waitFor({ timeout: 15_000 });
    assert.match((await located.textContent()) ?? '', /must start with '\$'/);
    await audit('06-editor-error');
    await page.fill('#e-deviceMapping', hrDevice('$.heartRate'));
    await page.getByRole('status').filter({ hasText: 'No errors' }).waitFor({ timeout: 15_000 });
    assert.match((await page.textContent('#bundle')) ?? '', /"resourceType": "Bundle"/);
    assert.match((await page.textContent('#readings')) ?? '', /8867-4/);
    await audit('07-editor-ok');
    await page.click('#save');
    await page.waitForURL(/\/console\/adapters\/acme-hr\?saved=1/);
    await page.getByText('Saved as version 1').waitFor();
    await audit('08-adapter-saved');

    // ---- a reading the EHR refuses: found by device id, replayed, delivered --------------------------------------------
    stack.ehr.faults.push({ status: 400, match: (req) => req.method === 'POST' && JSON.stringify(req.body ?? '').includes('ui-dev-1') });
    assert.equal((await postJson(url('/ingest/measurements'), reading('ui-dev-1', 2, 95), { authorization: `Bearer ${key}` })).status, 202);
    await page.goto(url('/console/messages'));
    await page.fill('#m-deviceId', 'ui-dev-1');
    await page.click('form[role=search] button');
    await eventually(
      async () => {
        if ((await page.locator('#messages tbody tr').count()) === 1) return true;
        await page.reload();
        return false;
      },
      30_000,
      'the dead letter in the message browser',
    );
    await audit('09-messages');
    await page.click('#messages tbody tr a');
    await page.getByRole('heading', { name: 'Dead letter' }).waitFor();
    await audit('10-message-detail');
    await page.click('button:has-text("Replay")');
    await page.getByText(/queued again as job/).waitFor();
    await page.goto(url('/console'));
    await eventually(
      async () =>
        /^2 \/ 2$/.test(
          (
            (await row
              .locator('[data-counter="delivered"]')
              .textContent()
              .catch(() => '')) ?? ''
          ).trim(),
        ),
      30_000,
      'the replayed reading delivered',
    );
    assert.equal((await row.locator('[data-counter="deadLettered"]').textContent())?.trim(), '1 / 1');

    // ---- audit trail and queue internals ----------------------------------------------------------------------------------
    await page.goto(url('/console/audit?entity=ui-dev-1'));
    assert.ok((await page.locator('table.audit tbody tr').count()) >= 3, 'registration, activation and key issue are in the trail');
    await audit('11-audit');
    await page.goto(url('/console/queues'));
    await page.waitForLoadState('networkidle');
    await page.screenshot({ path: join(ARTIFACTS, '12-queues.png'), fullPage: true }); // bull-board's own UI: not ours to audit

    // ---- sign out: the old cookie no longer works ----------------------------------------------------------------------
    await page.goto(url('/console'));
    const cookie = (await page.context().cookies()).find((c) => c.name === 'gw_console');
    assert.ok(cookie?.httpOnly && cookie.sameSite === 'Strict');
    await page.click('button:has-text("Sign out")');
    await page.waitForURL(/\/console\/login$/);
    const old = await fetch(url('/console/devices'), { headers: { cookie: `gw_console=${cookie?.value}` }, redirect: 'manual' });
    assert.equal(old.status, 303);
    assert.equal(old.headers.get('location'), '/console/login');

    // ---- a vendor cannot open another vendor's pages --------------------------------------------------------------------
    const otherKey = await vendorKey(stack.gw.url, 'globex-ui');
    await page.fill('#key', otherKey);
    await page.keyboard.press('Enter');
    await page.waitForURL(url('/console'));
    assert.equal(await page.locator('nav >> text=Messages').count(), 0, 'no message browser for vendors');
    const res = await page.goto(url('/console/devices/ui-dev-1'));
    assert.equal(res?.status(), 404);
    await audit('13-vendor-other-device');
    assert.equal((await page.goto(url('/console/adapters/acme-hr')))?.status(), 404, "another vendor's adapter");
    assert.equal((await page.goto(url('/console/messages')))?.status(), 403);
    void vkey;
    assert.ok(checked.length >= 11);
  });
});
