/**
 * The in-process counters and histograms: one series per label set, whatever the order the labels are given in or
 * whether they are written into the name, and no count lost when the remembered label sets are dropped (their bound).
 */
import { strict as assert } from 'node:assert';
import { Metrics } from '../../src/observability/metrics.js';

describe('metrics series', () => {
  it('counts one series for the same labels in any order, given apart or in the name', async () => {
    const m = new Metrics();
    m.inc('ingest_readings_total', { adapter: 'a', channel: 'http' });
    m.inc('ingest_readings_total', { channel: 'http', adapter: 'a' }, 2);
    m.inc('ingest_readings_total{adapter="a"}', { channel: 'http' });
    m.inc('ingest_readings_total', { adapter: 'b', channel: 'http' });
    assert.equal(m.get('ingest_readings_total', { channel: 'http', adapter: 'a' }), 4);
    assert.equal(m.get('ingest_readings_total', { adapter: 'b', channel: 'http' }), 1);
    const text = await m.render();
    assert.match(text, /^iomt_ingest_readings_total\{adapter="a",channel="http"\} 4$/m);
    assert.equal(text.match(/^iomt_ingest_readings_total\{adapter="a"/gm)?.length, 1);
  });

  it('keeps every count across more label sets than it remembers', () => {
    const m = new Metrics();
    for (let round = 0; round < 2; round++)
      for (let i = 0; i < 12_000; i++) m.inc('ingest_readings_total', { adapter: `a${i}`, channel: 'http' });
    assert.equal(m.get('ingest_readings_total', { adapter: 'a0', channel: 'http' }), 2);
    assert.equal(m.get('ingest_readings_total', { adapter: 'a11999', channel: 'http' }), 2);
  });

  it('records a histogram per label set in any order', () => {
    const m = new Metrics();
    m.observe('ingest_to_ehr_latency_seconds', { destination: 'ehr' }, 0.01);
    m.observe('ingest_to_ehr_latency_seconds', { destination: 'ehr' }, 0.03, 2);
    const h = m.histogram('ingest_to_ehr_latency_seconds', { destination: 'ehr' });
    assert.equal(h.count, 3);
    assert.ok(Math.abs(h.sum - 0.07) < 1e-9);
  });
});
