/**
 * Devices: the list with filters, one device's page (telemetry, held readings, assignment, lifecycle actions with a
 * confirmation, device keys issued once and revoked, its audit history), registration of one device and bulk
 * registration from a CSV file with a result per row. Every read and change is an API call as the signed-in user.
 */
import { type Ctx, enc, q, qs } from '../context.js';
import { csrfField, fmtTime, type Html, html, json } from '../html.js';
import type { ConsoleRoute } from '../index.js';
import { reasonOf } from '../inject.js';

interface DeviceView {
  id: string;
  type?: string;
  adapter?: string;
  vendor?: string;
  manufacturer?: string;
  model?: string;
  state: string;
  connectivity: string;
  assignment?: { patientId?: string; locationId?: string; assignedAt: string };
  telemetry: { lastSeen?: string; lastChannel?: string; messages: number; errors: number; battery?: number; signal?: number };
  heldReadings?: number;
  createdAt: string;
  stateChangedAt: string;
  identifiers?: Record<string, string>;
}

const ACTIONS: Record<string, { label: string; from: string[]; danger?: boolean; confirm: string }> = {
  activate: {
    label: 'Activate',
    from: ['registered', 'suspended'],
    confirm: 'Activate this device? Its data will be delivered to the EHR.',
  },
  suspend: { label: 'Suspend', from: ['active'], confirm: 'Suspend this device? Its data will be refused until it is activated again.' },
  decommission: {
    label: 'Decommission',
    from: ['registered', 'active', 'suspended'],
    danger: true,
    confirm: 'Decommission this device? Its keys are revoked and its data wiped. This cannot be undone.',
  },
};

const FILTERS = ['state', 'type', 'vendor', 'status', 'lastSeenAfter', 'lastSeenBefore'] as const;

const stateBadge = (d: DeviceView) =>
  html`${d.state}${d.state === 'active' ? html` · <span class="${d.connectivity === 'offline' ? 'error' : 'ok'}">${d.connectivity}</span>` : ''}`;

function registerForms(c: Ctx, message?: Html): Html {
  if (c.principal.role === 'operator') return html``;
  const admin = c.principal.role === 'admin';
  return html`<h2 id="register">Register devices</h2>${message ?? ''}
<div class="side">
<form method="post" action="/console/devices/register" class="stack">${csrfField(c.csrf)}
<label for="r-id">Device id</label><input id="r-id" name="id" required>
<label for="r-serial">Serial number</label><input id="r-serial" name="serialNumber">
<label for="r-type">Type</label><input id="r-type" name="type" placeholder="pulse-oximeter">
<label for="r-adapter">Adapter</label><input id="r-adapter" name="adapter" placeholder="measurements">
${admin ? html`<label for="r-vendor">Vendor</label><input id="r-vendor" name="vendor">` : ''}
<button type="submit">Register</button>
</form>
<form method="post" action="/console/devices/bulk" enctype="multipart/form-data" class="stack">${csrfField(c.csrf)}
<label for="csv">CSV file (header row: id, serialNumber, eui64, udi, type, adapter, manufacturer, model${admin ? ', vendor' : ''}, …)</label>
<input id="csv" name="csv" type="file" accept=".csv,text/csv" required>
<button type="submit">Register from CSV</button>
</form>
</div>`;
}

async function list(c: Ctx, message?: Html): Promise<void> {
  const f: Record<string, string> = {};
  for (const k of FILTERS) f[k] = q(c.req, k);
  const battery = q(c.req, 'batteryBelow');
  const r = await c.api<DeviceView[]>('GET', `/api/devices${qs(f)}`);
  if (!r.ok) return c.page('Devices', 'Devices', html`<p class="error" role="alert">${reasonOf(r)}</p>`, r.status);
  let devices = r.body;
  if (battery && Number.isFinite(Number(battery)))
    devices = devices.filter((d) => d.telemetry.battery !== undefined && d.telemetry.battery < Number(battery));
  const sel = (name: string, values: string[], label: string) =>
    html`<div><label for="f-${name}">${label}</label><select id="f-${name}" name="${name}"><option value="">any</option>${values.map(
      (v) => html`<option${f[name] === v ? html` selected` : ''}>${v}</option>`,
    )}</select></div>`;
  const inp = (name: string, label: string, type = 'text', value = f[name]) =>
    html`<div><label for="f-${name}">${label}</label><input id="f-${name}" name="${name}" type="${type}" value="${value}"></div>`;
  c.page(
    'Devices',
    'Devices',
    html`<form method="get" action="/console/devices" class="filters" role="search" aria-label="Filter devices">
${sel('state', ['registered', 'active', 'suspended', 'decommissioned'], 'State')}
${sel('status', ['online', 'offline', 'unknown'], 'Online / offline')}
${inp('type', 'Type')}${c.principal.role === 'vendor' ? '' : inp('vendor', 'Vendor')}
${inp('lastSeenAfter', 'Last seen after (ISO time)')}${inp('lastSeenBefore', 'Last seen before (ISO time)')}
${inp('batteryBelow', 'Battery below (%)', 'number', battery)}
<button type="submit">Filter</button> <a href="/console/devices">Clear</a>
</form>
<table id="devices"><caption>${devices.length} device(s)</caption>
<thead><tr><th scope="col">Device</th><th scope="col">Type</th><th scope="col">Vendor</th><th scope="col">Adapter</th><th scope="col">State</th><th scope="col">Last seen</th><th scope="col" class="num">Messages</th><th scope="col" class="num">Battery</th></tr></thead>
<tbody>${devices.map(
      (d) =>
        html`<tr data-device="${d.id}"><th scope="row"><a href="/console/devices/${enc(d.id)}">${d.id}</a></th><td>${d.type ?? '—'}</td><td>${d.vendor ?? '—'}</td><td>${d.adapter ?? '—'}</td><td>${stateBadge(d)}</td><td data-last-seen>${fmtTime(d.telemetry.lastSeen)}</td><td class="num">${d.telemetry.messages}</td><td class="num">${d.telemetry.battery ?? '—'}</td></tr>`,
    )}</tbody></table>
${registerForms(c, message)}`,
  );
}

