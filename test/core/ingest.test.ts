/**
 * HTTP ingest end to end: real Redis, the real gateway, the real sandbox EHR over HTTP.
 */
import { strict as assert } from 'node:assert';
import request from 'supertest';
import type { Device, Observation, Patient } from 'fhir/r4';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { connectRedis } from '../../src/queue/queue.js';
import { eventually, postJson, startEhr, startGateway, startRedis, useStack } from '../helpers/harness.js';

const LOINC = 'http://loinc.org';
const MDC = 'urn:iso:std:iso:11073:10101';
const UCUM = 'http://unitsofmeasure.org';

const oximeter = (over: Record<string, unknown> = {}) => ({
  deviceId: 'OXI-1001',
  manufacturer: 'Acme Medical',
  model: 'PulseOx 3',
  patientId: 'MRN-42',
  timestamp: '2026-11-23T10:00:00Z',
  measurements: [
    { code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' },
    { code: 'MDC_PULS_OXIM_PULS_RATE', value: 72, unit: 'bpm' },
  ],
  ...over,
});

const bpCuff = {
  deviceId: 'BP-77',
  manufacturer: 'Acme Medical',
  model: 'Cuff 2',
  patientId: 'MRN-42',
  timestamp: '2026-11-23T10:05:00+01:00',
  measurements: [
    { code: 'MDC_PRESS_BLD_NONINV_SYS', value: 128, unit: 'mmHg' },
    { code: 'MDC_PRESS_BLD_NONINV_DIA', value: 84, unit: 'mm[Hg]' },
    { code: 'MDC_PRESS_BLD_NONINV_MEAN', value: 99, unit: 'mmHg' },
    { code: 'MDC_PULS_RATE_NON_INV', value: 66, unit: '/min' },
  ],
};

const coding = (o: { code?: { coding?: { system?: string; code?: string }[] } }, system: string) =>
  o.code?.coding?.find((c) => c.system === system)?.code;

describe('HTTP ingest to the EHR (end to end)', function () {
  const stack = useStack({ UNKNOWN_PATIENT_POLICY: 'create', INGEST_MAX_BODY_BYTES: '4096' });

  async function queued(): Promise<number> {
    const c = await stack.gw.gateway.queue!.bull.getJobCounts();
    return c.waiting + c.active + c.delayed + c.completed + c.failed;
  }

  it('delivers an oximeter reading as correctly coded Observations linked to a Device and the Patient', async () => {
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, oximeter());
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.jobIds.length, 1);
    assert.equal(r.body.observations, 2);
    const obs = await eventually(
      async () => {
        const o = await stack.ehr.search<Observation>('Observation', { _count: '50' });
        return o.length === 2 ? o : undefined;
      },
      20000,
      'two observations in the EHR',
    );
    const [devices, patients] = [await stack.ehr.search<Device>('Device', {}), await stack.ehr.search<Patient>('Patient', {})];
    assert.equal(devices.length, 1);
    assert.equal(devices[0].identifier?.[0]?.value, 'OXI-1001');
    assert.equal(devices[0].manufacturer, 'Acme Medical');
    assert.equal(devices[0].modelNumber, 'PulseOx 3');
    assert.equal(patients.length, 1);
    assert.equal(patients[0].identifier?.[0]?.value, 'MRN-42');

    const spo2 = obs.find((o) => coding(o, LOINC) === '2708-6');
    const hr = obs.find((o) => coding(o, LOINC) === '8867-4');
    assert.ok(spo2 && hr, 'SpO2 (2708-6) and heart rate (8867-4)');
    assert.equal(coding(spo2, MDC), '150456');
    assert.equal(coding(hr, MDC), '149530');
    for (const o of [spo2, hr]) {
      assert.equal(o.status, 'final');
      assert.equal(o.category?.[0]?.coding?.[0]?.code, 'vital-signs');
      assert.equal(o.category?.[0]?.coding?.[0]?.system, 'http://terminology.hl7.org/CodeSystem/observation-category');
      assert.equal(o.effectiveDateTime, '2026-11-23T10:00:00Z');
      assert.equal(o.subject?.reference, `Patient/${patients[0].id}`);
      assert.equal(o.device?.reference, `Device/${devices[0].id}`);
      assert.equal(o.identifier?.[0]?.system, 'urn:ietf:rfc:3986');
      assert.match(o.identifier?.[0]?.value ?? '', /^urn:uuid:[0-9a-f-]{36}$/);
    }
    assert.deepEqual(spo2.valueQuantity, { value: 97, unit: '%', system: UCUM, code: '%' });
    assert.equal(hr.valueQuantity?.code, '/min');
    assert.equal(hr.valueQuantity?.system, UCUM);
  });

  it('delivers a blood-pressure reading as one 85354-9 panel with systolic, diastolic and mean components, plus pulse', async () => {
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, bpCuff);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const obs = await eventually(
      async () => {
        const o = await stack.ehr.search<Observation>('Observation', {});
        return o.length === 2 ? o : undefined;
      },
      20000,
      'panel + pulse',
    );
    const panel = obs.find((o) => coding(o, LOINC) === '85354-9');
    assert.ok(panel);
    assert.equal(coding(panel, MDC), '150020');
    assert.equal(panel.valueQuantity, undefined);
    const comp = (loinc: string) => panel.component?.find((c) => c.code.coding?.some((k) => k.system === LOINC && k.code === loinc));
    assert.deepEqual(comp('8480-6')?.valueQuantity, { value: 128, unit: 'mmHg', system: UCUM, code: 'mm[Hg]' });
    assert.equal(comp('8480-6')?.code.coding?.find((c) => c.system === MDC)?.code, '150021');
    assert.equal(comp('8462-4')?.valueQuantity?.value, 84);
    assert.equal(comp('8462-4')?.code.coding?.find((c) => c.system === MDC)?.code, '150022');
    assert.equal(comp('8478-0')?.valueQuantity?.value, 99);
    assert.equal(comp('8478-0')?.code.coding?.find((c) => c.system === MDC)?.code, '150023');
    const pulse = obs.find((o) => coding(o, LOINC) === '8867-4');
    assert.equal(coding(pulse!, MDC), '149546');
    assert.equal(panel.effectiveDateTime, '2026-11-23T10:05:00+01:00');
  });

  it('yields one Observation when the same reading is posted twice (and twice concurrently)', async () => {
    const body = oximeter({ deviceId: 'OXI-DUP', measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 95, unit: '%' }] });
    const [a, b] = await Promise.all([
      postJson(`${stack.gw.url}/ingest/measurements`, body),
      postJson(`${stack.gw.url}/ingest/measurements`, body),
    ]);
    const c = await postJson(`${stack.gw.url}/ingest/measurements`, body);
    assert.equal(a.status, 202);
    assert.equal(b.status, 202);
    assert.equal(c.status, 202);
    assert.equal(a.body.jobIds[0], c.body.jobIds[0], 'the job id is derived from the content');
    await eventually(async () => (await stack.ehr.search('Observation', {})).length === 1, 20000, 'one observation');
    // Settle: nothing else in flight may add a second copy.
    await eventually(async () => {
      const counts = await stack.gw.gateway.queue!.bull.getJobCounts();
      return counts.active + counts.waiting + counts.delayed === 0;
    });
    assert.equal((await stack.ehr.search('Observation', {})).length, 1);
    assert.equal((await stack.ehr.search('Device', {})).length, 1);
  });

  it('accepts an array of readings from several devices, in one job', async () => {
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, [oximeter({ deviceId: 'A-1' }), oximeter({ deviceId: 'A-2' })]);
    assert.equal(r.status, 202);
    assert.equal(r.body.jobIds.length, 1);
    assert.equal(r.body.readings, 2);
    await eventually(async () => (await stack.ehr.search('Observation', {})).length === 4, 20000, 'four observations');
    assert.equal((await stack.ehr.search('Device', {})).length, 2);
    assert.equal((await stack.ehr.search('Patient', {})).length, 1, 'the shared patient is created once');
  });

  describe('refusals: a 4xx OperationOutcome and nothing queued', () => {
    const cases: {
      name: string;
      body: unknown;
      raw?: string;
      contentType?: string;
      status: number;
      diagnostics: RegExp;
      expression?: RegExp;
    }[] = [
      { name: 'malformed JSON', body: undefined, raw: '{"deviceId": "X", ', status: 400, diagnostics: /not well-formed JSON/ },
      { name: 'not JSON', body: undefined, raw: 'deviceId=X', contentType: 'text/plain', status: 415, diagnostics: /must be JSON/ },
      {
        name: 'unknown code',
        body: oximeter({ measurements: [{ code: 'MDC_NOT_A_CODE', value: 1, unit: '%' }] }),
        status: 422,
        diagnostics: /unknown code 'MDC_NOT_A_CODE'/,
        expression: /measurements\[0\]\.code/,
      },
      {
        name: 'unknown LOINC code',
        body: oximeter({ measurements: [{ code: { system: 'http://loinc.org', code: '0000-0' }, value: 1, unit: '%' }] }),
        status: 422,
        diagnostics: /unknown code 'http:\/\/loinc.org\|0000-0'/,
      },
      {
        name: 'missing timestamp',
        body: oximeter({ timestamp: undefined }),
        status: 422,
        diagnostics: /timestamp is required/,
        expression: /timestamp/,
      },
      {
        name: 'timestamp without a time zone',
        body: oximeter({ timestamp: '2026-11-23T10:00:00' }),
        status: 422,
        diagnostics: /not an ISO 8601 date-time with a time zone/,
      },
      {
        name: 'wrong unit for the profile (SpO2 in kg)',
        body: oximeter({ measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: 'kg' }] }),
        status: 422,
        diagnostics: /unit 'kg' is not allowed; the profile requires '%'/,
      },
      {
        name: 'unknown unit',
        body: oximeter({ measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: 'furlongs' }] }),
        status: 422,
        diagnostics: /unknown unit 'furlongs'/,
      },
      {
        name: 'value not a number',
        body: oximeter({ measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: '97', unit: '%' }] }),
        status: 422,
        diagnostics: /value must be a finite number/,
      },
      {
        name: 'systolic without diastolic',
        body: { ...bpCuff, measurements: [bpCuff.measurements[0]] },
        status: 422,
        diagnostics: /needs both systolic and diastolic/,
      },
      { name: 'missing deviceId', body: oximeter({ deviceId: '' }), status: 422, diagnostics: /deviceId is required/ },
      { name: 'no measurements', body: oximeter({ measurements: [] }), status: 422, diagnostics: /measurements must be a non-empty array/ },
      {
        name: 'missing patient (a vital sign needs a subject)',
        body: oximeter({ patientId: undefined }),
        status: 422,
        diagnostics: /needs a subject/,
      },
      {
        name: 'an invalid reading in an array refuses the whole array',
        body: [oximeter(), oximeter({ timestamp: 'yesterday' })],
        status: 422,
        diagnostics: /\[1\]/,
      },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const before = await queued();
        const r =
          c.raw !== undefined
            ? await request(stack.gw.url)
                .post('/ingest/measurements')
                .set('content-type', c.contentType ?? 'application/json')
                .send(c.raw)
            : await request(stack.gw.url)
                .post('/ingest/measurements')
                .send(c.body as object);
        assert.equal(r.status, c.status, JSON.stringify(r.body));
        assert.match(r.headers['content-type'], /application\/fhir\+json/);
        assert.equal(r.body.resourceType, 'OperationOutcome');
        const text = JSON.stringify(r.body.issue);
        assert.match(text, c.diagnostics);
        if (c.expression) assert.match(JSON.stringify(r.body.issue.map((i: { expression?: string[] }) => i.expression)), c.expression);
        assert.doesNotMatch(text, /at .*\.ts:\d+/, 'no stack trace');
        assert.equal(await queued(), before, 'nothing queued');
      });
    }

    it('oversized body → 413', async () => {
      const before = await queued();
      const big = oximeter({ model: 'x'.repeat(8000) });
      const r = await request(stack.gw.url).post('/ingest/measurements').send(big);
      assert.equal(r.status, 413);
      assert.equal(r.body.resourceType, 'OperationOutcome');
      assert.equal(await queued(), before);
    });

    it('unknown adapter → 404', async () => {
      const r = await request(stack.gw.url).post('/ingest/no-such-adapter').send(oximeter());
      assert.equal(r.status, 404);
      assert.match(JSON.stringify(r.body), /no adapter 'no-such-adapter'/);
    });

    it('unknown route → 404 OperationOutcome', async () => {
      const r = await request(stack.gw.url).get('/nope');
      assert.equal(r.status, 404);
      assert.equal(r.body.resourceType, 'OperationOutcome');
    });
  });

  it('codes a LOINC-only blood pressure as a LOINC panel, adding no MDC code the device did not send', async () => {
    const r = await postJson(`${stack.gw.url}/ingest/measurements`, {
      ...bpCuff,
      deviceId: 'BP-LOINC',
      measurements: [
        { code: { system: LOINC, code: '8480-6' }, value: 118, unit: 'mmHg' },
        { code: { system: LOINC, code: '8462-4' }, value: 76, unit: 'mmHg' },
      ],
    });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const [panel] = await eventually(
      async () => {
        const o = await stack.ehr.search<Observation>('Observation', {});
        return o.length === 1 ? o : undefined;
      },
      20000,
      'the panel',
    );
    assert.deepEqual(
      panel.code.coding?.map((c) => `${c.system}|${c.code}`),
      [`${LOINC}|85354-9`],
    );
    for (const c of panel.component ?? [])
      assert.ok(
        c.code.coding?.every((k) => k.system === LOINC),
        'components coded LOINC only',
      );
  });

  it('keeps a payload it could not map, and replays it once the adapter exists', async () => {
    const late = { ...measurementsAdapter, id: 'late-adapter' };
    const r = await postJson(`${stack.gw.url}/ingest/late-adapter`, oximeter({ deviceId: 'LATE-1' }));
    assert.equal(r.status, 404);
    const id = r.headers.get('x-refused-id');
    assert.ok(id, 'the refusal names the kept payload');
    const list = await request(stack.gw.url).get('/api/refused');
    assert.ok(
      list.body.items.some(
        (i: { id: string; adapterId: string; status: number }) => i.id === id && i.adapterId === 'late-adapter' && i.status === 404,
      ),
    );
    assert.equal((await request(stack.gw.url).get(`/api/refused/${id}`)).body.body.deviceId, 'LATE-1');
    stack.gw.gateway.registry.register(late);
    try {
      const replay = await request(stack.gw.url).post(`/api/refused/${id}/replay`);
      assert.equal(replay.status, 202, JSON.stringify(replay.body));
      await eventually(async () => (await stack.ehr.search('Observation', {})).length === 2, 20000, 'the replayed reading delivered');
      assert.equal((await request(stack.gw.url).get(`/api/refused/${id}`)).status, 404, 'gone once replayed');
    } finally {
      stack.gw.gateway.registry.unregister('late-adapter');
    }
  });

  it('answers 422, not 500, when an adapter throws on input it did not expect', async () => {
    stack.gw.gateway.registry.register({
      id: 'fragile',
      description: 'throws',
      translate: () => {
        throw new TypeError("Cannot read properties of undefined (reading 'MRN-SECRET')");
      },
    });
    try {
      const r = await postJson(`${stack.gw.url}/ingest/fragile`, { anything: true });
      assert.equal(r.status, 422);
      assert.match(JSON.stringify(r.body), /adapter 'fragile' could not translate this payload \(TypeError\)/);
      assert.doesNotMatch(JSON.stringify(r.body), /MRN-SECRET/, 'the error text (it may quote the payload) is not echoed');
    } finally {
      stack.gw.gateway.registry.unregister('fragile');
    }
  });

  it('serves health, readiness, status and metrics', async () => {
    assert.equal((await request(stack.gw.url).get('/healthz')).status, 200);
    const ready = await request(stack.gw.url).get('/readyz');
    assert.equal(ready.status, 200, JSON.stringify(ready.body));
    const s = await request(stack.gw.url).get('/api/status');
    assert.equal(s.status, 200);
    assert.equal(s.body.fhirBaseUrl, stack.ehr.url);
    assert.equal(s.body.redis.status, 'ready');
    assert.equal(typeof s.body.queue.completed, 'number');
    assert.match(s.body.version, /^\d+\.\d+\.\d+/);
    const m = await request(stack.gw.url).get('/metrics');
    assert.match(m.text, /iomt_ingest_accepted_total\{adapter="measurements",channel="http"\} \d+/);
    assert.ok(s.headers['x-content-type-options'], 'helmet headers');
  });

  it('stays ready when the EHR is unreachable (readings are queued) and says why beside', async () => {
    const dead = await startGateway({ REDIS_URL: stack.redis.url, FHIR_BASE_URL: 'http://127.0.0.1:1/fhir', QUEUE_NAME: 'q-readyz' });
    try {
      const r = await request(dead.url).get('/readyz');
      assert.equal(r.status, 200);
      assert.match(JSON.stringify(r.body.warnings), /EHR: metadata: the EHR is unreachable/);
      assert.equal(r.body.destinations.ehr.state, 'closed');
    } finally {
      await dead.stop();
    }
  });
});

