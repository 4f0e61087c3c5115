/**
 * Adapters: the list (source, vendor, version, enabled) and, for registered adapters, a mapping editor. The editor
 * checks as you type (htmx, 700 ms after the last key): the templates are compiled and validated, the sample payload
 * is run through them, and the page shows the normalized readings, the FHIR transaction Bundle that would be sent and
 * every issue located by file and JSONPath — the registration API's own machinery (validateMapping, checkSamples,
 * buildTransaction). Saving posts to /api/adapters (a new version; refused with the same located issues), version
 * history shows a line diff between versions, and enable/disable call the API. Vendors see their own adapters only.
 */
import type { Bundle } from 'fhir/r4';
import { boundedMapping, checkSamplesBounded, compileMapping, validateMapping, type MappingIssue } from '../../adapters/mapping/index.js';
import { buildTransaction } from '../../fhir/transaction.js';
import { type Ctx, enc } from '../context.js';
import { csrfField, fmtTime, type Html, html, json } from '../html.js';
import type { ConsoleRoute } from '../index.js';
import { reasonOf } from '../inject.js';
import { lineDiff } from './diff.js';

interface AdapterView {
  id: string;
  source: string;
  vendor?: string;
  version?: number;
  enabled?: boolean;
  description?: string;
  versions?: {
    version: number;
    description?: string;
    registeredAt: string;
    registeredBy: string;
    current: boolean;
    deviceMapping: unknown;
    fhirMapping: unknown;
    samples: unknown[];
  }[];
}

const FILES = { deviceFile: 'deviceMapping', fhirFile: 'fhirMapping' };

async function list(c: Ctx): Promise<void> {
  const r = await c.api<AdapterView[]>('GET', '/api/adapters');
  if (!r.ok) return c.page('Adapters', 'Adapters', html`<p class="error" role="alert">${reasonOf(r)}</p>`, r.status);
  const mayRegister = c.principal.role !== 'operator';
  c.page(
    'Adapters',
    'Adapters',
    html`${mayRegister ? html`<p><a href="/console/adapters/new">Register a new mapping</a></p>` : ''}
<table id="adapters"><caption>${r.body.length} adapter(s)</caption><thead><tr><th scope="col">Adapter</th><th scope="col">Source</th><th scope="col">Vendor</th><th scope="col">Version</th><th scope="col">Enabled</th></tr></thead>
<tbody>${r.body.map(
      (a) =>
        html`<tr><th scope="row"><a href="/console/adapters/${enc(a.id)}">${a.id}</a></th><td>${a.source}</td><td>${a.vendor ?? '—'}</td><td>${a.version ?? '—'}</td><td>${a.enabled === false ? html`<span class="error">no</span>` : 'yes'}</td></tr>`,
    )}</tbody></table>`,
  );
}

interface Draft {
  id: string;
  vendor: string;
  description: string;
  deviceMapping: string;
  fhirMapping: string;
  sample: string;
}

const parse = (text: string, file: string): { value?: unknown; issue?: MappingIssue } => {
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    return { issue: { file, path: '$', message: `not JSON: ${(e as Error).message}`, severity: 'error' } };
  }
};

/** Runs the draft through the mapping machinery: every issue, the readings and the Bundles (nothing is queued). */
async function check(d: Draft, vendor: string): Promise<Html> {
  const dm = parse(d.deviceMapping, 'deviceMapping');
  const fm = parse(d.fhirMapping, 'fhirMapping');
  const sample = parse(d.sample, 'sample');
  const issues: MappingIssue[] = [dm.issue, fm.issue, sample.issue].filter((i): i is MappingIssue => !!i);
  let readings: unknown[] = [];
  let bundles: Bundle[] = [];
  if (!dm.issue && !fm.issue) {
    issues.push(...validateMapping(dm.value, fm.value, FILES));
    const { mapping } = compileMapping(dm.value, fm.value, FILES);
    if (mapping && !sample.issue) {
      const [s] = await checkSamplesBounded(
        d.id || 'draft',
        boundedMapping(mapping, { deviceMapping: dm.value, fhirMapping: fm.value, files: FILES, vendor }),
        [{ file: 'sample', body: sample.value }],
        { ...FILES, vendor },
      );
      issues.push(...s.issues);
      readings = s.translations ?? [];
      bundles = (s.translations ?? []).map((t) =>
        buildTransaction('dry-run', t, t.patient ? { kind: 'create', system: t.patient.system, value: t.patient.value } : { kind: 'none' }),
      );
    }
  }
  const errors = issues.filter((i) => i.severity === 'error');
  return html`<div id="check" aria-live="polite">
${errors.length ? html`<p class="error" role="alert">${errors.length} error(s): the mapping cannot be saved as it is.</p>` : html`<p class="ok" role="status">No errors: the sample translates into valid resources.</p>`}
${issues.length ? html`<ul id="issues">${issues.map((i) => html`<li class="${i.severity === 'error' ? 'error' : 'warn'}" data-file="${i.file ?? ''}" data-path="${i.path}"><code>${i.file ?? ''} ${i.path}</code>: ${i.message}</li>`)}</ul>` : ''}
<div class="side"><section aria-labelledby="h-readings"><h3 id="h-readings">Normalized readings</h3><pre tabindex="0" id="readings">${json(readings)}</pre></section>
<section aria-labelledby="h-bundle"><h3 id="h-bundle">FHIR Bundle that would be sent</h3><pre tabindex="0" id="bundle">${json(bundles)}</pre></section></div></div>`;
}

