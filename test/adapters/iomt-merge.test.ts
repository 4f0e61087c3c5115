/** Merging period Observations (writeMode 'merge'): samples at their offsets, latest wins, idempotent. */
import { strict as assert } from 'node:assert';
import path from 'node:path';
import { createMappingAdapter, mergeObservation } from '../../src/adapters/mapping/index.js';
import { ctx, fixturesDir, message, readJson } from './helpers.js';

describe('merging period observations', () => {
  const adapter = createMappingAdapter({
    id: 'v',
    description: 'v',
    ...readJson<{ deviceMapping: unknown; fhirMapping: unknown }>(path.join(fixturesDir, 'value-types/_mapping.json')),
  });
  const obs = (readings: { type: string; time: string; v: number; corr?: string }[]) =>
    adapter.translate(message({ body: readings.map((r) => ({ device: 'S-1', patient: 'P-1', ...r })) }), ctx)[0].observations[0];

  it('merges two messages of the same hour into one stream; merging again changes nothing', () => {
    const first = {
      ...obs([
        { type: 'series', time: '2026-11-23T10:00:00Z', v: 1 },
        { type: 'series', time: '2026-11-23T10:20:00Z', v: 3 },
      ]),
      id: 'srv-1',
      meta: { versionId: '1' },
    };
    const second = obs([
      { type: 'series', time: '2026-11-23T10:20:30Z', v: 4 },
      { type: 'series', time: '2026-11-23T10:50:00Z', v: 6 },
    ]);
    assert.deepEqual(first.identifier, second.identifier);
    const merged = mergeObservation(first, second);
    assert.equal(merged.valueSampledData?.data, '1 E 4 E E 6');
    assert.equal(merged.id, 'srv-1');
    assert.equal(merged.status, 'amended');
    assert.deepEqual(merged.effectivePeriod, first.effectivePeriod);
    assert.deepEqual(mergeObservation(merged, second), merged);
  });

  it('widens the period of a correlation group and keeps each sample at its time', () => {
    const a = obs([
      { type: 'strip', corr: 'c-1', time: '2026-11-23T09:00:00.020Z', v: 2 },
      { type: 'strip', corr: 'c-1', time: '2026-11-23T09:00:00.030Z', v: 3 },
    ]);
    const b = obs([{ type: 'strip', corr: 'c-1', time: '2026-11-23T09:00:00.000Z', v: 0 }]);
    const merged = mergeObservation(a, b);
    assert.deepEqual(merged.effectivePeriod, { start: '2026-11-23T09:00:00.000Z', end: '2026-11-23T09:00:00.030Z' });
    assert.equal(merged.valueSampledData?.data, '0 E 2 3');
    assert.deepEqual(mergeObservation(b, a).valueSampledData?.data, '0 E 2 3');
  });

  it('replaces a Quantity (iomt-fhir rule) and leaves an unchanged Observation as it was', () => {
    const a = { ...obs([{ type: 'hourly-qty', time: '2026-11-23T08:10:00Z', v: 100 }]), status: 'final' as const };
    const b = obs([{ type: 'hourly-qty', time: '2026-11-23T08:40:00Z', v: 120 }]);
    assert.equal(mergeObservation(a, b).valueQuantity?.value, 120);
    assert.equal(mergeObservation(a, a).status, 'final');
  });
});
