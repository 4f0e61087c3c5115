/**
 * How a destination is written (its write mode). Delivery always builds the same transaction Bundle
 * (fhir/transaction.ts: conditional creates on identifiers, urn:uuid references between entries); the writer sends it:
 *
 *   transaction  as it is, in one request: all or nothing.
 *   batch        as batch Bundles, one per dependency level (devices, patients and audit events first, then the
 *                observations that reference them, their urn:uuid references replaced by the ids the server answered):
 *                a batch resolves no references between its entries.
 *   individual   one request per resource, in the same order: `If-None-Exist` where the server supports conditional
 *                create, otherwise a search by identifier before each create (and before a conditional update the
 *                server does not support).
 *
 * Every mode is idempotent: each resource is created only when its identifier is not found, so a retried or replayed
 * reading finds what an earlier attempt wrote. The device and patient locks (locks.ts) keep two writers of the same
 * identifier apart, which a search-before-create needs.
 *
 * When the destination does not name its mode, it is chosen from the server's CapabilityStatement the first time it is
 * needed (at the worker's start; again at the next delivery if the server did not answer): transaction, else batch,
 * else individual, when the server says it supports conditional create on Observation; individual with a search before
 * each create when it does not.
 */
import type { Bundle, BundleEntry, CapabilityStatement, Observation, Resource } from 'fhir/r4';
import type { WriteMode } from '../config/destinations.js';
import { isRetryableStatus } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import { type EhrClient, EhrError } from './ehr-client.js';

export interface ResolvedWriteMode {
  mode: WriteMode;
  /** Individual mode: send If-None-Exist (else search before create). */
  conditionalCreate: boolean;
  /** Individual mode: PUT Type?identifier=… (else search, then PUT Type/id or POST). */
  conditionalUpdate: boolean;
  source: 'configured' | 'capability-statement';
}

/** The write mode a CapabilityStatement allows (see the file's comment). */
export function chooseWriteMode(cs: CapabilityStatement): Omit<ResolvedWriteMode, 'source'> {
  const rest = cs.rest?.find((r) => r.mode === 'server') ?? cs.rest?.[0];
  const interactions = new Set((rest?.interaction ?? []).map((i) => i.code));
  const observation = rest?.resource?.find((r) => r.type === 'Observation');
  const conditionalCreate = observation?.conditionalCreate === true;
  const conditionalUpdate = observation?.conditionalUpdate === true;
  if (!conditionalCreate) return { mode: 'individual', conditionalCreate, conditionalUpdate };
  const mode: WriteMode = interactions.has('transaction') ? 'transaction' : interactions.has('batch') ? 'batch' : 'individual';
  return { mode, conditionalCreate, conditionalUpdate };
}

/** Every `reference` string in a resource. */
function referencesOf(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) for (const x of v) referencesOf(x, out);
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'reference' && typeof x === 'string') out.push(x);
      else referencesOf(x, out);
    }
  }
  return out;
}

/** The resource with its urn:uuid references replaced by the ids the server gave. */
function rewrite<T>(v: T, ids: Map<string, string>): T {
  if (Array.isArray(v)) return v.map((x) => rewrite(x, ids)) as T;
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === 'reference' && typeof x === 'string' ? (ids.get(x) ?? x) : rewrite(x, ids);
    return out as T;
  }
  return v;
}

/** `Observation/123/_history/1` or a full URL → `Observation/123`. */
function typeAndId(location: string | undefined, fallbackType: string, resource?: Resource): string | undefined {
  if (resource?.id) return `${resource.resourceType}/${resource.id}`;
  const m = location ? /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?\/?$/.exec(location) : null;
  if (m) return `${m[1]}/${m[2]}`;
  return resource?.id ? `${fallbackType}/${resource.id}` : undefined;
}

/** Where each Observation written is on the destination: its identifier (`system|value`) to `Observation/<id>`. */
export type WrittenObservations = Map<string, string>;

/** What a write answers: where its Observations are, and where each entry is (its fullUrl to `Type/<id>`). */
export interface Written {
  observations: WrittenObservations;
  ids: ReadonlyMap<string, string>;
}

export const observationKey = (o: { identifier?: { system?: string; value?: string }[] }): string =>
  `${o.identifier?.[0]?.system ?? ''}|${o.identifier?.[0]?.value ?? ''}`;

function writtenObservations(bundle: Bundle, ids: Map<string, string>): WrittenObservations {
  const out: WrittenObservations = new Map();
  for (const e of bundle.entry ?? []) {
    const id = e.fullUrl ? ids.get(e.fullUrl) : undefined;
    if (e.resource?.resourceType === 'Observation' && id?.startsWith('Observation/'))
      out.set(observationKey(e.resource as Observation), id);
  }
  return out;
}

export class DestinationWriter {
  private resolving?: Promise<ResolvedWriteMode>;
  /** The write mode once known (for /api/status, which must not wait for a server that does not answer). */
  known?: ResolvedWriteMode;

  constructor(
    private readonly ehr: EhrClient,
    private readonly configured: { writeMode?: WriteMode; conditionalCreate?: boolean },
    private readonly log: Logger,
    private readonly destination: string,
  ) {}

