/**
 * medplum's in-memory repository answers a search by testing every stored resource of the type with FHIRPath (about
 * 0.1 to 0.2 ms each). The gateway's writes are conditional creates (`ifNoneExist: identifier=system|value`), which
 * the engine searches twice per entry of a transaction, so a transaction cost grew with everything the sandbox held:
 * 1.9 s for twenty readings into an empty sandbox, 17 s with 200 readings stored (`npx tsx bench/sandbox.ts`). The
 * sandbox runs in the gateway's process, so that time was also a blocked event loop: no ACK, no health check, no lock
 * renewal meanwhile.
 *
 * This repository keeps, per resource type, which resources carry an identifier of each value (lower-cased, as
 * medplum compares tokens) and tests only those. Its answer is medplum's own: the candidates are a superset of the
 * matches, and each candidate is tested with medplum's `matchesSearchRequest`, in the order the engine's scan would
 * meet it. A search it cannot narrow that way (no `identifier` filter, a modifier, several values, an escaped
 * character, a type whose `identifier` parameter reads other elements) is medplum's search, unchanged.
 */
import { deepClone, globalSchema, matchesSearchRequest, Operator, type SearchRequest, type WithId } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
// medplum's own FHIR types (its methods are typed with them), not @types/fhir's.
import type { Bundle, Resource } from '@medplum/fhirtypes';

/** The lower-cased identifier value an `identifier` filter requires, when the filter can use the index. */
function requiredValue(filter: { code: string; operator: Operator; value: string }): string | undefined {
  if (filter.code !== 'identifier' || filter.operator !== Operator.EQUALS) return undefined;
  const v = filter.value;
  // Several values (a comma, escaped or not) or escapes: medplum's own scan.
  if (v.includes(',') || v.includes('\\')) return undefined;
  // As medplum reads a token: `system|value`, `|value`, `value`; `system|` (any value of the system) is no narrowing.
  const value = (v.includes('|') ? v.split('|')[1] : v).toLowerCase();
  return value || undefined;
}

/**
 * The index keys of a resource, lower-cased: `type|value` for each identifier's value and for its `type.text`, the two
 * tokens medplum makes of an identifier (a search by `value` or `|value` matches either).
 */
function identifierKeys(resource: Resource): string[] {
  const ids = (resource as { identifier?: unknown }).identifier;
  const keys: string[] = [];
  for (const identifier of Array.isArray(ids) ? ids : [ids]) {
    const i = identifier as { value?: unknown; type?: { text?: unknown } } | undefined;
    // An empty token is never searched through the index (tokenValue), and medplum drops empty strings before it
    // stores a resource: an entry for one could not be found again to be removed.
    for (const token of [i?.value, i?.type?.text])
      if (typeof token === 'string' && token) keys.push(`${resource.resourceType}|${token.toLowerCase()}`);
  }
  return keys;
}

/** Whether the type's `identifier` search parameter reads `<type>.identifier` and nothing else of that type. */
function identifierIsPlain(type: string): boolean {
  const expression = globalSchema.types[type]?.searchParams?.identifier?.expression;
  if (!expression) return false;
  const parts = expression.split('|').map((p) => p.trim());
  const own = parts.filter((p) => !/^[A-Z][A-Za-z]*\./.test(p) || p.startsWith(`${type}.`));
  return own.length === 1 && own[0] === `${type}.identifier`;
}

export interface IndexedRepositoryOptions {
  /**
   * Most Observations kept (0: no limit). Past it the first stored are dropped, with their history: the sandbox holds
   * everything in the gateway's memory, and a device simulator left running would otherwise fill it. (An update does
   * not make an Observation newer; other resource types are not counted.)
   */
  maxObservations?: number;
  /** Told how many Observations were dropped, each time some are. */
  onDropped?(count: number, kept: number): void;
}

export class IndexedMemoryRepository extends MemoryRepository {
  /**
   * `type|lower-cased identifier value` → the id, or ids, of the resources that carried it (one id is the usual case:
   * kept as a string, not a Set). An entry left by an update that changed identifiers is harmless: every candidate is
   * tested.
   */
  private readonly byIdentifier = new Map<string, string | Set<string>>();
  /** Per type, each id's place in the engine's map (the order its scan visits), for results in the same order. */
  private readonly place = new Map<string, Map<string, number>>();
  private next = 0;
  private readonly plain = new Map<string, boolean>();
  /** Searches answered from the index, and the resources they tested (tests read these). */
  readonly stats = { indexedSearches: 0, tested: 0, droppedObservations: 0 };

  constructor(private readonly options: IndexedRepositoryOptions = {}) {
    super();
  }

