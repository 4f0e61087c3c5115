/**
 * The counting FHIR sink of the fault suite: a small FHIR R4 server over real HTTP that journals every Observation
 * write, so a scenario can count per reading how many Observations were created: 0 (lost, if the sender was
 * acknowledged), 1 (delivered) or more (duplicated).
 *
 * Why not the sandbox EHR (src/sandbox): its in-memory engine searches by scanning, so each conditional create costs
 * time proportional to what is stored; measured on two busy cores, a transaction of 50 conditional creates took 4 s
 * against an empty store and 109 s against 350 Observations. A fault scenario writes thousands. This server keeps an
 * index per identifier and serves exactly what the gateway uses of an EHR: `GET /metadata`, search by `identifier`,
 * read by id, create (with `If-None-Exist`) and transaction Bundles with conditional creates (`ifNoneExist`),
 * conditional updates (`PUT Type?identifier=`) and `urn:uuid:` references resolved to the ids it assigns. As a real
 * server does, a transaction is all or nothing, and its conditional creates are resolved against what existed before
 * the transaction: two entries for one identifier in one Bundle create two resources, so such a gateway bug would show.
 *
 * A reading is keyed by its device identifier and its effective time (epoch ms): every reading the load drivers send
 * has a unique pair, whatever channel it came in on, so the key does not depend on how the gateway hashes identifiers.
 * The Observation identifier is journalled beside it and counted too.
 *
 * `down()` closes the port (connections refused, as when an EHR is switched off); `up()` opens it again on the same
 * port.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Bundle, BundleEntry, Device, Observation, Resource } from 'fhir/r4';

export interface Write {
  /** device identifier value | effective time (epoch ms) */
  key: string;
  identifier: string;
  created: boolean;
}

export interface Sink {
  /** The FHIR base URL (what the gateway is given as FHIR_BASE_URL). */
  url: string;
  /** Every Observation write the server answered, in order. */
  journal: Write[];
  /** How many distinct readings have been created so far. */
  deliveredCount(): number;
  /** Called with the key of each reading the first time it is created. */
  onCreated?: (key: string) => void;
  /** Observations created per reading key. */
  createdByKey(): Map<string, number>;
  /** Observations created per Observation identifier. */
  createdByIdentifier(): Map<string, number>;
  /** Observations stored at the end, per reading key (a cross-check of the journal). */
  storedByKey(): Map<string, number>;
  /** Requests served, and transactions among them. */
  stats: { requests: number; transactions: number };
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

type Stored = Resource & { id: string };

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const outcome = (code: string, diagnostics: string) => ({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code, diagnostics }],
});

const identifiersOf = (r: Resource): { system?: string; value?: string }[] =>
  ((r as { identifier?: { system?: string; value?: string }[] }).identifier ?? []).filter((i) => i.value);

/** `identifier=system|value` (the only search the gateway makes) → the index key. */
function identifierParam(query: string): string | undefined {
  const v = new URLSearchParams(query).get('identifier');
  if (v === null) return undefined;
  return v.includes('|') ? v : `|${v}`;
}

