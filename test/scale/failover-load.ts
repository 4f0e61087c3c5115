/**
 * Load through a Redis failover, for the Sentinel and cluster failover tests: four senders post one reading per
 * request to a gateway while `failover()` kills the master and resolves once a replica is promoted; the run goes on
 * until 40 readings more are acknowledged after the promotion, then waits until the EHR has every one of those and
 * the queue is empty, and answers what was acknowledged, delivered and lost, and when.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import { eventually, postJson, type TestEhr, type TestGateway } from '../helpers/harness.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Readings of one device, reading `i` at `base` + i seconds: each delivered Observation names the reading it came from. */
export function failoverReadings(base: number, device: Record<string, string>) {
  return (i: number) => ({
    ...device,
    timestamp: new Date(base + i * 1000).toISOString(),
    measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 90 + (i % 10), unit: '%' }],
  });
}

/** The readings (by index) the EHR has, and how many Observations (a duplicate would show as more than the set). */
export async function deliveredReadings(ehr: TestEhr, base: number): Promise<{ set: Set<number>; count: number }> {
  const set = new Set<number>();
  let count = 0;
  for (const o of await ehr.search<Observation>('Observation', { _count: '2000' })) {
    count++;
    set.add(Math.round((Date.parse(o.effectiveDateTime ?? '') - base) / 1000));
  }
  return { set, count };
}

export interface FailoverRun {
  acked: Set<number>;
  ackedBeforeKill: number;
  /** Acknowledged after the promotion. */
  ackedAfter: Set<number>;
  /** Refusals by HTTP status (0: no answer). */
  refused: Map<number, number>;
  delivered: { set: Set<number>; count: number };
  /** Acknowledged and not delivered. */
  lost: number[];
  killedAt: number;
  promotedAt: number;
  resumedAt: number;
  drainedAt: number;
}

/**
 * Runs the load through `failover` (readings from `first` on). Any answer but 202 and 503 (or none) fails it, and so
 * does a reading acknowledged after the promotion that is never delivered.
 */
export async function loadThroughFailover(
  gw: TestGateway,
  ehr: TestEhr,
  reading: (i: number) => unknown,
  base: number,
  failover: () => Promise<void>,
  first = 10,
): Promise<FailoverRun> {
  const acked = new Set<number>();
  const ackedAfter = new Set<number>();
  const refused = new Map<number, number>();
  const unexpected: string[] = [];
  let next = first;
  let stop = false;
  let promotedAt = Number.POSITIVE_INFINITY;
  let lastBody = '';
  const sender = async () => {
    while (!stop && !unexpected.length) {
      const i = next++;
      const r = await postJson(`${gw.url}/ingest/measurements`, reading(i)).catch(() => ({ status: 0, body: undefined }));
      if (r.status === 202) {
        acked.add(i);
        if (Date.now() > promotedAt) ackedAfter.add(i);
      } else {
        // Nothing but a retryable refusal (or a connection the gateway dropped) while there is no master.
        refused.set(r.status, (refused.get(r.status) ?? 0) + 1);
        lastBody = JSON.stringify(r.body);
        if (r.status !== 503 && r.status !== 0) unexpected.push(`${r.status}: ${lastBody}`);
        await sleep(100);
      }
    }
  };
  const noSurprise = () => assert.deepEqual(unexpected, [], 'answers other than 202 and 503');
  const senders = [sender(), sender(), sender(), sender()];
  try {
    await eventually(() => acked.size >= 60 || unexpected.length > 0, 30000, 'load before the kill');
    noSurprise();
    const ackedBeforeKill = acked.size;
    const killedAt = Date.now();
    await failover();
    promotedAt = Date.now();
    await eventually(() => ackedAfter.size >= 40 || unexpected.length > 0, 60000, 'readings acknowledged after the promotion').catch(
      (err: Error) => {
        throw new Error(`${err.message} (last refusal: ${lastBody}; queue connection ${gw.gateway.queue!.connectionStatus()})`);
      },
    );
    const resumedAt = Date.now();
    stop = true;
    await Promise.all(senders);
    noSurprise();
    // Delivery resumes: every reading acknowledged after the promotion reaches the EHR (a worker whose blocking
    // connection died with the master and never came back would leave them waiting).
    await eventually(
      async () => {
        const d = await deliveredReadings(ehr, base);
        return [...ackedAfter].every((i) => d.set.has(i));
      },
      60000,
      'the readings acknowledged after the promotion delivered',
    );
    // Whatever the promoted replica had is delivered as well: let the queue drain before counting.
    await eventually(
      async () => {
        const c = await gw.gateway.queue!.bull.getJobCounts();
        return c.waiting + c.active + c.delayed === 0;
      },
      60000,
      'the queue drained',
    );
    const drainedAt = Date.now();
    const delivered = await deliveredReadings(ehr, base);
    const lost = [...acked].filter((i) => !delivered.set.has(i));
    return { acked, ackedBeforeKill, ackedAfter, refused, delivered, lost, killedAt, promotedAt, resumedAt, drainedAt };
  } finally {
    stop = true;
    await Promise.allSettled(senders);
  }
}

/** One line of figures for the test's output. */
export function describeRun(name: string, r: FailoverRun, extra = ''): string {
  const d = r.delivered;
  return (
    `      ${name}: ${r.acked.size} readings acknowledged (${r.ackedBeforeKill} before the kill, ${r.ackedAfter.size} after the promotion), ` +
    `${d.set.size} delivered, ${d.count - d.set.size} duplicated, LOST ${r.lost.length} acknowledged (asynchronous replication); ` +
    `promotion ${r.promotedAt - r.killedAt} ms after the kill, ingest back ${r.resumedAt - r.promotedAt} ms later at most, ` +
    `the queue drained ${r.drainedAt - r.resumedAt} ms after that; refusals during the failover: ${JSON.stringify(Object.fromEntries(r.refused))}${extra}`
  );
}

/** What every failover run must show: nothing acknowledged after the promotion lost, nothing delivered twice. */
export function assertFailoverRun(r: FailoverRun): void {
  assert.deepEqual(
    r.lost.filter((i) => r.ackedAfter.has(i)),
    [],
    'nothing acknowledged after the promotion is lost',
  );
  assert.equal(r.delivered.count, r.delivered.set.size, 'no reading delivered twice');
}