function draftOf(c: Ctx): Draft {
  const g = (k: string) => c.form.get(k) ?? '';
  return {
    id: g('id').trim(),
    vendor: g('vendor').trim(),
    description: g('description'),
    deviceMapping: g('deviceMapping'),
    fhirMapping: g('fhirMapping'),
    sample: g('sample'),
  };
}

const vendorOf = (c: Ctx, d: Draft) => (c.principal.role === 'vendor' ? (c.principal.vendorId ?? c.principal.id) : d.vendor);

function editor(c: Ctx, d: Draft, isNew: boolean, result: Html, notice?: Html): Html {
  const ta = (name: keyof Draft, label: string, rows: number) =>
    html`<div><label for="e-${name}">${label}</label><textarea id="e-${name}" name="${name}" rows="${rows}" spellcheck="false">${d[name]}</textarea></div>`;
  return html`${notice ?? ''}
<form method="post" action="/console/adapters/save" id="editor" hx-post="/console/adapters/check" hx-trigger="input changed delay:700ms, check" hx-target="#check" hx-swap="outerHTML">
${csrfField(c.csrf)}
<div class="filters">
<div><label for="e-id">Adapter id</label><input id="e-id" name="id" value="${d.id}" required${isNew ? '' : html` readonly`}></div>
${c.principal.role === 'admin' ? html`<div><label for="e-vendor">Vendor</label><input id="e-vendor" name="vendor" value="${d.vendor}" required></div>` : html`<input type="hidden" name="vendor" value="${d.vendor}">`}
<div><label for="e-description">Description</label><input id="e-description" name="description" value="${d.description}"></div>
</div>
<div class="editor">${ta('deviceMapping', 'Device template (deviceMapping, JSON)', 18)}${ta('fhirMapping', 'FHIR template (fhirMapping, JSON)', 18)}</div>
${ta('sample', 'Sample payload (JSON)', 8)}
<div class="actions"><button type="submit" class="secondary" hx-post="/console/adapters/check" hx-target="#check" hx-swap="outerHTML">Check now</button>
<button type="submit" id="save">Save as a new version</button></div>
</form>
${result}`;
}

const EMPTY_DEVICE = json({ templateType: 'CollectionContent', template: [] });
const EMPTY_FHIR = json({ templateType: 'CollectionFhir', template: [] });

async function adapterPage(c: Ctx, draft?: Draft, notice?: Html, status = 200): Promise<void> {
  const id = String(c.req.params.id ?? draft?.id ?? '');
  const r = await c.api<AdapterView>('GET', `/api/adapters/${enc(id)}`);
  if (!r.ok)
    return c.page(
      'Adapter',
      'Adapters',
      html`${notice ?? ''}<p class="error" role="alert">${reasonOf(r)}</p><p><a href="/console/adapters">All adapters</a></p>`,
      r.status,
    );
  const a = r.body;
  const head = html`<p><a href="/console/adapters">All adapters</a></p><dl class="facts"><dt>Source</dt><dd>${a.source}</dd><dt>Vendor</dt><dd>${a.vendor ?? '—'}</dd><dt>Version</dt><dd>${a.version ?? '—'}</dd><dt>Enabled</dt><dd id="enabled">${a.enabled === false ? 'no' : 'yes'}</dd></dl>`;
  if (a.source !== 'registered' || !a.versions?.length)
    return c.page(
      `Adapter ${a.id}`,
      'Adapters',
      html`${notice ?? ''}${head}<p class="muted">A ${a.source} adapter is changed where it comes from (the code, the mappings folder or a plugin), not here.</p>`,
      status,
    );
  const current = a.versions.find((v) => v.current) ?? a.versions[a.versions.length - 1];
  const d: Draft = draft ?? {
    id: a.id,
    vendor: a.vendor ?? '',
    description: current.description ?? '',
    deviceMapping: json(current.deviceMapping),
    fhirMapping: json(current.fhirMapping),
    sample: json(current.samples?.[0] ?? {}),
  };
  const manage = c.principal.role !== 'operator';
  const toggle = a.enabled === false ? 'enable' : 'disable';
  const versions = [...a.versions].sort((x, y) => y.version - x.version);
  c.page(
    `Adapter ${a.id}`,
    'Adapters',
    html`${head}
${manage ? html`<form method="post" action="/console/adapters/${enc(a.id)}/${toggle}" hx-confirm="${toggle === 'disable' ? 'Disable this adapter? Data sent to it will be refused.' : 'Enable this adapter?'}">${csrfField(c.csrf)}<button type="submit" class="${toggle === 'disable' ? 'danger' : ''}">${toggle === 'disable' ? 'Disable' : 'Enable'}</button></form>` : ''}
<h2>Mapping editor</h2>
${manage ? editor(c, d, false, await check(d, vendorOf(c, d)), notice) : html`<p class="muted">Only the owning vendor and admins edit a mapping.</p><pre tabindex="0">${d.deviceMapping}</pre><pre tabindex="0">${d.fhirMapping}</pre>`}
<h2>Version history</h2>
<table id="versions"><thead><tr><th scope="col">Version</th><th scope="col">Registered</th><th scope="col">By</th><th scope="col">Description</th><th scope="col">Changes from the version before</th></tr></thead><tbody>${versions.map(
      (v) => {
        const prev = a.versions?.find((p) => p.version === v.version - 1);
        return html`<tr><td>${v.version}${v.current ? ' (current)' : ''}</td><td>${fmtTime(v.registeredAt)}</td><td>${v.registeredBy}</td><td>${v.description ?? ''}</td><td>${prev ? html`<details><summary>diff</summary><pre tabindex="0" class="diff">${lineDiff(json({ deviceMapping: prev.deviceMapping, fhirMapping: prev.fhirMapping }), json({ deviceMapping: v.deviceMapping, fhirMapping: v.fhirMapping }))}</pre></details>` : 'first version'}</td></tr>`;
      },
    )}</tbody></table>`,
    status,
  );
}

