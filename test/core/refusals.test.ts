/**
 * The one refusal store, through a real gateway (real Redis, sandbox EHR over HTTP): refusals of every channel in one
 * API with search, replay through the original channel (one and in bulk), the earlier paths as deprecated aliases; and
 * the two-phase device guard: a message that validation refuses registers no device and moves no "last seen".
 */
import { strict as assert } from 'node:assert';
import IORedis from 'ioredis';
import { createHash } from 'node:crypto';
import { GatewayError } from '../../src/core/errors.js';
import { KEYS } from '../../src/core/keys.js';
import { type NewRefusal, RefusalStore } from '../../src/pipeline/refusals.js';
import { startEhr, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ADMIN, call, reading, startDmGateway } from '../devices/wire.js';
import { pcdMessage } from '../hl7v2/helpers.js';

describe('refusals: one store and one API for every channel', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('a message refused by validation registers no device and moves no "last seen" (the guard commits only valid data)', async () => {
    const bad = reading('TWO-PHASE-1', { measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: 'kg' }] });
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, bad);
    assert.equal(r.status, 422);
    assert.equal((await call(gw.url, 'GET', '/api/devices/TWO-PHASE-1', ADMIN)).status, 404, 'not auto-registered');
    const ok = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('TWO-PHASE-1'));
    assert.equal(ok.status, 202);
    const d = await call(gw.url, 'GET', '/api/devices/TWO-PHASE-1', ADMIN);
    assert.equal(d.body.state, 'active');
    assert.equal(d.body.telemetry.messages, 1, 'only the accepted message is counted');
  });

  it('lists HTTP and HL7v2 refusals together, searchable by channel, device id, control id and reason', async () => {
    const http = await call(
      gw.url,
      'POST',
      '/ingest/measurements',
      ADMIN,
      reading('SEARCH-1', { measurements: [{ code: 'NOPE', value: 1, unit: '%' }] }),
    );
    assert.equal(http.status, 422);
    const httpId = http.headers.get('x-refused-id');
    assert.ok(httpId);
    const hl7 = await fetch(`${gw.url}/hl7v2`, {
      method: 'POST',
      headers: { 'content-type': 'x-application/hl7-v2+er7', authorization: `Bearer ${ADMIN}` },
      body: pcdMessage('SEARCH-HL7-1', { pid: false }),
    });
    assert.equal(hl7.headers.get('x-hl7-ack-code'), 'AE');

    const all = await call(gw.url, 'GET', '/api/refusals', ADMIN);
    assert.equal(all.status, 200);
    assert.ok(all.body.items.some((i: { id: string }) => i.id === httpId));
    assert.ok(
      all.body.items.every((i: Record<string, unknown>) => i.body === undefined && i.raw === undefined),
      'lists carry no payloads',
    );

    const byDevice = await call(gw.url, 'GET', '/api/refusals?deviceId=SEARCH-1', ADMIN);
    assert.deepEqual(
      byDevice.body.items.map((i: { id: string }) => i.id),
      [httpId],
    );
    const byControl = await call(gw.url, 'GET', '/api/refusals?controlId=SEARCH-HL7-1', ADMIN);
    assert.equal(byControl.body.total, 1);
    assert.equal(byControl.body.items[0].format, 'hl7v2');
    assert.equal(byControl.body.items[0].hl7.ackCode, 'AE');
    assert.ok(byControl.body.items[0].outcome.issue.length > 0, 'the HL7 ERR is also an OperationOutcome');
    const byReason = await call(gw.url, 'GET', '/api/refusals?reason=nope&channel=http', ADMIN);
    assert.ok(byReason.body.items.some((i: { id: string }) => i.id === httpId));
    assert.equal((await call(gw.url, 'GET', '/api/refusals?limit=ten', ADMIN)).status, 400);

    const one = await call(gw.url, 'GET', `/api/refusals/${byControl.body.items[0].id}`, ADMIN);
    assert.match(one.body.raw, /^MSH\|/);
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${httpId}`, ADMIN)).body.body.deviceId, 'SEARCH-1');
  });

  it('replays through the original channel as the original sender: refused again is kept with a count, fixed is delivered and removed', async () => {
    // Refused for good: the device is suspended.
    assert.equal(
      (await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'REPLAY-1', adapter: 'measurements', type: 'pulse-oximeter' })).status,
      201,
    );
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('REPLAY-1'));
    assert.equal(r.status, 403);
    const id = r.headers.get('x-refused-id');
    assert.ok(id, 'a refusal that is not retryable is kept');

    const again = await call(gw.url, 'POST', `/api/refusals/${id}/replay`, ADMIN);
    assert.equal(again.status, 422);
    assert.equal(again.body.accepted, false);
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${id}`, ADMIN)).body.replays, 1);

    assert.equal((await call(gw.url, 'POST', '/api/devices/REPLAY-1/activate', ADMIN)).status, 200);
    const done = await call(gw.url, 'POST', `/api/refusals/${id}/replay`, ADMIN);
    assert.equal(done.status, 202, JSON.stringify(done.body));
    assert.equal(done.body.accepted, true);
    assert.equal(done.body.detail.readings, 1);
    assert.equal((await call(gw.url, 'GET', `/api/refusals/${id}`, ADMIN)).status, 404, 'removed once accepted');
  });

  it('replays a filtered selection in bulk, with a result per entry', async () => {
    assert.equal(
      (await call(gw.url, 'POST', '/api/devices', ADMIN, { id: 'BULK-1', adapter: 'measurements', type: 'pulse-oximeter' })).status,
      201,
    );
    for (const minute of [1, 2, 3])
      assert.equal((await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('BULK-1', {}, minute))).status, 403);
    assert.equal((await call(gw.url, 'POST', '/api/devices/BULK-1/activate', ADMIN)).status, 200);
    const bulk = await call(gw.url, 'POST', '/api/refusals/replay', ADMIN, { deviceId: 'BULK-1', channel: 'http' });
    assert.equal(bulk.status, 200);
    assert.equal(bulk.body.matched, 3);
    assert.equal(bulk.body.accepted, 3);
    assert.equal(bulk.body.results.length, 3);
    assert.equal((await call(gw.url, 'GET', '/api/refusals?deviceId=BULK-1', ADMIN)).body.total, 0);
  });

  it('answers the earlier paths as deprecated aliases of the one store, and keeps deletion for admins', async () => {
    const r = await call(gw.url, 'POST', '/ingest/measurements', ADMIN, reading('ALIAS-1', { measurements: [] }));
    assert.equal(r.status, 422);
    const id = r.headers.get('x-refused-id');
    const list = await call(gw.url, 'GET', '/api/refused', ADMIN);
    assert.equal(list.headers.get('deprecation'), 'true');
    assert.match(list.headers.get('link') ?? '', /\/api\/refusals/);
    assert.ok(list.body.items.some((i: { id: string }) => i.id === id));
    assert.equal((await call(gw.url, 'GET', `/api/refused/${id}`, ADMIN)).body.body.deviceId, 'ALIAS-1');
    const hl7 = await call(gw.url, 'GET', '/api/rejected', ADMIN);
    assert.equal(hl7.status, 200);
    assert.ok(hl7.body.items.every((i: { controlId?: string }) => typeof i.controlId === 'string'));
    assert.equal((await call(gw.url, 'GET', `/api/rejected/${id}`, ADMIN)).status, 404, 'an HTTP refusal is not an HL7 message');

    const operator = await call(gw.url, 'POST', '/api/operators/credentials', ADMIN, { name: 'ops-1' });
    const opKey = operator.body.key as string;
    assert.ok(opKey, JSON.stringify(operator.body));
    assert.equal((await call(gw.url, 'GET', '/api/refusals', opKey)).status, 200);
    assert.equal((await call(gw.url, 'DELETE', `/api/refusals/${id}`, opKey)).status, 403, 'operators may not delete');
    assert.equal((await call(gw.url, 'DELETE', `/api/refusals/${id}`, ADMIN)).status, 204);
  });
});

