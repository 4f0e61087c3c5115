/**
 * The audit trail (operators and admins): filters by agent, entity, action (C/R/U/D/E or the gateway's subtype code)
 * and time, and export of the filtered events as a FHIR Bundle (JSON) or NDJSON (one AuditEvent per line).
 */
import { type Ctx, q, qs } from '../context.js';
import { html } from '../html.js';
import type { ConsoleRoute } from '../index.js';
import { reasonOf } from '../inject.js';
import { auditTable } from './devices.js';

const FIELDS = ['agent', 'entity', 'action', 'kind', 'since', 'until'] as const;

function query(c: Ctx, limit: string): string {
  const f: Record<string, string> = {};
  for (const k of FIELDS) f[k] = q(c.req, k);
  // The action box takes either an AuditEvent.action code (C, R, U, D, E) or a gateway subtype (device-activate, …).
  if (f.action && !/^[CRUDE]$/.test(f.action)) {
    f.kind = f.action;
    f.action = '';
  }
  return qs({ ...f, limit });
}

async function page(c: Ctx): Promise<void> {
  const r = await c.api('GET', `/api/audit${query(c, '200')}`);
  const inp = (k: string, label: string) =>
    html`<div><label for="a-${k}">${label}</label><input id="a-${k}" name="${k}" value="${q(c.req, k)}"></div>`;
  const filters = qs(Object.fromEntries(FIELDS.map((k) => [k, q(c.req, k)])));
  c.page(
    'Audit trail',
    'Audit trail',
    html`<form method="get" action="/console/audit" class="filters" role="search" aria-label="Filter the audit trail">
${inp('agent', 'Agent (role:id)')}${inp('entity', 'Entity (device id, key id, adapter)')}${inp('action', 'Action (C/R/U/D/E or e.g. device-activate)')}
${inp('since', 'Since (ISO time)')}${inp('until', 'Until (ISO time)')}<button type="submit">Filter</button> <a href="/console/audit">Clear</a></form>
<p class="actions">Export: <a href="/console/audit/export.json${filters}" download>FHIR Bundle (JSON)</a> <a href="/console/audit/export.ndjson${filters}" download>NDJSON</a></p>
${r.ok ? html`<p>${r.body.total} event(s), newest first.</p>${auditTable(r.body)}` : html`<p class="error" role="alert">${reasonOf(r)}</p>`}`,
    r.ok ? 200 : r.status,
  );
}

async function exportAs(c: Ctx, format: 'json' | 'ndjson'): Promise<void> {
  const r = await c.api('GET', `/api/audit${query(c, '10000')}`);
  if (!r.ok) return c.page('Audit trail', 'Audit trail', html`<p class="error" role="alert">${reasonOf(r)}</p>`, r.status);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  c.res.setHeader('Content-Disposition', `attachment; filename="audit-${stamp}.${format}"`);
  if (format === 'json') return void c.res.type('application/fhir+json').send(JSON.stringify(r.body, null, 2));
  const lines = ((r.body.entry ?? []) as { resource: unknown }[]).map((e) => JSON.stringify(e.resource));
  c.res.type('application/fhir+ndjson').send(lines.join('\n') + (lines.length ? '\n' : ''));
}

export function auditPages(): ConsoleRoute[] {
  return [
    { method: 'get', path: '/console/audit', roles: ['operator'], handler: page },
    { method: 'get', path: '/console/audit/export.json', roles: ['operator'], handler: (c) => exportAs(c, 'json') },
    { method: 'get', path: '/console/audit/export.ndjson', roles: ['operator'], handler: (c) => exportAs(c, 'ndjson') },
  ];
}