async function save(c: Ctx): Promise<void> {
  const d = draftOf(c);
  const parsed = [parse(d.deviceMapping, 'deviceMapping'), parse(d.fhirMapping, 'fhirMapping'), parse(d.sample, 'sample')];
  const failed = async (message: Html, status: number) => {
    const notice = html`<div class="error" role="alert">${message}</div>`;
    const known = await c.api('GET', `/api/adapters/${enc(d.id)}`);
    if (known.ok && known.body.source === 'registered') {
      c.req.params.id = d.id;
      return adapterPage(c, d, notice, status);
    }
    c.page('New mapping', 'Adapters', editor(c, d, true, await check(d, vendorOf(c, d)), notice), status);
  };
  if (parsed.some((p) => p.issue))
    return failed(
      html`Not saved: ${parsed
        .map((p) => p.issue?.message)
        .filter(Boolean)
        .join('; ')}`,
      422,
    );
  const body = {
    id: d.id,
    ...(d.vendor ? { vendor: d.vendor } : {}),
    ...(d.description.trim() ? { description: d.description } : {}),
    deviceMapping: parsed[0].value,
    fhirMapping: parsed[1].value,
    samples: [parsed[2].value],
  };
  const r = await c.api('POST', '/api/adapters', body);
  if (!r.ok)
    return failed(
      html`<p>Not saved (${r.status}):</p><ul>${((r.body?.issue ?? []) as { diagnostics?: string }[]).map((i) => html`<li>${i.diagnostics}</li>`)}</ul>`,
      r.status,
    );
  c.res.redirect(303, `/console/adapters/${enc(d.id)}?saved=${r.body.version}`);
}

export function adapterPages(): ConsoleRoute[] {
  return [
    { method: 'get', path: '/console/adapters', roles: ['operator', 'vendor'], handler: list },
    {
      method: 'get',
      path: '/console/adapters/new',
      roles: ['vendor'],
      handler: async (c) => {
        const d: Draft = { id: '', vendor: '', description: '', deviceMapping: EMPTY_DEVICE, fhirMapping: EMPTY_FHIR, sample: '{}' };
        c.page('New mapping', 'Adapters', editor(c, d, true, await check(d, vendorOf(c, d))));
      },
    },
    {
      method: 'get',
      path: '/console/adapters/:id',
      roles: ['operator', 'vendor'],
      handler: (c) =>
        adapterPage(
          c,
          undefined,
          c.req.query.saved ? html`<p class="notice" role="status">Saved as version ${String(c.req.query.saved)}.</p>` : undefined,
        ),
    },
    {
      method: 'post',
      path: '/console/adapters/check',
      roles: ['vendor'],
      handler: async (c) => c.fragment(await check(draftOf(c), vendorOf(c, draftOf(c)))),
    },
    { method: 'post', path: '/console/adapters/save', roles: ['vendor'], handler: save },
    ...(['enable', 'disable'] as const).map(
      (action): ConsoleRoute => ({
        method: 'post',
        path: `/console/adapters/:id/${action}`,
        roles: ['vendor'],
        handler: async (c) => {
          const r = await c.api('POST', `/api/adapters/${enc(String(c.req.params.id))}/${action}`);
          await adapterPage(
            c,
            undefined,
            r.ok
              ? html`<p class="notice" role="status">Adapter ${action}d.</p>`
              : html`<p class="error" role="alert">Refused: ${reasonOf(r)}</p>`,
          );
        },
      }),
    ),
  ];
}
