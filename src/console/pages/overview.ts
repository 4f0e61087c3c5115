/**
 * The overview: per channel and adapter, as an integration engine's dashboard shows it (received, refused, queued,
 * delivered, dead-lettered; last hour and since start), time charts, destination health, devices online/offline.
 * The panel refreshes itself every 5 s (htmx polling of /console/overview/panel).
 */
import { type Ctx, enc } from '../context.js';
import { chart, fmtTime, type Html, html } from '../html.js';
import type { ConsoleRoute } from '../index.js';
import { COUNTERS, type ConsoleStats } from '../stats.js';

const LABELS: Record<(typeof COUNTERS)[number], string> = {
  received: 'Received',
  refused: 'Refused',
  queued: 'Queued',
  delivered: 'Delivered',
  deadLettered: 'Dead-lettered',
};

interface DeviceCounts {
  total: number;
  online: number;
  offline: number;
  byState: Record<string, number>;
}

async function deviceCounts(c: Ctx): Promise<DeviceCounts | string> {
  const r = await c.api<{ state: string; connectivity: string }[]>('GET', '/api/devices');
  if (!r.ok) return `devices not available (${r.status})`;
  const out: DeviceCounts = { total: r.body.length, online: 0, offline: 0, byState: {} };
  for (const d of r.body) {
    out.byState[d.state] = (out.byState[d.state] ?? 0) + 1;
    if (d.connectivity === 'online') out.online++;
    if (d.connectivity === 'offline') out.offline++;
  }
  return out;
}

interface QueueCounts {
  waiting?: number;
  active?: number;
  delayed?: number;
  maxDepth?: number;
}

const queueText = (q: QueueCounts | null | undefined): string =>
  q ? `${q.waiting ?? 0} waiting, ${q.active ?? 0} active, ${q.delayed ?? 0} delayed (limit ${q.maxDepth})` : '—';