async function register(c: Ctx): Promise<void> {
  const body: Record<string, unknown> = {};
  for (const k of ['id', 'type', 'adapter', 'vendor']) {
    const v = c.form.get(k)?.trim();
    if (v) body[k] = v;
  }
  const serial = c.form.get('serialNumber')?.trim();
  body.identifiers = serial ? { serialNumber: serial } : {};
  const r = await c.api('POST', '/api/devices', body);
  if (r.ok) return void c.res.redirect(303, `/console/devices/${enc(String(r.body.id))}?registered=1`);
  await list(c, html`<p class="error" role="alert">Not registered: ${reasonOf(r)}</p>`);
}

/**
 * The line of the file each CSV record starts on (1-based; index 0 is the header), read as the API's parser reads the
 * file: blank lines are skipped and a quoted field may span lines. The API numbers the data rows; a user looks for lines.
 */
export function csvRecordLines(text: string): number[] {
  const lines: number[] = [];
  let line = 1;
  let start = 1;
  let filled = false;
  let quoted = false;
  let fieldStart = true;
  const s = text.replace(/^\uFEFF/, '');
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (quoted) {
      if (ch === '"' && s[i + 1] === '"') {
        filled = true;
        i++;
      } else if (ch === '"') quoted = false;
      else {
        if (ch === '\n' || (ch === '\r' && s[i + 1] !== '\n')) line++;
        filled = true;
      }
    } else if (ch === '"' && fieldStart) {
      quoted = true;
      fieldStart = false;
    } else if (ch === ',') fieldStart = true;
    else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && s[i + 1] === '\n') i++;
      if (filled) lines.push(start);
      line++;
      start = line;
      filled = false;
      fieldStart = true;
    } else {
      filled = true;
      fieldStart = false;
    }
  }
  if (filled) lines.push(start);
  return lines;
}

async function bulk(c: Ctx): Promise<void> {
  const csv = c.form.get('csv') ?? '';
  const lines = csvRecordLines(csv);
  const r = await c.api<{
    created: number;
    failed: number;
    results: { row?: number; id?: string; status: number; error?: string; issues?: string[] }[];
  }>('POST', '/api/devices/bulk', csv, 'text/csv');
  const message = r.ok
    ? html`<div class="notice" role="status"><p><strong>${r.body.created}</strong> registered, <strong>${r.body.failed}</strong> refused.</p>
<table id="bulk-results"><caption>Result per row of the file</caption><thead><tr><th scope="col">Line</th><th scope="col">Device</th><th scope="col">Result</th></tr></thead><tbody>${r.body.results.map(
        (x, i) =>
          html`<tr><td>${lines[x.row ?? i + 1] ?? x.row ?? i + 1}</td><td>${x.id ?? '—'}</td><td class="${x.status === 201 ? 'ok' : 'error'}">${x.status === 201 ? 'registered' : `${x.status}: ${x.error ?? (x.issues ?? []).join('; ')}`}</td></tr>`,
      )}</tbody></table></div>`
    : html`<p class="error" role="alert">The file was refused: ${reasonOf(r)}</p>`;
  await list(c, message);
}

