/**
 * A Redis connection that ioredis ends for good (status `end`, no more retries: what its Sentinel failover detection
 * did when it raced a reconnect) is reopened, so ingest and delivery resume instead of refusing until a restart.
 */
import { strict as assert } from 'node:assert';
import type { Observation } from 'fhir/r4';
import { eventually, postJson, useStack } from '../helpers/harness.js';

const reading = (i: number) => ({
  deviceId: 'OXI-END-1',
  manufacturer: 'Acme Medical',
  model: 'PulseOx 3',
  patientId: 'MRN-END',
  timestamp: new Date(Date.parse('2026-11-23T10:00:00Z') + i * 1000).toISOString(),
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 95, unit: '%' }],
});

describe('Redis connections that end unasked are reopened', function () {
  this.timeout(60000);
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create', RATE_LIMIT_PER_MINUTE: '0' });

  it("the queue's and the gateway's own connection come back, and ingest and delivery resume", async () => {
    assert.equal((await postJson(`${stack.gw.url}/ingest/measurements`, reading(1))).status, 202);
    const queue = stack.gw.gateway.queue!;
    // End them as ioredis does when a connect fails outright: no retry follows on its own.
    queue.redis.disconnect();
    stack.gw.gateway.redis!.disconnect();
    await eventually(() => queue.connectionStatus() === 'end' || queue.reopened > 0, 5000, 'the connection ended');
    // Refused while it is down (nothing acknowledged without Redis), accepted once it is back.
    await eventually(async () => (await postJson(`${stack.gw.url}/ingest/measurements`, reading(2))).status === 202, 20000, 'ingest again');
    assert.ok(queue.reopened >= 1);
    await eventually(
      async () => (await stack.ehr.search<Observation>('Observation', { _count: '50' })).length === 2,
      20000,
      'both readings delivered',
    );
  });
});
