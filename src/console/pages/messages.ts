/**
 * Messages: one browser over the refused input of every channel (/api/refusals) and the dead letters (/api/dead-letters),
 * searchable by device id, HL7 control id, adapter, channel, reason, time and (operators and admins only: the routes
 * behind it are theirs) patient identifier. One message shows its raw payload, the reason and the OperationOutcome or
 * HL7 ERR side by side, with a replay button. A filtered selection is replayed in bulk in the background, one API call
 * per item, with a progress bar and a result per item (the page polls /console/messages/bulk/:id).
 * Each destination has its own dead letters (a job can die at one EHR and be delivered to another): the browser lists
 * those of every destination, each named with its destination, and a replay queues it again for that one only.
 */
import { randomUUID } from 'node:crypto';
import type { Principal } from '../../core/contract.js';
import { type Ctx, enc, q, qs } from '../context.js';
import { csrfField, fmtTime, type Html, html, json } from '../html.js';
import type { ConsoleRoute } from '../index.js';
import { reasonOf } from '../inject.js';

type Kind = 'refusal' | 'dead-letter';
const FIELDS = ['kind', 'destination', 'deviceId', 'controlId', 'adapter', 'channel', 'reason', 'since', 'until', 'patient'] as const;
type Filter = Partial<Record<(typeof FIELDS)[number], string>>;
/** At most this many of the newest entries of each store are searched (and replayed in bulk). */
const SCAN = 500;

interface Row {
  kind: Kind;
  id: string;
  at: string;
  channel: string;
  adapter?: string;
  reason: string;
  status?: number;
  deviceIds: string[];
  controlId?: string;
  /** A dead letter's destination. */
  destination?: string;
}

/** The destinations' names, the default one first (from /api/status); empty when it cannot say. */
async function destinationsOf(c: Ctx): Promise<string[]> {
  const r = await c.api('GET', '/api/status');
  return r.ok ? ((r.body.destinations ?? []) as { destination: string }[]).map((d) => d.destination) : [];
}

/** The link to a message (a dead letter names its destination). */
const linkOf = (r: Pick<Row, 'kind' | 'id' | 'destination'>) =>
  `/console/messages/${r.kind}/${enc(r.id)}${r.kind === 'dead-letter' ? qs({ destination: r.destination }) : ''}`;

const filterOf = (get: (k: string) => string): Filter => {
  const f: Filter = {};
  for (const k of FIELDS) {
    const v = get(k).trim();
    if (v) f[k] = v;
  }
  return f;
};

const inTime = (at: string, f: Filter) =>
  (!f.since || at >= new Date(f.since).toISOString()) && (!f.until || at <= new Date(f.until).toISOString());

/** Device identifier values a dead letter's readings carry. */
function deadLetterDevices(d: any): string[] {
  const ids = new Set<string>();
  for (const t of d?.job?.translations ?? [])
    for (const dev of t.devices ?? []) for (const i of dev.identifier ?? []) if (i.value) ids.add(String(i.value));
  for (const t of d?.job?.translations ?? [])
    for (const o of t.observations ?? []) if (o.device?.identifier?.value) ids.add(String(o.device.identifier.value));
  return [...ids];
}

