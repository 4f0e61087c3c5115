/**
 * Merging of period-grouped Observations (Reading.writeMode 'merge'), the counterpart of iomt-fhir's
 * CodeValueFhirTemplateProcessor.MergeObservation, as a pure function the delivery worker can call after reading the
 * existing Observation by identifier:
 *
 *   const merged = existing ? mergeObservation(existing, incoming) : incoming;   // then a conditional update
 *
 * - effectivePeriod: the union of both periods.
 * - SampledData (value or component, matched by the first coding of the component code): both streams are laid on
 *   the merged period at their own offsets; a slot the incoming stream fills ('E' = empty) replaces the existing
 *   sample, so the latest reading wins and merging the same incoming Observation twice changes nothing (idempotent).
 * - Any other value type: the incoming value replaces the existing one (iomt-fhir's Quantity rule).
 * - Everything else (id, meta, identifier) comes from the existing resource; status stays as it was unless the
 *   data changed, then 'amended' if it was 'final'.
 */
import type { Observation, ObservationComponent, SampledData } from 'fhir/r4';
import { MAX_SAMPLES } from './fhir-templates.js';

function periodOf(o: Observation): { start: number; end: number } | undefined {
  if (o.effectivePeriod?.start) {
    const start = Date.parse(o.effectivePeriod.start);
    const end = Date.parse(o.effectivePeriod.end ?? o.effectivePeriod.start);
    return Number.isNaN(start) || Number.isNaN(end) ? undefined : { start, end };
  }
  if (o.effectiveDateTime) {
    const t = Date.parse(o.effectiveDateTime);
    return Number.isNaN(t) ? undefined : { start: t, end: t };
  }
  return undefined;
}

/** Lays a stream onto a map time → token (non-'E' only). */
function samples(sd: SampledData, startMs: number): Map<number, string> {
  const out = new Map<number, string>();
  const tokens = (sd.data ?? '').trim().split(/\s+/).filter(Boolean);
  tokens.forEach((tok, i) => {
    if (tok !== 'E') out.set(startMs + i * sd.period, tok);
  });
  return out;
}

function mergeSampled(
  existing: SampledData,
  exStart: number,
  incoming: SampledData,
  inStart: number,
  start: number,
  end: number,
): SampledData {
  if (existing.period !== incoming.period || (existing.dimensions ?? 1) !== 1 || (incoming.dimensions ?? 1) !== 1) {
    // Different sampling: the incoming series is the current definition.
    return incoming;
  }
  const merged = samples(existing, exStart);
  for (const [t, v] of samples(incoming, inStart)) merged.set(t, v);
  const slots = Math.floor((end - start) / incoming.period) + 1;
  if (!(slots > 0 && slots <= MAX_SAMPLES)) return incoming; // a merged span too long to hold: keep the current part
  const data = new Array<string>(slots).fill('E');
  for (const [t, v] of merged) {
    const slot = Math.floor((t - start) / incoming.period);
    if (slot >= 0 && slot < slots) data[slot] = v;
  }
  return { ...incoming, data: data.join(' ') };
}

const compKey = (c: ObservationComponent) => `${c.code.coding?.[0]?.system ?? ''}|${c.code.coding?.[0]?.code ?? c.code.text ?? ''}`;

/** Merges `incoming` (a freshly translated Observation with the same identifier) into `existing`. */
export function mergeObservation(existing: Observation, incoming: Observation): Observation {
  const ep = periodOf(existing);
  const ip = periodOf(incoming);
  if (!ep || !ip) return { ...incoming, id: existing.id, meta: existing.meta };
  const start = Math.min(ep.start, ip.start);
  const end = Math.max(ep.end, ip.end);
  const result: Observation = { ...existing };
  const valueKeys = (o: object) => Object.keys(o).filter((k) => k.startsWith('value'));
  for (const k of valueKeys(result)) delete (result as unknown as Record<string, unknown>)[k];
  if (existing.valueSampledData && incoming.valueSampledData) {
    result.valueSampledData = mergeSampled(existing.valueSampledData, ep.start, incoming.valueSampledData, ip.start, start, end);
  } else {
    const src = valueKeys(incoming).length ? incoming : existing;
    for (const k of valueKeys(src)) (result as unknown as Record<string, unknown>)[k] = (src as unknown as Record<string, unknown>)[k];
  }
  if (incoming.component || existing.component) {
    const comps = new Map<string, ObservationComponent>();
    for (const c of existing.component ?? []) comps.set(compKey(c), c);
    for (const c of incoming.component ?? []) {
      const old = comps.get(compKey(c));
      if (old?.valueSampledData && c.valueSampledData)
        comps.set(compKey(c), {
          ...c,
          valueSampledData: mergeSampled(old.valueSampledData, ep.start, c.valueSampledData, ip.start, start, end),
        });
      else comps.set(compKey(c), c);
    }
    result.component = [...comps.values()];
  }
  delete result.effectiveDateTime;
  result.effectivePeriod = { start: new Date(start).toISOString(), end: new Date(end).toISOString() };
  const data = (o: Observation) =>
    JSON.stringify([
      valueKeys(o)
        .sort()
        .map((k) => (o as unknown as Record<string, unknown>)[k]),
      o.component ?? [],
    ]);
  const changed = data(result) !== data(existing) || start !== ep.start || end !== ep.end;
  if (changed && existing.status === 'final') result.status = 'amended';
  return result;
}