async function panel(c: Ctx, stats: ConsoleStats): Promise<Html> {
  const devices = await deviceCounts(c);
  const deviceCards =
    typeof devices === 'string'
      ? html`<p class="muted">${devices}</p>`
      : html`<div class="cards">
<div class="card"><span>Devices</span><strong id="devices-total">${devices.total}</strong></div>
<div class="card"><span>Online</span><strong id="devices-online" class="ok">${devices.online}</strong></div>
<div class="card"><span>Offline</span><strong id="devices-offline" class="${devices.offline ? 'error' : ''}">${devices.offline}</strong></div>
${Object.entries(devices.byState).map(([s, n]) => html`<div class="card"><span>${s}</span><strong>${n}</strong></div>`)}
</div>`;
  if (c.principal.role === 'vendor') {
    return html`<div id="overview" hx-get="/console/overview/panel" hx-trigger="every 5s" hx-swap="outerHTML">
<h2>Your devices</h2>${deviceCards}
<p>Traffic, delivery and destination health are shown to operators. <a href="/console/devices">Your devices</a> · <a href="/console/adapters">your adapters</a>.</p></div>`;
  }
  const [status, ready] = await Promise.all([c.api('GET', '/api/status'), c.api('GET', '/readyz')]);
  const ehrProblem = ready.ok
    ? undefined
    : ((ready.body?.issue ?? []) as { diagnostics?: string }[]).map((i) => i.diagnostics ?? '').find((d) => d.startsWith('EHR'));
  const s = status.ok ? status.body : undefined;
  // With several destinations each has its own queue and dead letters (/api/status lists them, the first one first).
  const destinations = (s?.destinations ?? []) as {
    destination: string;
    baseUrl?: string;
    sandbox?: boolean;
    state?: string;
    queue?: QueueCounts | null;
    deadLetters?: number | null;
  }[];
  const several = destinations.length > 1;
  // Unknown (Redis not ready) for one destination: the total is unknown too, not a smaller number.
  const deadTotal = destinations.some((d) => typeof d.deadLetters !== 'number')
    ? '—'
    : destinations.reduce((n, d) => n + (d.deadLetters as number), 0);
  const rows = stats.rows();
  const series = stats.series();
  const table = rows.length
    ? html`<table id="traffic"><caption>Messages per channel and adapter (this process)</caption>
<thead><tr><th scope="col">Channel</th><th scope="col">Adapter</th>${COUNTERS.map((k) => html`<th scope="col" class="num">${LABELS[k]}<br><span class="muted">hour / since start</span></th>`)}</tr></thead>
<tbody>${rows.map(
        (r) =>
          html`<tr data-channel="${r.channel}" data-adapter="${r.adapter}"><th scope="row">${r.channel}</th><td>${r.adapter}</td>${COUNTERS.map(
            (k) => html`<td class="num" data-counter="${k}">${r.lastHour[k]} / ${r.total[k]}</td>`,
          )}</tr>`,
      )}</tbody></table>`
    : html`<p class="muted" id="traffic">No messages since this process started (${fmtTime(stats.startedAt)}).</p>`;
  return html`<div id="overview" hx-get="/console/overview/panel" hx-trigger="every 5s" hx-swap="outerHTML">
<h2>Traffic</h2>
${table}
<div class="charts">
${chart('Readings per second', [{ label: 'readings/s', points: series.readingsPerSecond }], '/s')}
${chart(
  'Ingest to EHR latency',
  [
    { label: 'p50', points: series.p50.map((v) => (v === null ? null : v / 1000)) },
    { label: 'p99', points: series.p99.map((v) => (v === null ? null : v / 1000)) },
  ],
  's',
)}
${chart('Queue depth', [{ label: 'waiting', points: series.depth }], 'jobs')}
</div>
<h2>Destination</h2>
<dl class="facts" id="destination">
${
  several
    ? html`<dt>EHRs</dt><dd><ul class="plain">${destinations.map((d) => html`<li>${d.destination}: ${d.baseUrl || '—'}${d.sandbox ? html` <span class="warn">(sandbox: not for clinical use)</span>` : ''}${d.state ? html` <span class="${d.state === 'closed' ? 'ok' : 'error'}">(circuit ${d.state})</span>` : ''}</li>`)}</ul></dd>`
    : html`<dt>EHR</dt><dd>${s?.fhirBaseUrl ?? '—'}${s?.sandbox ? html` <span class="warn">(sandbox: not for clinical use)</span>` : ''}</dd>`
}
<dt>Reachable</dt><dd>${ehrProblem ? html`<span class="error">no: ${ehrProblem}</span>` : ready.ok ? html`<span class="ok">yes</span>` : html`<span class="error">not ready: ${JSON.stringify(ready.body?.issue?.map((i: { diagnostics?: string }) => i.diagnostics) ?? [])}</span>`}</dd>
<dt>Last success</dt><dd>${stats.lastSuccessAt ? fmtTime(stats.lastSuccessAt) : '—'}</dd>
<dt>Last error</dt><dd>${stats.lastError ? html`${fmtTime(stats.lastError.at)}: ${stats.lastError.reason}` : '—'}</dd>
<dt>Redis</dt><dd>${s?.redis?.status ?? '—'}</dd>
${
  several
    ? html`<dt>Queues</dt><dd><ul class="plain">${destinations.map((d) => html`<li>${d.destination}: ${queueText(d.queue)}</li>`)}</ul></dd>
<dt>Dead letters</dt><dd>${deadTotal} <a href="/console/messages?kind=dead-letter">browse</a><ul class="plain">${destinations.map((d) => html`<li>${d.destination}: ${d.deadLetters ?? '—'} <a href="/console/messages?kind=dead-letter&amp;destination=${enc(d.destination)}">browse</a></li>`)}</ul></dd>`
    : html`<dt>Queue</dt><dd>${queueText(s?.queue)}</dd>
<dt>Dead letters</dt><dd>${s?.deadLetters ?? '—'} <a href="/console/messages?kind=dead-letter">browse</a></dd>`
}
</dl>
<h2>Devices</h2>${deviceCards}
<p class="muted">Updated ${fmtTime(Date.now())}; refreshes every 5 s.</p>
</div>`;
}

export function overviewPages(stats: ConsoleStats): ConsoleRoute[] {
  return [
    {
      method: 'get',
      path: '/console',
      roles: ['operator', 'vendor'],
      handler: async (c) => c.page('Overview', 'Overview', await panel(c, stats)),
    },
    {
      method: 'get',
      path: '/console/overview/panel',
      roles: ['operator', 'vendor'],
      handler: async (c) => c.fragment(await panel(c, stats)),
    },
  ];
}