describe('refusals kept by an earlier version', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway | undefined;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  it('are moved into the one store at start-up, once, and answer through the new API and the aliases', async () => {
    // What the three stores of the previous version wrote (the layout of src/pipeline/refused.ts, hl7v2/rejected.ts
    // and the MQTT list at 44817bd).
    const client = new IORedis.default(redis.url);
    const oo = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'unknown code NOPE' }] };
    const http = {
      id: 'old-http-1',
      adapterId: 'measurements',
      channel: 'http',
      receivedAt: '2026-11-20T10:00:00Z',
      status: 422,
      outcome: oo,
      body: reading('OLD-1'),
    };
    const hl7 = {
      id: 'old-hl7-1',
      receivedAt: '2026-11-20T11:00:00Z',
      channel: 'mllp',
      sender: 'GW-TEST^0A1B2C3D4E5F6071^EUI-64|WARD-7',
      controlId: 'OLD-HL7-1',
      messageType: 'ORU^R01',
      ackCode: 'AE',
      reason: 'PID segment is missing',
      errors: [{ code: 100, text: 'PID segment is missing', location: { segment: 'PID', sequence: 1 } }],
      raw: pcdMessage('OLD-HL7-1', { pid: false }),
      charset: 'UNICODE UTF-8',
    };
    const mqtt = {
      topic: 'devices/OLD-2/m',
      adapter: 'measurements',
      deviceId: 'OLD-2',
      receivedAt: '2026-11-20T12:00:00Z',
      status: 400,
      outcome: oo,
      payload: '{not json',
    };
    await client
      .multi()
      .set('gw:refused:old-http-1', JSON.stringify(http))
      .zadd('gw:refused:index', Date.parse(http.receivedAt), 'old-http-1')
      .set('gw:hl7:rejected:e:old-hl7-1', JSON.stringify(hl7))
      .zadd('gw:hl7:rejected', Date.parse(hl7.receivedAt), 'old-hl7-1')
      .lpush('gw:mqtt:rejected', JSON.stringify(mqtt))
      .exec();

    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' });
    const all = await call(gw.url, 'GET', '/api/refusals', ADMIN);
    assert.equal(all.body.total, 3);
    assert.deepEqual(
      all.body.items.map((i: { channel: string; format: string }) => `${i.channel}/${i.format}`),
      ['mqtt/text', 'mllp/hl7v2', 'http/json'],
    );
    assert.equal(
      await client.exists('gw:refused:index', 'gw:hl7:rejected', 'gw:mqtt:rejected', 'gw:refused:old-http-1'),
      0,
      'the old stores are emptied',
    );

    const oldHl7 = (await call(gw.url, 'GET', '/api/rejected', ADMIN)).body.items[0];
    assert.equal(oldHl7.controlId, 'OLD-HL7-1');
    assert.match((await call(gw.url, 'GET', `/api/rejected/${oldHl7.id}`, ADMIN)).body.raw, /^MSH\|/);
    const oldHttp = (await call(gw.url, 'GET', '/api/refused', ADMIN)).body.items[0];
    assert.equal((await call(gw.url, 'GET', `/api/refused/${oldHttp.id}`, ADMIN)).body.body.deviceId, 'OLD-1');
    const replay = await call(gw.url, 'POST', `/api/refusals/${oldHttp.id}/replay`, ADMIN);
    assert.equal(replay.status, 202, 'an old HTTP refusal replays through the HTTP channel');
    const mq = (await call(gw.url, 'GET', '/api/mqtt/rejected', ADMIN)).body;
    assert.deepEqual(
      mq.map((m: { topic: string; payload: string }) => [m.topic, m.payload]),
      [['devices/OLD-2/m', '{not json']],
    );

    // A restart finds nothing more to move.
    await gw.stop();
    gw = await startDmGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, UNKNOWN_DEVICE_POLICY: 'accept' });
    assert.equal((await call(gw.url, 'GET', '/api/refusals', ADMIN)).body.total, 2);
    client.disconnect();
  });
});

