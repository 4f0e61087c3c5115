/** Shared helpers of the adapter tests. */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Coding, Observation } from 'fhir/r4';
import type { InboundMessage, Reading, TranslationContext } from '../../src/core/contract.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const fixturesDir = path.join(repoRoot, 'test/adapters/fixtures');
export const mappingsDir = path.join(repoRoot, 'mappings');
/** Public iomt-fhir samples, outside the project (tests skip when absent). */
export const sharedIomtDir = path.resolve(repoRoot, '../shared/samples/iomt-fhir');

export const ctx: TranslationContext = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:mrn' };

export function readJson<T = unknown>(file: string): T {
  return JSON.parse(readFileSync(file, 'utf8')) as T;
}

/** The JSON files of a fixture folder, except the shared ones whose name starts with '_'. */
export function fixtureCases<T>(folder: string): { name: string; data: T }[] {
  const dir = path.join(fixturesDir, folder);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json') && !f.startsWith('_'))
    .sort()
    .map((f) => ({ name: f.replace(/\.json$/, ''), data: readJson<T>(path.join(dir, f)) }));
}

export function message(m: { body: unknown; attributes?: Record<string, string>; receivedAt?: string }): InboundMessage {
  return { body: m.body, channel: 'http', receivedAt: m.receivedAt ?? '2026-11-23T23:59:00Z', attributes: m.attributes };
}

const codeKeys = (codings: Coding[] | undefined) => (codings ?? []).map((c) => `${c.system}|${c.code}`);

function valueOf(o: { [k: string]: unknown }): Record<string, unknown> | undefined {
  const k = Object.keys(o).find((key) => key.startsWith('value'));
  return k ? { [k]: o[k] } : undefined;
}

/** The parts of an Observation the fixtures state. */
export function project(o: Observation): Record<string, unknown> {
  const out: Record<string, unknown> = { codes: codeKeys(o.code.coding) };
  const cat = o.category?.[0]?.coding?.[0]?.code;
  if (cat) out.category = cat;
  out.effective = o.effectiveDateTime ?? o.effectivePeriod;
  if (o.encounter?.identifier?.value) out.encounter = o.encounter.identifier.value;
  const v = valueOf(o as unknown as Record<string, unknown>);
  if (v) out.value = v;
  if (o.component?.length)
    out.components = o.component.map((c) => ({ codes: codeKeys(c.code.coding), value: valueOf(c as unknown as Record<string, unknown>) }));
  return out;
}

export function projectTranslations(trs: Reading[]): unknown[] {
  return trs.map((t) => ({
    device: t.devices[0]?.identifier?.[0]?.value,
    patient: t.patient?.value,
    writeMode: t.writeMode,
    observations: t.observations.map(project),
  }));
}