export async function startSink(): Promise<Sink> {
  const byId = new Map<string, Stored>();
  /** type → "system|value" → id */
  const index = new Map<string, Map<string, string>>();
  const journal: Write[] = [];
  const createdKeys = new Set<string>();
  const stats = { requests: 0, transactions: 0 };

  const idx = (type: string) => {
    let m = index.get(type);
    if (!m) index.set(type, (m = new Map()));
    return m;
  };
  const find = (type: string, identifier: string): Stored | undefined => {
    const id = idx(type).get(identifier);
    return id ? byId.get(`${type}/${id}`) : undefined;
  };
  const keyOf = (obs: Observation): string => {
    const ref = obs.device?.reference ?? '';
    const dev = byId.get(ref) as Device | undefined;
    const device = dev?.identifier?.[0]?.value ?? obs.device?.identifier?.value ?? ref;
    const eff = obs.effectiveDateTime ?? obs.effectivePeriod?.start ?? obs.effectiveInstant ?? '';
    return `${device}|${Date.parse(eff)}`;
  };
  const save = (r: Resource, id: string, created: boolean): Stored => {
    const versionId = created ? 1 : Number((byId.get(`${r.resourceType}/${id}`)?.meta?.versionId as string | undefined) ?? 0) + 1;
    const stored = { ...r, id, meta: { ...r.meta, versionId: String(versionId), lastUpdated: new Date().toISOString() } } as Stored;
    byId.set(`${r.resourceType}/${id}`, stored);
    for (const i of identifiersOf(r)) idx(r.resourceType).set(`${i.system ?? ''}|${i.value}`, id);
    return stored;
  };
  const journalObservation = (o: Resource, created: boolean) => {
    if (o.resourceType !== 'Observation') return;
    const w: Write = { key: keyOf(o as Observation), identifier: identifiersOf(o)[0]?.value ?? '', created };
    journal.push(w);
    if (created && !createdKeys.has(w.key)) {
      createdKeys.add(w.key);
      sink.onCreated?.(w.key);
    }
  };

  /** Replaces every `urn:uuid:` reference with the id it was given in this transaction. */
  const resolveRefs = (value: unknown, ids: Map<string, string>): unknown => {
    if (Array.isArray(value)) return value.map((v) => resolveRefs(v, ids));
    if (value && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) {
        out[k] = k === 'reference' && typeof v === 'string' && ids.has(v) ? ids.get(v) : resolveRefs(v, ids);
      }
      return out;
    }
    return value;
  };

  const transaction = (bundle: Bundle): Bundle => {
    const entries: BundleEntry[] = bundle.entry ?? [];
    // Pass 1, against the state before the transaction: what each entry does. Any error refuses the whole Bundle.
    const plans = entries.map((e) => {
      const r = e.resource;
      const req = e.request;
      if (!r?.resourceType || !req?.method || !req.url) throw new HttpError(400, 'each entry needs a resource and a request');
      if (req.method === 'POST') {
        const cond = req.ifNoneExist ? identifierParam(req.ifNoneExist) : undefined;
        if (req.ifNoneExist && !cond) throw new HttpError(400, `unsupported ifNoneExist '${req.ifNoneExist}'`);
        const existing = cond ? find(r.resourceType, cond) : undefined;
        return { e, r, kind: existing ? ('exists' as const) : ('create' as const), id: existing?.id ?? randomUUID() };
      }
      if (req.method === 'PUT') {
        const [type, query] = req.url.split('?');
        if (type !== r.resourceType) throw new HttpError(400, `PUT ${req.url} with a ${r.resourceType}`);
        if (!query) return { e, r, kind: 'update' as const, id: type.split('/')[1] ?? r.id ?? randomUUID() };
        const cond = identifierParam(query);
        if (!cond) throw new HttpError(400, `unsupported conditional update '${req.url}'`);
        const existing = find(type, cond);
        return { e, r, kind: existing ? ('update' as const) : ('create' as const), id: existing?.id ?? randomUUID() };
      }
      throw new HttpError(400, `unsupported transaction method ${req.method}`);
    });
    const ids = new Map<string, string>();
    for (const p of plans) if (p.e.fullUrl) ids.set(p.e.fullUrl, `${p.r.resourceType}/${p.id}`);
    // Pass 2: apply (synchronously: no other request runs in between, so the transaction is atomic).
    const answers: BundleEntry[] = plans.map((p) => {
      const location = `${p.r.resourceType}/${p.id}/_history/`;
      if (p.kind === 'exists') {
        journalObservation(byId.get(`${p.r.resourceType}/${p.id}`)!, false);
        return { response: { status: '200 OK', location: `${location}${byId.get(`${p.r.resourceType}/${p.id}`)?.meta?.versionId}` } };
      }
      const stored = save(resolveRefs(p.r, ids) as Resource, p.id, p.kind === 'create');
      journalObservation(stored, p.kind === 'create');
      return { response: { status: p.kind === 'create' ? '201 Created' : '200 OK', location: `${location}${stored.meta?.versionId}` } };
    });
    return { resourceType: 'Bundle', type: 'transaction-response', entry: answers };
  };

  const route = (method: string, path: string, query: string, body: unknown, headers: IncomingMessage['headers']): [number, unknown] => {
    const parts = path.split('/').filter(Boolean);
    if (method === 'GET' && parts[0] === 'metadata') {
      return [
        200,
        {
          resourceType: 'CapabilityStatement',
          status: 'active',
          kind: 'instance',
          fhirVersion: '4.0.1',
          format: ['json'],
          date: new Date().toISOString(),
        },
      ];
    }
    if (method === 'POST' && parts.length === 0) {
      const b = body as Bundle;
      if (b?.resourceType !== 'Bundle' || b.type !== 'transaction') throw new HttpError(400, 'POST / takes a transaction Bundle');
      stats.transactions++;
      return [200, transaction(b)];
    }
    if (method === 'GET' && parts.length === 1) {
      const cond = identifierParam(query);
      const hit = cond ? find(parts[0], cond) : undefined;
      const all = cond ? (hit ? [hit] : []) : [...byId.values()].filter((r) => r.resourceType === parts[0]).slice(0, 100);
      return [200, { resourceType: 'Bundle', type: 'searchset', total: all.length, entry: all.map((r) => ({ resource: r })) }];
    }
    if (method === 'GET' && parts.length === 2) {
      const r = byId.get(`${parts[0]}/${parts[1]}`);
      return r ? [200, r] : [404, outcome('not-found', `${parts[0]}/${parts[1]} not found`)];
    }
    if (method === 'POST' && parts.length === 1) {
      const r = body as Resource;
      if (r?.resourceType !== parts[0]) throw new HttpError(400, `POST /${parts[0]} with a ${r?.resourceType}`);
      const ifNoneExist = headers['if-none-exist'];
      const cond = typeof ifNoneExist === 'string' ? identifierParam(ifNoneExist) : undefined;
      const existing = cond ? find(r.resourceType, cond) : undefined;
      if (existing) {
        journalObservation(existing, false);
        return [200, existing];
      }
      const stored = save(r, randomUUID(), true);
      journalObservation(stored, true);
      return [201, stored];
    }
    throw new HttpError(400, `not supported by the counting sink: ${method} ${path}`);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    stats.requests++;
    const [path, query = ''] = (req.url ?? '/').replace(/^\/fhir/, '').split('?');
    let status: number;
    let answer: unknown;
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        throw new HttpError(400, 'the body is not JSON');
      }
      [status, answer] = route(req.method ?? 'GET', path, query, body, req.headers);
    } catch (err) {
      status = err instanceof HttpError ? err.status : 500;
      answer = outcome(status === 500 ? 'exception' : 'invalid', (err as Error).message);
    }
    res.writeHead(status, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify(answer));
  };

  let server: Server;
  let port = 0;
  const sockets = new Set<Socket>();
  const open = () =>
    new Promise<void>((res, rej) => {
      server = createServer((req, r) => void handle(req, r));
      server.keepAliveTimeout = 60000;
      server.on('connection', (s) => {
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
      });
      server.once('error', rej);
      server.listen(port, '127.0.0.1', () => {
        port = (server.address() as AddressInfo).port;
        res();
      });
    });
  const close = () =>
    new Promise<void>((res) => {
      for (const s of sockets) s.destroy();
      server.close(() => res());
    });
  await open();
  let isDown = false;

  const count = (pick: (w: Write) => string) => {
    const m = new Map<string, number>();
    for (const w of journal) if (w.created) m.set(pick(w), (m.get(pick(w)) ?? 0) + 1);
    return m;
  };

  const sink: Sink = {
    url: `http://127.0.0.1:${port}/fhir`,
    journal,
    stats,
    deliveredCount: () => createdKeys.size,
    createdByKey: () => count((w) => w.key),
    createdByIdentifier: () => count((w) => w.identifier),
    storedByKey() {
      const m = new Map<string, number>();
      for (const r of byId.values()) {
        if (r.resourceType !== 'Observation') continue;
        const k = keyOf(r as Observation);
        m.set(k, (m.get(k) ?? 0) + 1);
      }
      return m;
    },
    async down() {
      if (isDown) return;
      isDown = true;
      await close();
    },
    async up() {
      if (!isDown) return;
      await open();
      isDown = false;
    },
    async stop() {
      if (!isDown) await close();
      isDown = true;
    },
  };
  return sink;
}
