/**
 * A replay of refused input answers within ENQUEUE_TIMEOUT_MS when Redis does not answer, as the channels answer
 * senders within it: 503 with an OperationOutcome and Retry-After, the entry kept for a later replay. A bulk replay
 * stops trying at the first entry Redis did not take in time and reports the rest as not tried. Real gateway, real
 * Redis, paused (CLIENT PAUSE: connected, not answering).
 */
import { strict as assert } from 'node:assert';
import { Redis } from 'ioredis';
import { eventually, useStack } from '../helpers/harness.js';
import { ADMIN, call, reading } from '../devices/wire.js';

describe('a replay of refused input answers within ENQUEUE_TIMEOUT_MS when Redis does not answer', function () {
  this.timeout(60000);
  const stack = useStack({
    ADMIN_API_KEY: ADMIN,
    UNKNOWN_PATIENT_POLICY: 'create',
    UNKNOWN_DEVICE_POLICY: 'accept',
    ENQUEUE_TIMEOUT_MS: '500',
  });
  let admin: Redis;
  before(() => {
    admin = new Redis(stack.redis.url);
  });
  after(() => admin?.disconnect());

  /** Keeps one refusal (a reading without measurements) and returns its id. */
  const refuse = async (deviceId: string): Promise<string> => {
    const r = await call(stack.gw.url, 'POST', '/ingest/measurements', ADMIN, reading(deviceId, { measurements: [] }));
    assert.equal(r.status, 422);
    const id = r.headers.get('x-refused-id');
    assert.ok(id, 'the refusal was kept');
    return id;
  };

  /** Pauses Redis for `ms`: every command (ALL), or writes only (WRITE: reads are answered). */
  const pause = (ms: number, mode: 'ALL' | 'WRITE') => admin.call('CLIENT', 'PAUSE', String(ms), mode);
  const unpause = () => admin.call('CLIENT', 'UNPAUSE');

  it('one replay: 503 within the bound, and the entry is kept', async () => {
    const id = await refuse('REPLAY-DL-1');
    // Every client waits out a pause of ALL commands, the one that could lift it too: it ends on its own.
    await pause(3000, 'ALL');
    const t0 = Date.now();
    const r = await call(stack.gw.url, 'POST', `/api/refusals/${id}/replay`, ADMIN);
    const took = Date.now() - t0;
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.equal(r.body.resourceType, 'OperationOutcome');
    assert.equal(r.body.issue[0].code, 'transient');
    assert.ok(r.headers.get('retry-after'), 'Retry-After');
    // Bounded by the setting (500 ms), not by the pause (3 s); generous for a loaded machine.
    assert.ok(took < 2500, `answered after ${took} ms`);

    assert.equal((await call(stack.gw.url, 'GET', `/api/refusals/${id}`, ADMIN)).status, 200, 'the entry is kept');
    const again = await call(stack.gw.url, 'POST', `/api/refusals/${id}/replay`, ADMIN);
    assert.equal(again.status, 422, 'replayed once Redis answers: refused again, as it was');
    assert.equal(again.body.accepted, false);
  });

  it('a bulk replay stops at the first entry Redis did not settle in time and reports the rest as not tried', async () => {
    // Three readings refused because their devices were registered but not yet active; activated, they would be taken.
    const devices = ['REPLAY-DL-2', 'REPLAY-DL-3', 'REPLAY-DL-4'];
    for (const id of devices) {
      assert.equal((await call(stack.gw.url, 'POST', '/api/devices', ADMIN, { id, adapter: 'measurements' })).status, 201);
      const r = await call(stack.gw.url, 'POST', '/ingest/measurements', ADMIN, reading(id));
      assert.equal(r.status, 403, JSON.stringify(r.body));
      assert.equal((await call(stack.gw.url, 'POST', `/api/devices/${id}/activate`, ADMIN)).status, 200);
    }
    const filter = { reason: 'only an active device' };
    // Reads are answered (the list, each entry, the device registry), writes wait: the first replay cannot be queued.
    await pause(5000, 'WRITE');
    const t0 = Date.now();
    const r = await call(stack.gw.url, 'POST', '/api/refusals/replay', ADMIN, filter);
    const took = Date.now() - t0;
    await unpause();
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(took < 2500, `answered after ${took} ms`);
    const results = r.body.results as { id: string; result: string; status?: number; error?: string }[];
    assert.equal(r.body.matched, 3);
    assert.deepEqual(
      results.map((x) => x.result),
      ['unavailable', 'not-tried', 'not-tried'],
      JSON.stringify(results),
    );
    assert.equal(r.body.accepted, 0);
    for (const x of results) assert.equal(x.status, 503);
    assert.match(results[1].error ?? '', /not tried/);

    await eventually(
      async () => {
        const again = await call(stack.gw.url, 'POST', '/api/refusals/replay', ADMIN, filter);
        return again.status === 200 && again.body.matched === 0;
      },
      15000,
      'every entry replayed and removed once Redis answers',
    );
    await eventually(
      async () => (await stack.ehr.search('Observation', {})).length === devices.length,
      15000,
      'the three readings in the EHR',
    );
  });
});
