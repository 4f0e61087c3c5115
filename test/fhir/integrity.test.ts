/**
 * What a reading may claim (issue: SpO2 −5 % or 1.8e308 %, body temperature −1e308 °C, year 9999, device ids of emoji,
 * NUL or 200,000 characters, invalid UTF-8 collapsing into one id were all accepted, and such ids auto-registered):
 * physiologically possible ranges per code (unit-aware), the time window of effective times, and the registry's id
 * syntax, on HTTP JSON and MLLP, through the real gateway (real Redis, real sandbox EHR over HTTP, real TCP).
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Observation, OperationOutcomeIssue } from 'fhir/r4';
import { loadGatewayConfig } from '../../src/app/features.js';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { acceptedCodes } from '../../src/adapters/measurements-format.js';
import { idSyntaxProblem } from '../../src/core/ids.js';
import { firstInvalidUtf8 } from '../../src/core/utf8.js';
import { buildReadingChecks, PLAUSIBLE_RANGES, readReadingChecks } from '../../src/fhir/plausibility.js';
import { validateReadings } from '../../src/fhir/validate.js';
import { readAck } from '../../src/hl7v2/ack.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { ConfigError, loadKeys } from '../../src/config/schema.js';
import { ALL_KEYS } from '../../src/app/features.js';
import { startEhr, startGateway, startRedis, type TestEhr, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { pcdMessage, TestClient } from '../hl7v2/helpers.js';

const CTX = { deviceIdentifierSystem: 'urn:test:device', patientIdentifierSystem: 'urn:test:mrn' };
const RECEIVED = '2026-11-23T10:30:00Z';

const reading = (measurements: unknown[], over: Record<string, unknown> = {}) => ({
  deviceId: 'PLAUS-1',
  patientId: 'MRN-P1',
  timestamp: '2026-11-23T10:00:00Z',
  measurements,
  ...over,
});

/** Translates with the measurements adapter and validates as the pipeline does; the issues found. */
function issuesOf(body: unknown, checks = buildReadingChecks(), receivedAt = RECEIVED): OperationOutcomeIssue[] {
  const readings = measurementsAdapter.translate({ body, channel: 'http', receivedAt }, CTX);
  return validateReadings(readings, { locate: measurementsAdapter.locate?.bind(measurementsAdapter), checks, receivedAt });
}