async function devicePage(c: Ctx, notice?: Html): Promise<void> {
  const id = String(c.req.params.id);
  const r = await c.api<DeviceView>('GET', `/api/devices/${enc(id)}`);
  if (!r.ok)
    return c.page(
      'Device',
      'Devices',
      html`<p class="error" role="alert">${reasonOf(r)}</p><p><a href="/console/devices">All devices</a></p>`,
      r.status,
    );
  const d = r.body;
  const operator = c.principal.role !== 'vendor';
  const [creds, held, audit] = await Promise.all([
    c.api<{ keyId: string; createdAt: string; expiresAt?: string; label?: string }[]>('GET', `/api/devices/${enc(id)}/credentials`),
    operator ? c.api('GET', `/api/devices/${enc(id)}/held?limit=20`) : undefined,
    operator ? c.api('GET', `/api/audit${qs({ entity: id, limit: '50' })}`) : undefined,
  ]);
  const t = d.telemetry;
  const actions = Object.entries(ACTIONS).filter(([, a]) => a.from.includes(d.state));
  const registered = c.req.query.registered ? html`<p class="notice" role="status">Device registered.</p>` : '';
  c.page(
    `Device ${d.id}`,
    'Devices',
    html`${registered}${notice ?? ''}
<p><a href="/console/devices">All devices</a></p>
<div class="side">
<section aria-labelledby="h-rec"><h2 id="h-rec">Record</h2><dl class="facts">
<dt>State</dt><dd id="device-state">${stateBadge(d)} (since ${fmtTime(d.stateChangedAt)})</dd>
<dt>Type</dt><dd>${d.type ?? '—'}</dd><dt>Vendor</dt><dd>${d.vendor ?? '—'}</dd><dt>Adapter</dt><dd>${d.adapter ?? '—'}</dd>
<dt>Manufacturer / model</dt><dd>${d.manufacturer ?? '—'} ${d.model ?? ''}</dd>
<dt>Identifiers</dt><dd>${Object.entries(d.identifiers ?? {}).map(([k, v]) => html`${k}: ${v} `)}</dd>
<dt>Registered</dt><dd>${fmtTime(d.createdAt)}</dd>
</dl></section>
<section aria-labelledby="h-tel"><h2 id="h-tel">Telemetry</h2><dl class="facts">
<dt>Last seen</dt><dd id="last-seen">${fmtTime(t.lastSeen)}${t.lastChannel ? ` over ${t.lastChannel}` : ''}</dd>
<dt>Messages</dt><dd id="messages">${t.messages}</dd><dt>Errors</dt><dd>${t.errors}</dd>
<dt>Battery</dt><dd>${t.battery === undefined ? '—' : `${t.battery} %`}</dd><dt>Signal</dt><dd>${t.signal === undefined ? '—' : `${t.signal} dBm`}</dd>
<dt>Held readings</dt><dd>${d.heldReadings ?? 0}</dd>
</dl></section>
</div>
<h2>Lifecycle</h2>
<div class="actions">${actions.map(
      ([name, a]) =>
        html`<form method="post" action="/console/devices/${enc(d.id)}/${name}" class="inline" hx-post="/console/devices/${enc(d.id)}/${name}" hx-target="body" hx-push-url="false" hx-confirm="${a.confirm}">${csrfField(c.csrf)}<button type="submit"${a.danger ? html` class="danger"` : ''}>${a.label}</button></form>`,
    )}${actions.length ? '' : html`<p class="muted">No action is possible in state ${d.state}.</p>`}</div>
${operator ? assignment(c, d) : ''}
<h2>Device keys</h2>
${
  creds.ok && creds.body.length
    ? html`<table id="keys"><thead><tr><th scope="col">Key id</th><th scope="col">Issued</th><th scope="col">Expires</th><th scope="col">Revoke</th></tr></thead><tbody>${creds.body.map(
        (k) =>
          html`<tr><td>${k.keyId}</td><td>${fmtTime(k.createdAt)}</td><td>${fmtTime(k.expiresAt)}</td><td>${
            c.principal.role === 'operator'
              ? '—'
              : html`<form method="post" action="/console/devices/${enc(d.id)}/credentials/${enc(k.keyId)}/revoke" class="inline" hx-post="/console/devices/${enc(d.id)}/credentials/${enc(k.keyId)}/revoke" hx-target="body" hx-confirm="Revoke key ${k.keyId}? The device can no longer send with it.">${csrfField(c.csrf)}<button type="submit" class="danger">Revoke</button></form>`
          }</td></tr>`,
      )}</tbody></table>`
    : html`<p class="muted">${creds.ok ? 'No key issued.' : reasonOf(creds)}</p>`
}
${c.principal.role === 'operator' ? '' : html`<form method="post" action="/console/devices/${enc(d.id)}/credentials" hx-post="/console/devices/${enc(d.id)}/credentials" hx-target="body">${csrfField(c.csrf)}<button type="submit">Issue a new key</button></form>`}
${held?.ok ? html`<h2>Held readings</h2>${held.body.total ? html`<p>${held.body.total} reading(s) held until the device is activated.</p><pre tabindex="0">${json(held.body.readings)}</pre>` : html`<p class="muted">None.</p>`}` : ''}
${audit?.ok ? html`<h2>Audit history</h2>${auditTable(audit.body)}` : operator ? '' : html`<p class="muted">The audit history is shown to operators.</p>`}`,
  );
}

