/**
 * The sandbox EHR's FHIR engine (not a test): transactions of 20 readings, each as the gateway writes it (a conditional
 * create of the Device, the Patient and two Observations), through medplum's FHIR router, against the sandbox's
 * repository (identifier index) and, in the same run, medplum's own MemoryRepository, as the store grows. Prints ms per
 * transaction and readings/s at each size. The sandbox runs in the gateway's process: a slow transaction is also an
 * event loop held that long.
 *
 * Usage: npx tsx bench/sandbox.ts [--sizes 0,100,200,1000,5000,20000] [--transactions 3] [--plain-max 200]
 *   (--plain-max: the largest store medplum's repository is measured at; it scans every resource per search)
 */
import { FhirRouter, type FhirRequest, MemoryRepository } from '@medplum/fhir-router';
import { createSandboxEhr } from '../src/sandbox/sandbox.js';
import { IndexedMemoryRepository } from '../src/sandbox/indexed-repository.js';
import { args, opt } from './common.js';

const SIZES = (args.includes('--sizes') ? args[args.indexOf('--sizes') + 1] : '0,100,200,1000,5000,20000').split(',').map(Number);
const TRANSACTIONS = opt('transactions', 3);
const PLAIN_MAX = opt('plain-max', 200);
const PER = 20;

let seq = 0;
function entries(i: number) {
  const dev = `BENCH-${i % 500}`;
  const pat = `MRN-${i % 500}`;
  const id = (kind: string) => `urn:uuid:${kind}-${i}`;
  const t = new Date(Date.UTC(2026, 11, 1) + i * 1000).toISOString();
  const obs = (code: string, value: number, unit: string, ucum: string) => ({
    fullUrl: id(`obs-${code}`),
    resource: {
      resourceType: 'Observation',
      identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:uuid:${code}-${i}` }],
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: id('pat') },
      device: { reference: id('dev') },
      effectiveDateTime: t,
      valueQuantity: { value, unit, system: 'http://unitsofmeasure.org', code: ucum },
    },
    request: { method: 'POST', url: 'Observation', ifNoneExist: `identifier=urn:ietf:rfc:3986|urn:uuid:${code}-${i}` },
  });
  return [
    {
      fullUrl: id('dev'),
      resource: { resourceType: 'Device', identifier: [{ system: 'urn:iomt-gateway:device-id', value: dev }], status: 'active' },
      request: { method: 'POST', url: 'Device', ifNoneExist: `identifier=urn:iomt-gateway:device-id|${dev}` },
    },
    {
      fullUrl: id('pat'),
      resource: { resourceType: 'Patient', identifier: [{ system: 'urn:iomt-gateway:patient-id', value: pat }] },
      request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=urn:iomt-gateway:patient-id|${pat}` },
    },
    obs('2708-6', 97, '%', '%'),
    obs('8867-4', 70, 'beats/minute', '/min'),
  ];
}

async function transaction(router: FhirRouter, repo: MemoryRepository): Promise<void> {
  const entry = Array.from({ length: PER }, () => entries(seq++)).flat();
  const body = { resourceType: 'Bundle', type: 'transaction', entry };
  const req = { method: 'POST', url: '', pathname: '', body, params: {}, query: {}, headers: {} } as unknown as FhirRequest;
  const [outcome] = await router.handleRequest(req, repo as never);
  if (outcome.issue?.[0]?.severity === 'error') throw new Error(JSON.stringify(outcome));
}

async function fill(router: FhirRouter, repo: MemoryRepository, readings: number): Promise<void> {
  while (readings > 0) {
    await transaction(router, repo);
    readings -= PER;
  }
}

await (await createSandboxEhr()).close(); // indexes the R4 definitions and search parameters
console.log(`machine: node ${process.version}; ${PER} readings per transaction (Device, Patient, 2 Observations each, all conditional)`);
console.log('stored readings   sandbox (identifier index)          medplum MemoryRepository');
const router = new FhirRouter();
const indexed = new IndexedMemoryRepository();
const plain = new MemoryRepository();
let stored = 0;
for (const size of SIZES) {
  await fill(router, indexed, size - stored);
  if (size <= PLAIN_MAX) await fill(router, plain, size - stored);
  stored = size;
  const measure = async (repo: MemoryRepository) => {
    const t = performance.now();
    for (let i = 0; i < TRANSACTIONS; i++) await transaction(router, repo);
    return (performance.now() - t) / TRANSACTIONS;
  };
  const a = await measure(indexed);
  const b = size <= PLAIN_MAX ? await measure(plain) : undefined;
  // Both stores took the measured transactions: the next size tops both up from the same count.
  stored += TRANSACTIONS * PER;
  const f = (ms: number) => `${ms.toFixed(1).padStart(8)} ms/transaction ${((PER * 1000) / ms).toFixed(0).padStart(7)} readings/s`;
  console.log(`${String(size).padStart(15)}   ${f(a)}   ${b === undefined ? '   (not measured: --plain-max)' : f(b)}`);
}