async function search(c: Ctx, f: Filter): Promise<{ rows: Row[]; errors: string[]; destinations: string[] }> {
  const rows: Row[] = [];
  const errors: string[] = [];
  const patient = f.patient;
  const destinations = await destinationsOf(c);
  if (f.kind !== 'dead-letter' && !f.destination) {
    const { patient: _p, kind: _k, destination: _d, ...api } = f;
    const r = await c.api('GET', `/api/refusals${qs({ ...api, limit: String(SCAN) })}`);
    if (!r.ok) errors.push(`refusals: ${reasonOf(r)}`);
    else
      for (const e of r.body.items as any[]) {
        if (patient) {
          const full = await c.api('GET', `/api/refusals/${enc(e.id)}`);
          if (!full.ok || !JSON.stringify([full.body.body, full.body.raw]).includes(patient)) continue;
        }
        rows.push({
          kind: 'refusal',
          id: e.id,
          at: e.receivedAt,
          channel: e.channel,
          adapter: e.adapterId,
          reason: e.reason,
          status: e.status,
          deviceIds: e.deviceIds ?? (e.mqtt?.deviceId ? [e.mqtt.deviceId] : []),
          controlId: e.hl7?.controlId,
        });
      }
  }
  // Every destination's (or the one searched for); the API's default destination when the status could not be read.
  const wanted = f.destination ? [f.destination] : destinations.length ? destinations : [undefined];
  for (const destination of f.kind !== 'refusal' && !f.controlId ? wanted : []) {
    const r = await c.api('GET', `/api/dead-letters${qs({ destination, limit: String(SCAN) })}`);
    if (!r.ok) errors.push(`dead letters${destination ? ` of ${destination}` : ''}: ${reasonOf(r)}`);
    else
      for (const d of r.body.items as any[]) {
        if (f.adapter && d.adapterId !== f.adapter) continue;
        if (f.channel && d.channel !== f.channel) continue;
        if (f.reason && !String(d.reason).toLowerCase().includes(f.reason.toLowerCase())) continue;
        if (!inTime(d.deadAt, f)) continue;
        let deviceIds: string[] = [];
        if (f.deviceId || patient) {
          const full = await c.api('GET', `/api/dead-letters/${enc(d.id)}${qs({ destination })}`);
          if (!full.ok) continue;
          deviceIds = deadLetterDevices(full.body);
          if (f.deviceId && !deviceIds.includes(f.deviceId)) continue;
          if (patient && !(full.body.job?.translations ?? []).some((t: any) => t.patient?.value === patient)) continue;
        }
        rows.push({
          kind: 'dead-letter',
          id: d.id,
          at: d.deadAt,
          channel: d.channel,
          adapter: d.adapterId,
          reason: d.reason,
          status: d.httpStatus,
          deviceIds,
          destination: r.body.destination ?? destination,
        });
      }
  }
  rows.sort((a, b) => b.at.localeCompare(a.at));
  return { rows, errors, destinations };
}

function searchForm(c: Ctx, f: Filter, destinations: string[]): Html {
  const inp = (k: keyof Filter, label: string, hint = '') =>
    html`<div><label for="m-${k}">${label}</label><input id="m-${k}" name="${k}" value="${f[k] ?? ''}"${hint ? html` placeholder="${hint}"` : ''}></div>`;
  return html`<form method="get" action="/console/messages" class="filters" role="search" aria-label="Search messages">
<div><label for="m-kind">Kind</label><select id="m-kind" name="kind"><option value="">refused and dead letters</option><option value="refusal"${f.kind === 'refusal' ? html` selected` : ''}>refused input</option><option value="dead-letter"${f.kind === 'dead-letter' ? html` selected` : ''}>dead letters</option></select></div>
${destinations.length > 1 ? html`<div><label for="m-destination">Destination (dead letters)</label><select id="m-destination" name="destination"><option value="">every destination</option>${destinations.map((d) => html`<option${f.destination === d ? html` selected` : ''}>${d}</option>`)}</select></div>` : ''}
${inp('deviceId', 'Device id')}${inp('controlId', 'HL7 control id')}${inp('adapter', 'Adapter')}
<div><label for="m-channel">Channel</label><select id="m-channel" name="channel"><option value="">any</option>${['http', 'mllp', 'mqtt'].map((ch) => html`<option${f.channel === ch ? html` selected` : ''}>${ch}</option>`)}</select></div>
${inp('reason', 'Reason contains')}${inp('since', 'Since (ISO time)')}${inp('until', 'Until (ISO time)')}
${c.principal.role === 'vendor' ? '' : inp('patient', 'Patient identifier')}
<button type="submit">Search</button> <a href="/console/messages">Clear</a></form>`;
}

