/**
 * The sandbox's identifier index against medplum's own in-memory repository: the same writes (creates, updates that
 * change identifiers, deletes, ids created again) go to both, and every search, through medplum's FHIR router, must
 * answer the same Bundle. Then: a transaction of conditional creates against a sandbox holding thousands of
 * Observations tests a handful of resources, not all of them, and still creates nothing twice.
 */
import { strict as assert } from 'node:assert';
import { isOk, Operator } from '@medplum/core';
import { FhirRouter, type FhirRequest, MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, Observation, Resource } from 'fhir/r4';
import { createSandboxEhr } from '../../src/sandbox/sandbox.js';
import { IndexedMemoryRepository } from '../../src/sandbox/indexed-repository.js';

type Repo = MemoryRepository;

/** A tiny deterministic generator, so that a failure can be replayed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const SYSTEMS = ['urn:a', 'urn:b', 'URN:A', undefined];
const VALUES = ['x1', 'X1', 'x2', 'y|z', 'v,w', 'a\\,b', '', 'MRN-7', 'mr'];

async function handle(router: FhirRouter, repo: Repo, method: FhirRequest['method'], url: string, body?: unknown) {
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URL(url, 'http://x').searchParams) {
    const prev = query[k];
    query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  const [outcome, resource] = await router.handleRequest(
    { method, url, pathname: '', body, params: {}, query, headers: {} } as unknown as FhirRequest,
    repo as never,
  );
  return { outcome, resource };
}

/** What a search answered, without what differs between two stores by nature (versions, times). */
function shape(bundle: unknown): unknown {
  const b = bundle as Bundle;
  if (b?.resourceType !== 'Bundle') return bundle;
  return { total: b.total, entry: (b.entry ?? []).map((e) => [e.resource?.id, (e.resource as { identifier?: unknown })?.identifier]) };
}

