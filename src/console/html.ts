/**
 * HTML from TypeScript template functions: `html` escapes every interpolated value unless it is itself `html` (or an
 * array of them), so data (device ids, payloads, reasons) can never become markup. No template engine, no build step.
 */
import type { Principal } from '../core/contract.js';

export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => ESC[c]);

type Value = Html | string | number | boolean | null | undefined | readonly Value[];

function render(v: Value): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: Value[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Html(out);
}

export const raw = (s: string): Html => new Html(s);

export const fmtTime = (iso: string | number | undefined): string => {
  if (iso === undefined || iso === '') return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? String(iso)
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z');
};

export const json = (v: unknown): string => JSON.stringify(v, null, 2) ?? '';

export interface Page {
  title: string;
  principal: Principal;
  csrf: string;
  /** The nav entry to mark as current. */
  current: string;
  body: Html;
}

const NAV: { path: string; label: string; roles: string[] }[] = [
  { path: '/console', label: 'Overview', roles: ['admin', 'operator', 'vendor'] },
  { path: '/console/devices', label: 'Devices', roles: ['admin', 'operator', 'vendor'] },
  { path: '/console/messages', label: 'Messages', roles: ['admin', 'operator'] },
  { path: '/console/adapters', label: 'Adapters', roles: ['admin', 'operator', 'vendor'] },
  { path: '/console/audit', label: 'Audit trail', roles: ['admin', 'operator'] },
  { path: '/console/queues', label: 'Queue internals', roles: ['admin'] },
];

/** The page around every screen: a skip link, the navigation, the user and sign-out, htmx with the CSRF header. */
export function layout(p: Page): string {
  const who = `${p.principal.role} ${p.principal.role === 'vendor' ? (p.principal.vendorId ?? p.principal.id) : p.principal.id}`;
  const headers = JSON.stringify({ 'X-CSRF-Token': p.csrf });
  return `<!doctype html>${html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}'>
<title>${p.title} · IoMT gateway console</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/htmx.min.js" defer></script>
</head>
<body hx-headers="${headers}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<span class="brand">IoMT gateway</span>
<nav aria-label="Console"><ul>${NAV.filter((n) => n.roles.includes(p.principal.role)).map(
    (n) => html`<li><a href="${n.path}"${n.label === p.current ? raw(' aria-current="page"') : ''}>${n.label}</a></li>`,
  )}</ul></nav>
<form method="post" action="/console/logout" class="signout"><input type="hidden" name="_csrf" value="${p.csrf}"><span>${who}</span> <button type="submit">Sign out</button></form>
</header>
<main id="main" tabindex="-1">
<h1>${p.title}</h1>
${p.body}
</main>
</body>
</html>`}`;
}

/** A page outside a session (sign-in, errors). */
export function bare(title: string, body: Html): string {
  return `<!doctype html>${html`<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · IoMT gateway console</title>
<link rel="stylesheet" href="/console/static/console.css"></head>
<body><main id="main" class="narrow"><h1>${title}</h1>${body}</main></body></html>`}`;
}

/** The hidden CSRF field of a form. */
export const csrfField = (token: string): Html => html`<input type="hidden" name="_csrf" value="${token}">`;

/**
 * A small line chart as inline SVG (no script): one or more series over the same time axis, with a text summary for
 * screen readers (role="img" and a title).
 */
export function chart(title: string, series: { label: string; points: (number | null)[] }[], unit: string): Html {
  const w = 320;
  const h = 80;
  const all = series.flatMap((s) => s.points.filter((p): p is number => p !== null));
  const max = Math.max(1e-9, ...all);
  const n = Math.max(2, ...series.map((s) => s.points.length));
  const paths = series.map((s, k) => {
    let d = '';
    s.points.forEach((p, i) => {
      if (p === null) return;
      const x = (i / (n - 1)) * w;
      const y = h - (p / max) * (h - 4) - 2;
      d += `${d ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    return html`<path class="s${k}" d="${d}" fill="none"/>`;
  });
  const last = series.map((s) => {
    const v = [...s.points].reverse().find((p) => p !== null);
    return `${s.label} ${v === undefined || v === null ? 'no data' : `${round(v)} ${unit}`}`;
  });
  const summary = `${title}: latest ${last.join(', ')}; highest ${round(all.length ? max : 0)} ${unit}`;
  return html`<figure class="chart"><svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${summary}"><title>${summary}</title><line x1="0" y1="${h - 1}" x2="${w}" y2="${h - 1}" class="axis"/>${paths}</svg><figcaption>${title} <span class="muted">(${last.join(' · ')}; last hour)</span></figcaption></figure>`;
}

const round = (v: number) => (Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 100) / 100);