describe('refusals: every payload capped in bytes, the store capped in bytes (oldest dropped first)', () => {
  let redis: TestRedis;
  let client: InstanceType<typeof IORedis.default>;
  before(async () => {
    redis = await startRedis();
    client = new IORedis.default(redis.url);
  });
  after(async () => {
    client?.disconnect();
    await redis?.stop();
  });
  beforeEach(() => client.flushall());

  const oo = {
    resourceType: 'OperationOutcome' as const,
    issue: [{ severity: 'error' as const, code: 'invalid' as const, diagnostics: 'x' }],
  };
  const entry = (over: Partial<NewRefusal>, at = Date.now()): NewRefusal => ({
    channel: 'mqtt',
    format: 'text',
    receivedAt: new Date(at).toISOString(),
    status: 422,
    reason: 'refused',
    outcome: oo,
    ...over,
  });

  it('keeps the head of a payload over REFUSALS_MAX_PAYLOAD_BYTES with its size and SHA-256, and refuses to replay it', async () => {
    const store = new RefusalStore(client, { maxPayloadBytes: 4096 });
    let replayed = 0;
    store.replayWith('mqtt', async () => {
      replayed++;
      return { accepted: true, result: 'accepted' };
    });
    const raw = `é${'~'.repeat(1_000_000)}`;
    const id = await store.add(entry({ raw }));
    const kept = await store.get(id);
    assert.ok(kept?.raw && Buffer.byteLength(kept.raw) <= 4096 && kept.raw.startsWith('é~~~'), 'the head is kept, cut on a character');
    assert.deepEqual(kept.payloadInfo, {
      bytes: Buffer.byteLength(raw),
      sha256: createHash('sha256').update(raw).digest('hex'),
      truncated: true,
      keptBytes: Buffer.byteLength(kept.raw),
    });
    assert.ok((await client.strlen(KEYS.refusal(id))) < 8192, 'what Redis holds is the head, not the megabyte');
    await assert.rejects(store.replay(id), (e: unknown) => {
      assert.ok(e instanceof GatewayError && !e.retryable && e.status === 422);
      assert.equal(e.outcome.issue[0].code, 'incomplete');
      assert.match(e.message, /truncated \(\d+ of 1000002 bytes.*cannot be replayed/);
      return true;
    });
    assert.equal(replayed, 0, 'an incomplete payload never reaches the channel');
    assert.ok(await store.get(id), 'and stays for inspection');

    // A small payload is kept whole (and replayable), with its size and hash too.
    const small = await store.add(entry({ raw: 'hello' }));
    assert.deepEqual((await store.get(small))?.payloadInfo, {
      bytes: 5,
      sha256: createHash('sha256').update('hello').digest('hex'),
      truncated: false,
      keptBytes: 5,
    });
    assert.equal((await store.replay(small)).result.accepted, true);
  });

  it('a JSON body or a binary payload over the cap is kept as its head too', async () => {
    const store = new RefusalStore(client, { maxPayloadBytes: 2048 });
    const body = { deviceId: 'D-1', readings: Array.from({ length: 2000 }, (_, i) => ({ code: 'X', value: i })) };
    const j = await store.get(await store.add(entry({ channel: 'http', format: 'json', body })));
    assert.equal(j?.body, undefined);
    assert.ok(j?.raw?.startsWith('{"deviceId":"D-1","readings":[{'));
    assert.equal(j?.payloadInfo?.bytes, Buffer.byteLength(JSON.stringify(body)));
    assert.equal(j?.payloadInfo?.truncated, true);
    const bin = Buffer.alloc(10_000, 0xff);
    const b = await store.get(await store.add(entry({ rawBase64: bin.toString('base64') })));
    assert.equal(Buffer.from(b?.rawBase64 ?? '', 'base64').length, 2048);
    assert.equal(b?.payloadInfo?.sha256, createHash('sha256').update(bin).digest('hex'));
  });

  it('holds at most REFUSALS_MAX_BYTES in all, dropping the oldest first, and counts deletes and updates', async () => {
    const store = new RefusalStore(client, { maxPayloadBytes: 50_000, maxBytes: 200_000 });
    const t0 = Date.parse('2026-11-20T10:00:00Z');
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await store.add(entry({ raw: `${i}:${'x'.repeat(40_000)}` }, t0 + i * 1000)));
    const { entries, bytes } = await store.usage();
    assert.ok(bytes <= 200_000, `${bytes} bytes held`);
    assert.ok(entries >= 4 && entries < 20, `${entries} entries held`);
    const { items } = await store.list({}, 0, 100);
    assert.deepEqual(
      items.map((i) => i.id),
      ids.slice(-entries).reverse(),
      'the newest are kept, the oldest dropped',
    );
    const sizes = await Promise.all(items.map((i) => client.strlen(KEYS.refusal(i.id))));
    assert.equal(
      bytes,
      sizes.reduce((a, b) => a + b, 0),
      'the total is the sum of the entries',
    );

    await store.delete(items[0].id);
    const e = await store.get(items[1].id);
    await store.update({ ...(e as NonNullable<typeof e>), reason: 'a much longer reason '.repeat(50) });
    const after = await store.usage();
    const left = (await store.list({}, 0, 100)).items;
    const sum = (await Promise.all(left.map((i) => client.strlen(KEYS.refusal(i.id))))).reduce((a, b) => a + b, 0);
    assert.equal(after.bytes, sum);
    assert.equal(after.entries, entries - 1);
  });

  it('sizes entries written before it counted bytes, at start-up, and applies the budget to them', async () => {
    for (let i = 0; i < 10; i++) {
      const id = `old-${i}`;
      await client
        .multi()
        .set(KEYS.refusal(id), JSON.stringify({ id, ...entry({ raw: 'y'.repeat(30_000) }) }))
        .zadd(KEYS.refusals, i, id)
        .exec();
    }
    const store = new RefusalStore(client, { maxPayloadBytes: 40_000, maxBytes: 100_000 });
    await store.reconcile();
    const { entries, bytes } = await store.usage();
    assert.equal(entries, 3);
    assert.ok(bytes <= 100_000 && bytes > 90_000, String(bytes));
    assert.deepEqual(
      (await store.list()).items.map((i) => i.id),
      ['old-9', 'old-8', 'old-7'],
    );
  });
});