describe('plausibility: physiologically possible ranges per code', () => {
  const refused: [string, unknown, string, RegExp][] = [
    [
      'SpO2 −5 %',
      { code: 'MDC_PULS_OXIM_SAT_O2', value: -5, unit: '%' },
      'measurements[0].value',
      /LOINC 2708-6 .*-5 % is outside .* 0 to 100 %/,
    ],
    // 1.8e308 itself parses to Infinity in JSON (above the largest double) and is refused as not finite.
    ['SpO2 1.7e308 %', { code: 'MDC_PULS_OXIM_SAT_O2', value: 1.7e308, unit: '%' }, 'measurements[0].value', /1\.700e\+308 % is outside/],
    [
      'body temperature −1e308 °C',
      { code: 'MDC_TEMP_BODY', value: -1e308, unit: 'Cel' },
      'measurements[0].value',
      /8310-5 .*outside .* 5 to 50 Cel/,
    ],
    [
      'body temperature 200 °F (93 °C)',
      { code: 'MDC_TEMP_BODY', value: 200, unit: '[degF]' },
      'measurements[0].value',
      /200 \[degF\] \(93\.3333 Cel\)/,
    ],
    ['heart rate 700/min', { code: 'MDC_ECG_HEART_RATE', value: 700, unit: 'bpm' }, 'measurements[0].value', /8867-4/],
    ['body weight 2,000 lb', { code: 'MDC_MASS_BODY_ACTUAL', value: 2000, unit: 'lb' }, 'measurements[0].value', /907\.185 kg/],
    [
      'glucose 200 mmol/L',
      { code: 'MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD', value: 200, unit: 'mmol/L' },
      'measurements[0].value',
      /MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD/,
    ],
  ];
  for (const [name, m, where, text] of refused) {
    it(`refuses ${name}, located at the value the sender wrote`, () => {
      const issues = issuesOf(reading([m]));
      assert.equal(issues.length, 1, JSON.stringify(issues));
      assert.equal(issues[0].code, 'value');
      assert.deepEqual(issues[0].expression, [where]);
      assert.match(issues[0].diagnostics ?? '', text);
    });
  }

  it('refuses an impossible blood-pressure component, located at its measurement', () => {
    const issues = issuesOf(
      reading([
        { code: 'MDC_PRESS_BLD_NONINV_SYS', value: 120, unit: 'mmHg' },
        { code: 'MDC_PRESS_BLD_NONINV_DIA', value: -80, unit: 'mmHg' },
      ]),
    );
    assert.equal(issues.length, 1, JSON.stringify(issues));
    assert.deepEqual(issues[0].expression, ['measurements[1].value']);
    assert.match(issues[0].diagnostics ?? '', /8462-4/);
  });

  it('accepts the bounds themselves and values in other units inside them', () => {
    const ok = [
      { code: 'MDC_PULS_OXIM_SAT_O2', value: 0, unit: '%' },
      { code: 'MDC_PULS_OXIM_PULS_RATE', value: 0, unit: '/min' },
      { code: 'MDC_TEMP_BODY', value: 98.6, unit: '[degF]' },
      { code: 'MDC_MASS_BODY_ACTUAL', value: 154, unit: 'lb' },
      { code: 'MDC_LEN_BODY_ACTUAL', value: 1.8, unit: 'm' },
      { code: 'MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD', value: 5.5, unit: 'mmol/L' },
    ];
    assert.deepEqual(issuesOf(reading(ok)), []);
    assert.deepEqual(issuesOf(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 100, unit: '%' }])), []);
  });

  it('refuses a number that is not finite on any Observation, whatever its code', () => {
    const obs: Observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] },
      valueQuantity: { value: Number.POSITIVE_INFINITY, unit: 'mg/dL' },
    };
    const issues = validateReadings([{ devices: [], observations: [obs] }]);
    assert.equal(issues.length, 1, JSON.stringify(issues));
    assert.match(issues[0].expression?.[0] ?? '', /value/);
  });

  it('the ranges docs/codes.md lists are the ones applied: each bound accepted, just beyond it refused', () => {
    const listed = acceptedCodes().filter((c) => c.plausible && c.unit && !/^(8480-6|8462-4|8478-0)$/.test(c.loinc?.code ?? ''));
    assert.ok(listed.length >= 20, `${listed.length} codes with a range`);
    for (const c of listed) {
      const code = c.mdc ? c.code : { system: 'http://loinc.org', code: c.loinc?.code };
      const p = c.plausible!;
      for (const [value, n] of [
        [p.min, 0],
        [p.max, 0],
        [p.max + 1, 1],
        [p.min - 1, 1],
      ] as const) {
        const issues = issuesOf(reading([{ code, value, unit: p.unit }]));
        assert.equal(issues.length, n, `${c.code} ${value} ${p.unit}: ${JSON.stringify(issues)}`);
      }
    }
  });

  it('every row of the table is a possible-physiology range in a unit the code is sent in, with its basis', () => {
    for (const r of PLAUSIBLE_RANGES) {
      assert.ok(r.min < r.max && r.min >= 0, r.key);
      assert.ok(r.basis.length > 20, `${r.key} says why`);
    }
  });

  it('PLAUSIBILITY_RANGES_FILE overrides a range (and null removes it); a bad file stops the start with every error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'plaus-'));
    try {
      const good = join(dir, 'ranges.json');
      writeFileSync(good, JSON.stringify({ '8867-4': { min: 0, max: 1000 }, MDC_BLD_PERF_INDEX: null }));
      const raw = loadKeys(ALL_KEYS, { PLAUSIBILITY_RANGES_FILE: good }).values;
      const checks = readReadingChecks(raw);
      assert.deepEqual(issuesOf(reading([{ code: 'MDC_ECG_HEART_RATE', value: 700, unit: 'bpm' }]), checks), []);
      assert.equal(issuesOf(reading([{ code: 'MDC_ECG_HEART_RATE', value: 1001, unit: 'bpm' }]), checks).length, 1);
      assert.deepEqual(issuesOf(reading([{ code: 'MDC_BLD_PERF_INDEX', value: 150, unit: '%' }]), checks), []);
      const bad = join(dir, 'bad.json');
      writeFileSync(
        bad,
        JSON.stringify({ '8867-4': { min: 5, max: 1 }, 'NOT-A-CODE': { min: 0, max: 1 }, '8310-5': { min: 0, max: 1, unit: '[degF]' } }),
      );
      assert.throws(
        () => loadGatewayConfig({ PLAUSIBILITY_RANGES_FILE: bad, READING_TIME_MIN: 'yesterday' }),
        (e: unknown) =>
          e instanceof ConfigError &&
          e.errors.some((x) => /'8867-4' must be/.test(x)) &&
          e.errors.some((x) => /'NOT-A-CODE' is not/.test(x)) &&
          e.errors.some((x) => /'8310-5' is bounded in Cel/.test(x)) &&
          e.errors.some((x) => /READING_TIME_MIN/.test(x)),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the time window of effective times', () => {
  it('refuses year 9999 and a time more than 10 minutes ahead, saying what was read; accepts 9 minutes ahead', () => {
    const far = issuesOf(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { timestamp: '9999-12-31T23:59:59Z' }));
    assert.equal(far.length, 1, JSON.stringify(far));
    assert.deepEqual(far[0].expression, ['timestamp']);
    assert.match(far[0].diagnostics ?? '', /9999-12-31T23:59:59Z is .* ahead of the gateway's clock/);
    const ahead = issuesOf(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { timestamp: '2026-11-23T10:41:00Z' }));
    assert.equal(ahead.length, 1);
    assert.match(ahead[0].diagnostics ?? '', /11 min ahead/);
    assert.deepEqual(
      issuesOf(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { timestamp: '2026-11-23T10:39:00Z' })),
      [],
    );
  });

  it('refuses a time before 2000 (a clock never set), and READING_TIME_MIN moves the bound', () => {
    const body = reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { timestamp: '1970-01-01T00:00:00Z' });
    const old = issuesOf(body);
    assert.equal(old.length, 1);
    assert.match(old[0].diagnostics ?? '', /1970-01-01T00:00:00Z is before 2000-01-01T00:00:00Z/);
    assert.deepEqual(issuesOf(body, buildReadingChecks({}, '1960-01-01T00:00:00Z')), []);
  });
});

