/** Shared pieces of the destination tests: a destinations file, readings, counts of Observations by identifier. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Observation } from 'fhir/r4';
import { startEhr, startGateway, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';

export function destinationsFile(doc: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'gw-dest-'));
  const file = join(dir, 'destinations.json');
  writeFileSync(file, typeof doc === 'string' ? doc : JSON.stringify(doc, null, 2));
  return file;
}

export const reading = (deviceId: string, value: number, code = 'MDC_PULS_OXIM_SAT_O2', unit = '%') => ({
  deviceId,
  patientId: 'MRN-D',
  timestamp: '2026-11-23T11:00:00Z',
  measurements: [{ code, value, unit }],
});

/** Observations on an EHR: how many, and how many distinct identifiers. */
export async function observations(ehr: TestEhr): Promise<{ total: number; distinct: number; list: Observation[] }> {
  const list = await ehr.search<Observation>('Observation', { _count: '1000' });
  return { total: list.length, distinct: new Set(list.map((o) => `${o.identifier?.[0]?.system}|${o.identifier?.[0]?.value}`)).size, list };
}

/** A fault that holds while `down()` says so: many entries, each consumed by one request while it matches. */
export const outage = (down: () => boolean, n = 100_000) => Array.from({ length: n }, () => ({ status: 503, match: () => down() }));

/** A Redis, two sandbox EHRs and a gateway that sends to them as its destinations file says (useTwoEhrs). */
export interface TwoEhrStack {
  redis: TestRedis;
  a: TestEhr;
  b: TestEhr;
  gw: TestGateway;
}

/**
 * A TwoEhrStack for the enclosing describe block: started before its tests, stopped after them. `destinations(a, b)`
 * is the destinations file's list; `env` is added to the gateway's environment (UNKNOWN_PATIENT_POLICY=create unless
 * it says otherwise).
 */
export function useTwoEhrs(destinations: (a: TestEhr, b: TestEhr) => unknown[], env: Record<string, string> = {}): TwoEhrStack {
  const s = {} as TwoEhrStack;
  before(async () => {
    s.redis = await startRedis();
    s.a = await startEhr();
    s.b = await startEhr();
    const file = destinationsFile({ destinations: destinations(s.a, s.b) });
    s.gw = await startGateway({ REDIS_URL: s.redis.url, DESTINATIONS_FILE: file, UNKNOWN_PATIENT_POLICY: 'create', ...env });
  });
  after(async () => {
    await s.gw?.stop();
    await s.a?.stop();
    await s.b?.stop();
    await s.redis?.stop();
  });
  return s;
}