  private get stored(): Map<string, Map<string, Resource>> {
    // medplum keeps the resources in a private map; the scan below reads the same map its search reads.
    return (this as unknown as { resources: Map<string, Map<string, Resource>> }).resources;
  }

  private get versions(): Map<string, Map<string, Resource[]>> {
    return (this as unknown as { history: Map<string, Map<string, Resource[]>> }).history;
  }

  /** Drops the oldest Observations (and their history) past maxObservations. */
  private dropOldObservations(): void {
    const max = this.options.maxObservations ?? 0;
    const observations = this.stored.get('Observation');
    if (max <= 0 || !observations || observations.size <= max) return;
    let dropped = 0;
    // The engine's map is in creation order: the first ids are the oldest.
    for (const [id, resource] of observations) {
      if (observations.size <= max) break;
      this.unindex(resource);
      observations.delete(id);
      this.versions.get('Observation')?.delete(id);
      this.place.get('Observation')?.delete(id);
      dropped++;
    }
    this.stats.droppedObservations += dropped;
    this.options.onDropped?.(dropped, observations.size);
  }

  override async createResource<T extends Resource>(resource: T): Promise<WithId<T>> {
    // Indexed before it is stored, in the same turn: a search running meanwhile (another transaction's conditional
    // create) must never find it stored but not indexed. An entry whose resource is not stored yet is skipped.
    const input = (resource.id ? resource : { ...resource, id: this.generateId() }) as WithId<T>;
    const type = input.resourceType;
    const previous = this.stored.get(type)?.get(input.id);
    // An update that changed the identifiers leaves no entry behind for the old ones.
    if (previous) this.unindex(previous);
    let places = this.place.get(type);
    if (!places) this.place.set(type, (places = new Map()));
    if (!places.has(input.id)) places.set(input.id, this.next++);
    for (const key of identifierKeys(input)) {
      const held = this.byIdentifier.get(key);
      if (held === undefined) this.byIdentifier.set(key, input.id);
      else if (typeof held === 'string') {
        if (held !== input.id) this.byIdentifier.set(key, new Set([held, input.id]));
      } else held.add(input.id);
    }
    const created = await super.createResource(input);
    if (type === 'Observation') this.dropOldObservations();
    return created;
  }

  /** Removes a resource's id from the index entries of its identifiers. */
  private unindex(resource: Resource): void {
    for (const key of identifierKeys(resource)) {
      const held = this.byIdentifier.get(key);
      if (held === resource.id) this.byIdentifier.delete(key);
      else if (typeof held === 'object') {
        held.delete(resource.id as string);
        if (held.size === 0) this.byIdentifier.delete(key);
      }
    }
  }

  override async deleteResource(resourceType: string, id: string): Promise<void> {
    const resource = this.stored.get(resourceType)?.get(id);
    await super.deleteResource(resourceType, id);
    if (resource) this.unindex(resource);
    // A resource created again under the same id goes to the end of the engine's map, as it does here.
    this.place.get(resourceType)?.delete(id);
  }

  override clear(): void {
    super.clear();
    this.byIdentifier.clear();
    this.place.clear();
  }

  override async search<T extends Resource>(request: SearchRequest<T>): Promise<Bundle<WithId<T>>> {
    const type = request.resourceType;
    let plain = this.plain.get(type);
    if (plain === undefined) {
      plain = identifierIsPlain(type);
      // Only the types the engine knows are remembered: a search of a made-up type must not grow this map.
      if (globalSchema.types[type]) this.plain.set(type, plain);
    }
    // Sorting is medplum's comparator, which it does not export: a sorted search is medplum's.
    const value = plain && !request.sortRules?.length ? request.filters?.map(requiredValue).find((v) => v !== undefined) : undefined;
    if (value === undefined) return super.search(request);
    this.stats.indexedSearches++;
    const resources = this.stored.get(type);
    const places = this.place.get(type);
    const held = this.byIdentifier.get(`${type}|${value}`);
    const ids = (held === undefined ? [] : typeof held === 'string' ? [held] : [...held]).filter((id) => resources?.has(id));
    ids.sort((a, b) => (places?.get(a) ?? 0) - (places?.get(b) ?? 0));
    const result: Resource[] = [];
    for (const id of ids) {
      const r = resources?.get(id) as Resource;
      this.stats.tested++;
      if (matchesSearchRequest(r, request)) result.push(r);
    }
    // From here as medplum's search: copies, offset, count, total.
    let entry = result.map((resource) => ({ resource: deepClone(resource) as WithId<T> }));
    if (request.offset !== undefined) entry = entry.slice(request.offset);
    if (request.count !== undefined) entry = entry.slice(0, request.count);
    return { resourceType: 'Bundle', type: 'searchset', entry: entry.length ? entry : undefined, total: result.length };
  }
}