  /** The write mode: as configured, or from the CapabilityStatement (asked once; again after a failure). */
  resolve(): Promise<ResolvedWriteMode> {
    const c = this.configured;
    if (c.writeMode && (c.writeMode !== 'individual' || c.conditionalCreate !== undefined)) {
      const conditional = c.conditionalCreate ?? true;
      this.known ??= { mode: c.writeMode, conditionalCreate: conditional, conditionalUpdate: conditional, source: 'configured' };
      return Promise.resolve(this.known);
    }
    this.resolving ??= this.ehr.capabilities().then(
      (cs) => {
        const chosen = chooseWriteMode(cs);
        const r: ResolvedWriteMode = {
          ...chosen,
          mode: c.writeMode ?? chosen.mode,
          conditionalCreate: c.conditionalCreate ?? chosen.conditionalCreate,
          source: 'capability-statement',
        };
        this.log.info(
          {
            destination: this.destination,
            writeMode: r.mode,
            conditionalCreate: r.conditionalCreate,
            conditionalUpdate: r.conditionalUpdate,
          },
          "write mode chosen from the destination's CapabilityStatement",
        );
        this.known = r;
        return r;
      },
      (err: EhrError) => {
        this.resolving = undefined;
        throw new EhrError(
          `destination '${this.destination}': its write mode could not be chosen (${err.message}); retried at the next delivery`,
          true,
          undefined,
          undefined,
          undefined,
          { cause: err },
        );
      },
    );
    return this.resolving;
  }

  /**
   * Writes the transaction Bundle the destination's way. Answers where each Observation is on the destination: its
   * identifier (`system|value`) to `Observation/<id>`, for the subscribers that follow the destination (an Observation
   * whose id the server did not say is left out); and where each entry is (`ids`: its fullUrl to `Type/<id>`).
   */
  async write(bundle: Bundle): Promise<Written> {
    const { mode, conditionalCreate, conditionalUpdate } = await this.resolve();
    const ids = new Map<string, string>();
    if (mode === 'transaction') {
      const answer = await this.ehr.transaction(bundle);
      (bundle.entry ?? []).forEach((e, i) => {
        const r = answer?.entry?.[i];
        const id = typeAndId(r?.response?.location ?? r?.fullUrl, e.resource?.resourceType ?? '', r?.resource);
        if (e.fullUrl && id) ids.set(e.fullUrl, id);
      });
      return { observations: writtenObservations(bundle, ids), ids };
    }
    let pending = bundle.entry ?? [];
    while (pending.length) {
      const ready = pending.filter((e) => referencesOf(e.resource).every((r) => !r.startsWith('urn:') || ids.has(r)));
      if (!ready.length) throw new Error('the bundle has references between its entries that no entry resolves');
      pending = pending.filter((e) => !ready.includes(e));
      const level = ready.map((e) => ({ ...e, resource: rewrite(e.resource, ids) }));
      if (mode === 'batch') await this.batchLevel(level, ids);
      else for (const e of level) await this.one(e, ids, conditionalCreate, conditionalUpdate);
    }
    return { observations: writtenObservations(bundle, ids), ids };
  }

  /** One level as a batch Bundle; an entry that failed fails the level (the retry finds what the others wrote). */
  private async batchLevel(entries: BundleEntry[], ids: Map<string, string>): Promise<void> {
    const answer = await this.ehr.batch({
      resourceType: 'Bundle',
      type: 'batch',
      entry: entries.map(({ resource, request }) => ({ resource, request })),
    });
    let failure: EhrError | undefined;
    entries.forEach((e, i) => {
      const r = answer.entry?.[i];
      const status = Number.parseInt(r?.response?.status ?? '', 10);
      if (!Number.isFinite(status) || status >= 300) {
        const code = Number.isFinite(status) ? status : 502;
        const what = `batch entry ${e.request?.method} ${e.request?.url}`;
        const oo = r?.response?.outcome?.resourceType === 'OperationOutcome' ? r.response.outcome : undefined;
        failure ??= new EhrError(`${what}: EHR answered HTTP ${code}`, isRetryableStatus(code), code, oo as never);
        return;
      }
      const id = typeAndId(r?.response?.location, e.resource?.resourceType ?? '', r?.resource);
      if (e.fullUrl && id) ids.set(e.fullUrl, id);
    });
    if (failure) throw failure;
  }

  /** One entry as its own request. */
  private async one(e: BundleEntry, ids: Map<string, string>, conditionalCreate: boolean, conditionalUpdate: boolean): Promise<void> {
    const resource = e.resource as Resource;
    const request = e.request;
    if (!request) return;
    const type = resource.resourceType;
    let written: Resource | undefined;
    const [path, query] = request.url.split('?', 2);
    const find = async (q: string) => {
      const found = await this.ehr.search<Resource>(type, Object.fromEntries(new URLSearchParams(q)));
      if (found.length > 1) throw new EhrError(`${type}?${q} matches ${found.length} resources on the destination`, false, 412);
      return found[0];
    };
    if (request.method === 'POST' && request.ifNoneExist) {
      if (conditionalCreate)
        written = await this.ehr.write(`create ${type}`, 'POST', type, resource, { 'if-none-exist': request.ifNoneExist });
      else written = (await find(request.ifNoneExist)) ?? (await this.ehr.write(`create ${type}`, 'POST', type, resource));
    } else if (request.method === 'PUT' && query !== undefined && !conditionalUpdate) {
      const existing = await find(query);
      written = existing?.id
        ? await this.ehr.write(`update ${type}`, 'PUT', `${type}/${existing.id}`, { ...resource, id: existing.id })
        : await this.ehr.write(`create ${type}`, 'POST', type, resource);
    } else {
      const headers: Record<string, string> = request.ifMatch ? { 'if-match': request.ifMatch } : {};
      const method = request.method === 'PUT' ? 'PUT' : 'POST';
      written = await this.ehr.write(
        `${method === 'PUT' ? 'update' : 'create'} ${type}`,
        method,
        path + (query ? `?${query}` : ''),
        resource,
        headers,
      );
    }
    const id = typeAndId(undefined, type, written);
    if (e.fullUrl && id) ids.set(e.fullUrl, id);
  }
}