async function browser(c: Ctx): Promise<void> {
  const f = filterOf((k) => q(c.req, k));
  const { rows, errors, destinations } = await search(c, f);
  const { kind: _k, ...rest } = f;
  const several = destinations.length > 1;
  c.page(
    'Messages',
    'Messages',
    html`${searchForm(c, f, destinations)}
${errors.map((e) => html`<p class="error" role="alert">${e}</p>`)}
<form method="post" action="/console/messages/replay" hx-post="/console/messages/replay" hx-target="#bulk" hx-confirm="Replay the ${rows.length} message(s) listed?">${csrfField(c.csrf)}
${Object.entries(f).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}
<button type="submit"${rows.length ? '' : html` disabled`}>Replay all ${rows.length} listed</button></form>
<div id="bulk" aria-live="polite"></div>
<table id="messages"><caption>${rows.length} message(s)${Object.keys(rest).length ? ' matching the search' : ''}</caption>
<thead><tr><th scope="col">When</th><th scope="col">Kind</th><th scope="col">Channel</th><th scope="col">Adapter</th><th scope="col">Devices</th><th scope="col">Reason</th><th scope="col">Status</th></tr></thead>
<tbody>${rows.map(
      (r) =>
        html`<tr data-id="${r.id}"><td>${fmtTime(r.at)}</td><td>${r.kind === 'refusal' ? 'refused' : several ? html`dead letter at ${r.destination ?? '—'}` : 'dead letter'}</td><td>${r.channel}</td><td>${r.adapter ?? '—'}</td><td>${r.deviceIds.join(', ') || '—'}${r.controlId ? html`<br><span class="muted">MSH-10 ${r.controlId}</span>` : ''}</td><td><a href="${linkOf(r)}">${r.reason}</a></td><td>${r.status ?? '—'}</td></tr>`,
    )}</tbody></table>`,
  );
}

async function detail(c: Ctx, notice?: Html): Promise<void> {
  const kind = String(c.req.params.kind) as Kind;
  const id = String(c.req.params.id);
  const destination = kind === 'dead-letter' ? q(c.req, 'destination') || undefined : undefined;
  if (kind !== 'refusal' && kind !== 'dead-letter')
    return c.page('Message', 'Messages', html`<p class="error" role="alert">Unknown kind.</p>`, 404);
  const r = await c.api('GET', `/api/${kind === 'refusal' ? 'refusals' : 'dead-letters'}/${enc(id)}${qs({ destination })}`);
  if (!r.ok)
    return c.page(
      'Message',
      'Messages',
      html`${notice ?? ''}<p class="error" role="alert">${reasonOf(r)}</p><p><a href="/console/messages">All messages</a></p>`,
      notice ? 200 : r.status,
    );
  const m = r.body;
  const payload = kind === 'refusal' ? (m.raw ?? json(m.body)) : json(m.job?.translations);
  const answer =
    kind === 'refusal' && m.hl7
      ? html`<h3>HL7 ACK ${m.hl7.ackCode} (ERR)</h3><pre tabindex="0">${json(m.hl7.errors)}</pre><h3>OperationOutcome</h3><pre tabindex="0">${json(m.outcome)}</pre>`
      : html`<h3>OperationOutcome${m.httpStatus ? ` (EHR answered ${m.httpStatus})` : ''}</h3><pre tabindex="0">${json(m.outcome ?? null)}</pre>`;
  c.page(
    kind === 'refusal' ? 'Refused message' : 'Dead letter',
    'Messages',
    html`${notice ?? ''}<p><a href="/console/messages">All messages</a></p>
<dl class="facts"><dt>Id</dt><dd>${m.id}</dd>${kind === 'dead-letter' ? html`<dt>Destination</dt><dd>${m.destination ?? destination ?? '—'}</dd>` : ''}<dt>Channel</dt><dd>${m.channel ?? m.job?.channel}</dd><dt>Adapter</dt><dd>${m.adapterId ?? m.job?.adapterId ?? '—'}</dd>
<dt>${kind === 'refusal' ? 'Received' : 'Dead since'}</dt><dd>${fmtTime(m.receivedAt ?? m.deadAt)}</dd>${m.replays ? html`<dt>Replays</dt><dd>${m.replays}</dd>` : ''}</dl>
<form method="post" action="/console/messages/${kind}/${enc(id)}/replay${qs({ destination })}">${csrfField(c.csrf)}<button type="submit">Replay</button></form>
<div class="side">
<section aria-labelledby="h-payload"><h2 id="h-payload">${kind === 'refusal' ? 'Raw payload' : 'Readings of the job'}</h2><pre tabindex="0">${payload}</pre></section>
<section aria-labelledby="h-reason"><h2 id="h-reason">Reason</h2><p class="error">${m.reason}</p>${answer}</section>
</div>`,
  );
}