describe('ids: the registry syntax', () => {
  it('names what is wrong without quoting the id', () => {
    assert.equal(idSyntaxProblem('OXI-1001'), undefined);
    assert.equal(idSyntaxProblem('0A-1B-2C-3D-4E-5F-60-71/mds1'), undefined);
    assert.equal(idSyntaxProblem('PAT_DEVICE_PHILIPS_C'), undefined);
    assert.match(idSyntaxProblem('OX\u0000-1') ?? '', /position 3 \(U\+0000, a control character\)/);
    assert.match(idSyntaxProblem('OX-😀') ?? '', /U\+1F600/);
    assert.match(idSyntaxProblem('OX-\uFFFD') ?? '', /not valid UTF-8/);
    assert.match(idSyntaxProblem('x'.repeat(200_000)) ?? '', /200000 characters long \(at most 128\)/);
    assert.match(idSyntaxProblem('') ?? '', /empty/);
  });

  it('finds the first byte that is not UTF-8', () => {
    assert.equal(firstInvalidUtf8(Buffer.from('{"a":"é"}')), -1);
    assert.equal(firstInvalidUtf8(Buffer.from([0x7b, 0x22, 0xff, 0x22])), 2);
    assert.equal(firstInvalidUtf8(Buffer.from([0x41, 0xc3, 0x41])), 1);
    assert.equal(firstInvalidUtf8(Buffer.from([0xed, 0xa0, 0x80])), 0, 'a surrogate');
    assert.equal(firstInvalidUtf8(Buffer.from([0xc0, 0xaf])), 0, 'an overlong form');
    for (const s of ['', 'plain', 'Mädchen', '😀', '\u{10FFFF}']) assert.equal(firstInvalidUtf8(Buffer.from(s)), -1, s);
  });
});