function assignment(c: Ctx, d: DeviceView): Html {
  return html`<h2>Assignment</h2>
<p>Patient: ${d.assignment?.patientId ?? '—'} · Location: ${d.assignment?.locationId ?? '—'}</p>
<form method="post" action="/console/devices/${enc(d.id)}/assignment" class="filters">${csrfField(c.csrf)}
<div><label for="a-patient">Patient identifier</label><input id="a-patient" name="patientId" value="${d.assignment?.patientId ?? ''}"></div>
<div><label for="a-location">Location</label><input id="a-location" name="locationId" value="${d.assignment?.locationId ?? ''}"></div>
<button type="submit">Save assignment</button></form>`;
}

export function auditTable(bundle: { entry?: { resource: any }[] }): Html {
  const events = (bundle.entry ?? []).map((e) => e.resource);
  if (!events.length) return html`<p class="muted">No events.</p>`;
  return html`<table class="audit"><thead><tr><th scope="col">When</th><th scope="col">What</th><th scope="col">Who</th><th scope="col">Entity</th><th scope="col">Outcome</th></tr></thead><tbody>${events.map(
    (e) =>
      html`<tr><td>${fmtTime(e.recorded)}</td><td>${(e.subtype ?? [])
        .map((s: { code?: string }) => s.code)
        .filter(Boolean)
        .join(
          ' · ',
        )}</td><td>${e.agent?.[0]?.who?.display ?? '—'}</td><td>${(e.entity ?? []).map((x: any) => x.what?.identifier?.value).join(', ')}</td><td>${e.outcome === '0' ? 'success' : html`<span class="error">${e.outcome}${e.outcomeDesc ? `: ${e.outcomeDesc}` : ''}</span>`}</td></tr>`,
  )}</tbody></table>`;
}

async function act(c: Ctx, path: string, method: 'POST' | 'PUT' | 'DELETE', body: unknown, done: (r: any) => Html): Promise<void> {
  const r = await c.api(method, path, body);
  const notice = r.ok ? done(r.body) : html`<p class="error" role="alert">Refused: ${reasonOf(r)}</p>`;
  await devicePage(c, notice);
}

export function devicePages(): ConsoleRoute[] {
  const both: ('operator' | 'vendor')[] = ['operator', 'vendor'];
  return [
    { method: 'get', path: '/console/devices', roles: both, handler: (c) => list(c) },
    { method: 'post', path: '/console/devices/register', roles: ['vendor'], handler: register },
    { method: 'post', path: '/console/devices/bulk', roles: ['vendor'], handler: bulk },
    { method: 'get', path: '/console/devices/:id', roles: both, handler: (c) => devicePage(c) },
    ...Object.entries(ACTIONS).map(
      ([name, a]): ConsoleRoute => ({
        method: 'post',
        path: `/console/devices/:id/${name}`,
        roles: both,
        handler: (c) =>
          act(
            c,
            `/api/devices/${enc(String(c.req.params.id))}/${name}`,
            'POST',
            undefined,
            () => html`<p class="notice" role="status">${a.label}: done.</p>`,
          ),
      }),
    ),
    {
      method: 'post',
      path: '/console/devices/:id/assignment',
      roles: ['operator'],
      handler: (c) => {
        const body: Record<string, string | null> = {};
        for (const k of ['patientId', 'locationId']) body[k] = c.form.get(k)?.trim() || null;
        return act(
          c,
          `/api/devices/${enc(String(c.req.params.id))}/assignment`,
          'PUT',
          body,
          () => html`<p class="notice" role="status">Assignment saved.</p>`,
        );
      },
    },
    {
      method: 'post',
      path: '/console/devices/:id/credentials',
      roles: ['vendor'],
      handler: (c) =>
        act(
          c,
          `/api/devices/${enc(String(c.req.params.id))}/credentials`,
          'POST',
          undefined,
          (b) =>
            html`<div class="notice" role="status"><p>New key <strong>${b.keyId}</strong>. Copy it now: it is shown only once (the gateway keeps only a hash).</p><p class="key" id="new-key">${b.key}</p></div>`,
        ),
    },
    {
      method: 'post',
      path: '/console/devices/:id/credentials/:keyId/revoke',
      roles: ['vendor'],
      handler: (c) =>
        act(
          c,
          `/api/devices/${enc(String(c.req.params.id))}/credentials/${enc(String(c.req.params.keyId))}`,
          'DELETE',
          undefined,
          () => html`<p class="notice" role="status">Key ${String(c.req.params.keyId)} revoked.</p>`,
        ),
    },
  ];
}