async function replayOne(c: Ctx, kind: Kind, id: string, destination?: string): Promise<{ ok: boolean; text: string }> {
  const r = await c.api(
    'POST',
    kind === 'refusal' ? `/api/refusals/${enc(id)}/replay` : `/api/dead-letters/${enc(id)}/retry${qs({ destination })}`,
  );
  if (!r.ok) return { ok: false, text: reasonOf(r) };
  if (kind === 'dead-letter')
    return { ok: true, text: `queued again as job ${r.body.jobId}${destination ? ` for ${r.body.destination ?? destination}` : ''}` };
  return r.body.accepted === false
    ? { ok: false, text: `refused again: ${r.body.result ?? ''}` }
    : { ok: true, text: `accepted (${r.body.result ?? 'queued'})` };
}

interface Bulk {
  owner: string;
  total: number;
  results: { kind: Kind; id: string; ok: boolean; text: string }[];
  done: boolean;
}
const bulks = new Map<string, Bulk>();
const ownerOf = (p: Principal) => `${p.role}:${p.id}:${p.keyId}`;

function bulkView(id: string, b: Bulk): Html {
  const n = b.results.length;
  return html`<div id="bulk-${id}" class="notice"${b.done ? '' : html` hx-get="/console/messages/bulk/${id}" hx-trigger="every 1s" hx-swap="outerHTML"`}>
<label for="p-${id}">Replayed ${n} of ${b.total}${b.done ? ': done' : ''}</label> <progress id="p-${id}" max="${b.total}" value="${n}">${n} of ${b.total}</progress>
<table class="bulk"><thead><tr><th scope="col">Message</th><th scope="col">Result</th></tr></thead><tbody>${b.results.map(
    (r) => html`<tr><td>${r.kind} ${r.id}</td><td class="${r.ok ? 'ok' : 'error'}">${r.text}</td></tr>`,
  )}</tbody></table></div>`;
}

export function messagePages(): ConsoleRoute[] {
  return [
    { method: 'get', path: '/console/messages', roles: ['operator'], handler: browser },
    // Before /:kind/:id, which would take 'bulk' for a kind.
    {
      method: 'get',
      path: '/console/messages/bulk/:id',
      roles: ['operator'],
      handler: async (c) => {
        const id = String(c.req.params.id);
        const b = bulks.get(id);
        if (!b || b.owner !== ownerOf(c.principal))
          return c.page('Bulk replay', 'Messages', html`<p class="error" role="alert">No such bulk replay.</p>`, 404);
        if (c.partial) return c.fragment(bulkView(id, b));
        c.page('Bulk replay', 'Messages', bulkView(id, b));
      },
    },
    { method: 'get', path: '/console/messages/:kind/:id', roles: ['operator'], handler: (c) => detail(c) },
    {
      method: 'post',
      path: '/console/messages/:kind/:id/replay',
      roles: ['operator'],
      handler: async (c) => {
        const kind = String(c.req.params.kind) as Kind;
        const destination = kind === 'dead-letter' ? q(c.req, 'destination') || undefined : undefined;
        const r = await replayOne(c, kind, String(c.req.params.id), destination);
        await detail(c, html`<p class="notice ${r.ok ? 'ok' : 'error'}" role="status">Replay: ${r.text}</p>`);
      },
    },
    {
      method: 'post',
      path: '/console/messages/replay',
      roles: ['operator'],
      handler: async (c) => {
        const { rows } = await search(
          c,
          filterOf((k) => c.form.get(k) ?? ''),
        );
        const id = randomUUID();
        const b: Bulk = { owner: ownerOf(c.principal), total: rows.length, results: [], done: rows.length === 0 };
        bulks.set(id, b);
        setTimeout(() => bulks.delete(id), 3_600_000).unref();
        void (async () => {
          for (const r of rows)
            b.results.push({
              kind: r.kind,
              id: r.id,
              ...(await replayOne(c, r.kind, r.id, r.destination).catch((e: Error) => ({ ok: false, text: e.message }))),
            });
          b.done = true;
        })();
        if (c.partial) return c.fragment(bulkView(id, b));
        c.res.redirect(303, `/console/messages/bulk/${id}`);
      },
    },
  ];
}