describe('integrity of readings through the gateway: HTTP JSON and MLLP', function () {
  this.timeout(60000);
  let redis: TestRedis;
  let ehr: TestEhr;
  let gw: TestGateway;
  let mllpPort: number;
  const ADMIN = 'admin-key-0123456789abcdef';

  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    mllpPort = await freePort();
    gw = await startGateway({
      REDIS_URL: redis.url,
      FHIR_BASE_URL: ehr.url,
      ADMIN_API_KEY: ADMIN,
      UNKNOWN_DEVICE_POLICY: 'accept',
      MLLP_PORT: String(mllpPort),
      // A real EHR is configured: MLLP is closed unless told who may send (test/hl7v2/sender-allowlist.test.ts).
      MLLP_ALLOW_ANY_SENDER: 'true',
      INGEST_MAX_BODY_BYTES: '1048576',
    });
  });
  after(async () => {
    await gw?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  const post = async (body: string | Buffer) => {
    const r = await fetch(`${gw.url}/ingest/measurements`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : new Uint8Array(body),
    });
    return { status: r.status, body: (await r.json()) as { issue: OperationOutcomeIssue[] } };
  };
  const registered = async (id: string) =>
    (await fetch(`${gw.url}/api/devices/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${ADMIN}` } })).status;
  const queued = async () => {
    const c = await gw.gateway.queue!.bull.getJobCounts();
    return c.waiting + c.active + c.delayed + c.completed + c.failed;
  };
  const ack = async (text: string | Buffer) => {
    const c = await TestClient.connect(mllpPort);
    try {
      c.send(text);
      return readAck(await c.next());
    } finally {
      c.close();
    }
  };

  it('HTTP: an impossible value, a time in year 9999 → 422 located at what the sender wrote; nothing queued', async () => {
    const before = await queued();
    const spo2 = await post(JSON.stringify(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: -5, unit: '%' }], { deviceId: 'INT-1' })));
    assert.equal(spo2.status, 422);
    assert.deepEqual(spo2.body.issue[0].expression, ['measurements[0].value']);
    assert.match(spo2.body.issue[0].diagnostics ?? '', /outside the physiologically possible range/);
    const future = await post(
      JSON.stringify(
        reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { deviceId: 'INT-1', timestamp: '9999-01-01T00:00:00Z' }),
      ),
    );
    assert.equal(future.status, 422);
    assert.match(future.body.issue[0].diagnostics ?? '', /9999-01-01T00:00:00Z/);
    assert.equal(await queued(), before);
    assert.equal(await registered('INT-1'), 404, 'a refused reading registers no device');
  });

  for (const [name, id, text] of [
    ['an emoji', 'OX-😀', /U\+1F600/],
    ['a NUL', 'OX\u0000', /U\+0000, a control character/],
    ['200,000 characters', 'D'.repeat(200_000), /200000 characters long/],
  ] as const) {
    it(`HTTP: a device id with ${name} → 422 at deviceId, and the device is not auto-registered`, async () => {
      const r = await post(JSON.stringify(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { deviceId: id })));
      assert.equal(r.status, 422, JSON.stringify(r.body).slice(0, 300));
      assert.deepEqual(r.body.issue[0].expression, ['deviceId']);
      assert.match(r.body.issue[0].diagnostics ?? '', text);
      const all = (await (await fetch(`${gw.url}/api/devices`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as
        | { id: string }[]
        | { devices?: { id: string }[]; items?: { id: string }[] };
      assert.ok(!JSON.stringify(all).includes(id.slice(0, 100)), 'not registered');
    });
  }

  it('HTTP: a patient id outside the syntax → 422 at patientId (not quoted back)', async () => {
    const r = await post(
      JSON.stringify(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { deviceId: 'INT-2', patientId: 'MRN 4711 ☃' })),
    );
    assert.equal(r.status, 422);
    assert.deepEqual(r.body.issue[0].expression, ['patientId']);
    assert.ok(!(r.body.issue[0].diagnostics ?? '').includes('MRN 4711'));
  });

  it('HTTP: a body that is not valid UTF-8 → 400 before decoding (two ids would otherwise become one)', async () => {
    const valid = JSON.stringify(reading([{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }], { deviceId: 'INT-U\u00e9' }));
    const bytes = Buffer.from(valid, 'utf8');
    const at = bytes.indexOf(0xc3);
    const broken = Buffer.concat([bytes.subarray(0, at), Buffer.from([0xff]), bytes.subarray(at + 2)]);
    const r = await post(broken);
    assert.equal(r.status, 400);
    assert.match(r.body.issue[0].diagnostics ?? '', new RegExp(`not valid UTF-8 \\(first invalid byte at offset ${at}\\)`));
  });

  const withObx = (controlId: string, obx: string[]) => pcdMessage(controlId).replace(/OBX\|2\|.*\r/, `${obx.join('\r')}\r`);

  it('MLLP: an impossible value → AE with ERR-2 at OBX-5 of the OBX the sender wrote', async () => {
    const a = await ack(withObx('INT-H1', ['OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|-5|262688^MDC_DIM_PERCENT^MDC|||||R']));
    assert.equal(a.code, 'AE');
    assert.equal(a.errors.length, 1, JSON.stringify(a.errors));
    assert.equal(a.errors[0].location, 'OBX-2-5');
    assert.match(a.errors[0].text ?? '', /outside the physiologically possible range 0 to 100 %/);
  });

  it('MLLP: an OBX time in year 9999 → AE with ERR-2 at OBX-14', async () => {
    const a = await ack(
      withObx('INT-H2', ['OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||99991231000000+0000']),
    );
    assert.equal(a.code, 'AE');
    assert.equal(a.errors[0].location, 'OBX-2-14');
    assert.match(a.errors[0].text ?? '', /9999-12-31/);
  });

  it('MLLP: a device id (OBX-18) outside the syntax → AE at OBX-1-18; nothing registered', async () => {
    const text = pcdMessage('INT-H3').replace('00A0C914C8290001^EUI-64', 'MON\u263A7^ACME');
    const a = await ack(text);
    assert.equal(a.code, 'AE', JSON.stringify(a));
    assert.equal(a.errors[0].location, 'OBX-1-18');
    assert.match(a.errors[0].text ?? '', /device id has a character that is not allowed at position 4 \(U\+263A/);
    assert.equal(await registered('MON\u263A7'), 404);
  });

  it('MLLP: invalid UTF-8 in PID-3 of a message declaring UTF-8 → AE at PID-1-3 (not silently replaced)', async () => {
    const text = pcdMessage('INT-H4');
    const bytes = Buffer.from(text, 'utf8');
    const at = bytes.indexOf(Buffer.from('MRN-4711'));
    const broken = Buffer.concat([bytes.subarray(0, at + 3), Buffer.from([0xe9]), bytes.subarray(at + 3)]);
    const a = await ack(broken);
    assert.equal(a.code, 'AE', JSON.stringify(a));
    assert.equal(a.errors[0].location, 'PID-1-3');
    assert.match(a.errors[0].text ?? '', /patient id .*U\+FFFD.*not valid UTF-8/);
  });
});