describe('Redis down and backpressure', function () {
  it('answers 503 with Retry-After when Redis is down, and 503 when the queue is over its depth limit', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, QUEUE_MAX_DEPTH: '2' }, 'ingest');
    try {
      // Backpressure: no worker in the ingest role, so jobs stay waiting.
      for (const id of ['D-1', 'D-2'])
        assert.equal((await postJson(`${gw.url}/ingest/measurements`, oximeter({ deviceId: id }))).status, 202);
      // The depth is cached briefly: ask until the gateway sees the full queue (the same reading again is the same job).
      const full = await eventually(
        async () => {
          const r = await postJson(`${gw.url}/ingest/measurements`, oximeter({ deviceId: 'D-3' }));
          return r.status === 503 ? r : undefined;
        },
        10000,
        'the queue to be seen full',
      );
      assert.equal(full.status, 503);
      assert.match(JSON.stringify(full.body), /queue is full/);
      assert.ok(full.headers.get('retry-after'));

      await redis.redis.stop();
      await eventually(() => !gw.gateway.queue!.isReady(), 10000, 'the gateway to see Redis down');
      const down = await postJson(`${gw.url}/ingest/measurements`, oximeter({ deviceId: 'D-4' }));
      assert.equal(down.status, 503);
      assert.equal(down.body.resourceType, 'OperationOutcome');
      assert.match(JSON.stringify(down.body), /Redis/);
      assert.equal(down.headers.get('retry-after'), '5');
      const ready = await request(gw.url).get('/readyz');
      assert.equal(ready.status, 503);
      assert.match(JSON.stringify(ready.body), /Redis is not reachable/);
    } finally {
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});

describe('Redis out of memory (noeviction)', function () {
  it('answers 503 and acknowledges nothing when Redis refuses writes', async () => {
    const redis = await startRedis();
    const ehr = await startEhr();
    const gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url }, 'ingest');
    const admin = connectRedis(redis.url);
    try {
      // Redis at its memory limit with noeviction answers every write with an OOM error.
      const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
      await admin.config('SET', 'maxmemory', String(used + 1024));
      const r = await postJson(`${gw.url}/ingest/measurements`, oximeter({ deviceId: 'OOM-1', model: 'x'.repeat(2000) }));
      assert.equal(r.status, 503, JSON.stringify(r.body));
      assert.equal(r.body.resourceType, 'OperationOutcome');
      assert.ok(r.headers.get('retry-after'));
    } finally {
      await admin.config('SET', 'maxmemory', '0').catch(() => undefined);
      admin.disconnect();
      await gw.stop();
      await ehr.stop();
      await redis.stop();
    }
  });
});