describe('sandbox EHR: the identifier index answers as medplum’s own repository', function () {
  this.timeout(60000);
  before(async () => {
    // The sandbox indexes the R4 definitions and search parameters the router needs.
    await (await createSandboxEhr()).close();
  });

  it('answers every search of a random history of writes with the same Bundle', async () => {
    const random = rng(20261204);
    const pick = <T>(a: readonly T[]) => a[Math.floor(random() * a.length)];
    const plain = new MemoryRepository();
    const indexed = new IndexedMemoryRepository();
    const router = new FhirRouter();
    const types = ['Patient', 'Device', 'Observation'] as const;
    const ids: string[] = [];
    const identifier = () =>
      Array.from({ length: Math.floor(random() * 3) }, () => {
        const system = pick(SYSTEMS);
        // medplum also matches a search by value against the identifier's type.text.
        const type = random() < 0.2 ? { type: { text: pick(['MR', 'x1', 'Mrn-7']) } } : {};
        return { ...(system ? { system } : {}), value: pick(VALUES), ...type };
      });
    const resource = (type: string, id: string): Resource =>
      ({
        resourceType: type,
        id,
        identifier: identifier(),
        ...(type === 'Observation' ? { status: 'final', code: { text: pick(['a', 'b']) } } : {}),
      }) as Resource;
    let searches = 0;
    for (let step = 0; step < 1000; step++) {
      const type = pick(types);
      const r = random();
      if (r < 0.45 || ids.length < 5) {
        // The same id in both stores, so that the answers can be compared resource for resource.
        const id = `${type}-${step}`;
        ids.push(`${type}/${id}`);
        const res = resource(type, id);
        await plain.createResource(structuredClone(res) as never);
        await indexed.createResource(structuredClone(res) as never);
      } else if (r < 0.6) {
        const [t, id] = pick(ids).split('/');
        const res = resource(t, id);
        await plain.updateResource(structuredClone(res) as never);
        await indexed.updateResource(structuredClone(res) as never);
      } else if (r < 0.65) {
        const [t, id] = pick(ids).split('/');
        const a = await plain.deleteResource(t, id).then(
          () => 'ok',
          () => 'gone',
        );
        const b = await indexed.deleteResource(t, id).then(
          () => 'ok',
          () => 'gone',
        );
        assert.equal(b, a);
      } else {
        const system = pick(SYSTEMS);
        const value = pick(VALUES);
        const token = pick([`${system ?? ''}|${value}`, value, `|${value}`, `${system ?? 'urn:a'}|`, `${value.toUpperCase()}`]);
        const param = pick(['identifier', 'identifier', 'identifier', 'identifier:not', 'identifier:missing']);
        const extra = pick(['', '', '&_count=1', '&_offset=1', '&_sort=_id', '&code=a', ',x2']);
        const url = `${type}?${param}=${encodeURIComponent(param.endsWith(':missing') ? pick(['true', 'false']) : token)}${extra}`;
        const a = await handle(router, plain, 'GET', url);
        const b = await handle(router, indexed, 'GET', url);
        assert.deepEqual(shape(b.resource), shape(a.resource), url);
        assert.deepEqual(b.outcome.issue?.[0]?.code, a.outcome.issue?.[0]?.code, url);
        searches++;
      }
    }
    assert.ok(searches > 250, `${searches} searches compared`);
    assert.ok(indexed.stats.indexedSearches > 50, `${indexed.stats.indexedSearches} searches used the index`);
  });

  it('answers conditional creates in a transaction from the index: a few resources tested, nothing created twice', async () => {
    const sandbox = await createSandboxEhr();
    const router = new FhirRouter();
    const repo = sandbox.repo;
    const obs = (i: number): Observation => ({
      resourceType: 'Observation',
      identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:uuid:obs-${i}` }],
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '2708-6' }] },
      valueQuantity: { value: 97, unit: '%', system: 'http://unitsofmeasure.org', code: '%' },
    });
    for (let i = 0; i < 3000; i++) await repo.createResource(obs(i) as never);
    const entry = (i: number) => ({
      fullUrl: `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      resource: obs(i),
      request: { method: 'POST', url: 'Observation', ifNoneExist: `identifier=urn:ietf:rfc:3986|urn:uuid:obs-${i}` },
    });
    const before = { ...repo.stats };
    // Ten readings already there (2990..2999) and ten new ones (3000..3009).
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: Array.from({ length: 20 }, (_, k) => entry(2990 + k)) };
    const { outcome, resource } = await handle(router, repo, 'POST', '', bundle);
    assert.ok(isOk(outcome), JSON.stringify(outcome));
    const statuses = ((resource as Bundle).entry ?? []).map((e) => e.response?.status?.slice(0, 3));
    assert.deepEqual(statuses, [...Array(10).fill('200'), ...Array(10).fill('201')]);
    const found = await handle(router, repo, 'GET', 'Observation?_count=5000');
    assert.equal((found.resource as Bundle).total, 3010);
    // Each conditional create searched the index; none scanned the 3,000 Observations.
    const searched = repo.stats.indexedSearches - before.indexedSearches;
    const tested = repo.stats.tested - before.tested;
    assert.ok(searched >= 20, `${searched} indexed searches`);
    assert.ok(tested <= 2 * searched, `${tested} resources tested for ${searched} searches`);
    await sandbox.close();
  });

  it('keeps at most maxObservations Observations: the oldest are dropped with their history and index entries', async () => {
    const drops: number[] = [];
    const repo = new IndexedMemoryRepository({ maxObservations: 100, onDropped: (n) => drops.push(n) });
    const router = new FhirRouter();
    for (let i = 0; i < 5; i++) await repo.createResource({ resourceType: 'Patient', identifier: [{ value: `MRN-${i}` }] } as never);
    const created: string[] = [];
    for (let i = 0; i < 150; i++) {
      const o: { id: string } = await repo.createResource({
        resourceType: 'Observation',
        identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:uuid:cap-${i}` }],
        status: 'final',
        code: { text: 'x' },
      } as never);
      created.push(o.id);
    }
    // An update of a kept Observation does not count as a new one.
    const last = (await repo.readResource('Observation', created[149])) as unknown as Observation;
    await repo.updateResource({ ...last, status: 'amended' } as never);
    const all = await handle(router, repo, 'GET', 'Observation?_count=1000');
    assert.equal((all.resource as Bundle).total, 100);
    assert.deepEqual(
      ((all.resource as Bundle).entry ?? []).map((e) => e.resource?.id),
      created.slice(50),
    );
    assert.equal(
      drops.reduce((a, b) => a + b, 0),
      50,
    );
    assert.equal(repo.stats.droppedObservations, 50);
    await assert.rejects(repo.readResource('Observation', created[0]));
    const history = (repo as unknown as { history: Map<string, Map<string, unknown>> }).history.get('Observation');
    assert.equal(history?.has(created[49]), false, 'the history of a dropped Observation is dropped');
    assert.equal(history?.size, 100);
    // A dropped Observation is no longer found by its identifier; a kept one is.
    const gone = await handle(router, repo, 'GET', 'Observation?identifier=urn:ietf:rfc:3986|urn:uuid:cap-3');
    assert.equal((gone.resource as Bundle).total, 0);
    const kept = await handle(router, repo, 'GET', 'Observation?identifier=urn:ietf:rfc:3986|urn:uuid:cap-120');
    assert.equal((kept.resource as Bundle).total, 1);
    // Nothing else is dropped, and the index holds no entry of a dropped Observation.
    assert.equal(((await handle(router, repo, 'GET', 'Patient')).resource as Bundle).total, 5);
    const index = (repo as unknown as { byIdentifier: Map<string, unknown> }).byIdentifier;
    assert.equal(index.size, 105);
  });

  it('keeps no index entry for an empty identifier value or type.text (medplum stores neither, so it could not be removed)', async () => {
    const repo = new IndexedMemoryRepository({ maxObservations: 10 });
    for (let i = 0; i < 50; i++)
      await repo.createResource({
        resourceType: 'Observation',
        identifier: [
          { system: 'urn:s', value: `v${i}` },
          { value: '', type: { text: '' } },
        ],
        status: 'final',
        code: { text: 'x' },
      } as never);
    const index = (repo as unknown as { byIdentifier: Map<string, unknown> }).byIdentifier;
    assert.deepEqual([...index.keys()].sort(), Array.from({ length: 10 }, (_, k) => `Observation|v${40 + k}`).sort());
  });

  it('finds a resource stored while a search runs, and forgets identifiers an update removed', async () => {
    const router = new FhirRouter();
    for (const repo of [new MemoryRepository(), new IndexedMemoryRepository()]) {
      const patient = { resourceType: 'Patient', identifier: [{ system: 'urn:a', value: 'p1' }] };
      // A create and a search started in the same turn (two transactions' conditional creates): the search sees it.
      const [, found] = await Promise.all([
        repo.createResource(patient as never),
        repo.search({ resourceType: 'Patient', filters: [{ code: 'identifier', operator: Operator.EQUALS, value: 'urn:a|p1' }] }),
      ]);
      assert.equal(found.total, 1, repo.constructor.name);
      // An update that replaces the identifier: the old one finds nothing, the new one finds it.
      const stored = found.entry?.[0]?.resource as { id: string };
      await repo.updateResource({ resourceType: 'Patient', id: stored.id, identifier: [{ system: 'urn:a', value: 'p2' }] } as never);
      const old = await handle(router, repo, 'GET', 'Patient?identifier=urn:a|p1');
      const renamed = await handle(router, repo, 'GET', 'Patient?identifier=urn:a|p2');
      assert.deepEqual([(old.resource as Bundle).total, (renamed.resource as Bundle).total], [0, 1], repo.constructor.name);
    }
    const repo = new IndexedMemoryRepository();
    const p = await repo.createResource({ resourceType: 'Patient', identifier: [{ system: 'urn:a', value: 'q1' }] } as never);
    await repo.updateResource({
      resourceType: 'Patient',
      id: (p as { id: string }).id,
      identifier: [{ system: 'urn:a', value: 'q2' }],
    } as never);
    const index = (repo as unknown as { byIdentifier: Map<string, unknown> }).byIdentifier;
    assert.deepEqual([...index.keys()], ['Patient|q2']);
  });
});
