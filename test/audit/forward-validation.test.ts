/**
 * Forwarded AuditEvents are validated like every resource the gateway queues: a malformed one stays in the gateway's
 * own trail and is never sent to the EHR. Real Redis for the trail; the queue records what it is given.
 */
import { strict as assert } from 'node:assert';
import { Writable } from 'node:stream';
import IORedis, { type Redis } from 'ioredis';
import { AuditTrail } from '../../src/audit/store.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { DeliveryJob } from '../../src/queue/queue.js';
import { startRedis, type TestRedis } from '../helpers/harness.js';

describe('audit trail: forwarded events are validated before they are queued', () => {
  let server: TestRedis;
  let redis: Redis;
  before(async () => {
    server = await startRedis();
    redis = new IORedis.default(server.url);
  });
  after(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  it('queues a valid AuditEvent and keeps an invalid one out of the queue, logged and counted', async () => {
    const queued: DeliveryJob[] = [];
    const logs: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        logs.push(chunk.toString());
        cb();
      },
    });
    const metrics = new Metrics();
    const trail = new AuditTrail(
      redis,
      { deviceSystem: 'urn:test:device', maxEvents: 100, forward: true },
      { enqueue: async (jobs) => (queued.push(...jobs), jobs.map(() => 'j')) },
      createLogger('info', sink),
      metrics,
    );

    await trail.record({ kind: 'device-registered', entities: [{ kind: 'Device', id: 'AUD-1' }] });
    assert.equal(queued.length, 1);
    assert.equal(queued[0].translations[0].auditEvents?.[0].resourceType, 'AuditEvent');

    // An identifier system with a space is not a FHIR uri: the event is kept here but not forwarded.
    const bad = await trail.record({ kind: 'device-registered', entities: [{ kind: 'Device', id: 'AUD-2', system: 'not a uri' }] });
    assert.equal(queued.length, 1, 'the invalid event was not queued');
    assert.ok(
      (await trail.query({ limit: 10 })).some((e) => e.id === bad.id),
      'it is in the gateway trail',
    );
    assert.ok(logs.some((l) => /not a valid FHIR AuditEvent/.test(l)));
    assert.match(await metrics.render(), /audit_forward_failures_total\S* 1/);
  });
});
