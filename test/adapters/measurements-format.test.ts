/**
 * The measurements format, described for senders: its JSON Schema accepts what the adapter accepts (the README's
 * reading) and refuses what it refuses; the table of accepted codes is true (every row translates) and docs/codes.md is
 * that table (it cannot drift); both are served by the gateway.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { acceptedCodes, acceptedCodesMarkdown, MEASUREMENTS_SCHEMA } from '../../src/adapters/measurements-format.js';
import { REPO_ROOT, startGateway, startRedis, type TestGateway, type TestRedis } from '../helpers/harness.js';
import { ctx } from './helpers.js';

const README_READING = {
  deviceId: 'SN-123',
  manufacturer: 'Acme Medical',
  model: 'PulseOx 3',
  patientId: 'MRN-9',
  timestamp: '2026-11-23T10:00:00Z',
  measurements: [
    { code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' },
    { code: 'MDC_PULS_OXIM_PULS_RATE', value: 72, unit: 'bpm' },
  ],
};

describe('measurements format: schema and accepted codes', () => {
  it('the JSON Schema accepts the README reading (one and an array) and refuses a reading without measurements', () => {
    const validate = new Ajv2020({ strict: false }).compile(MEASUREMENTS_SCHEMA);
    assert.ok(validate(README_READING), JSON.stringify(validate.errors));
    assert.ok(validate([README_READING, { ...README_READING, timestamp: 1732352400 }]), JSON.stringify(validate.errors));
    assert.equal(validate({ ...README_READING, measurements: [] }), false);
    assert.equal(validate({ deviceId: 'X', timestamp: '2026-11-23T10:00:00Z' }), false);
  });

  it('every listed code translates into a valid Observation with its LOINC and MDC codes (the table is true)', () => {
    for (const c of acceptedCodes()) {
      if (!c.unit || c.loinc?.code === '85354-9') continue; // the BP panel code is refused on purpose: send components
      const code = c.mdc ? c.code : { system: 'http://loinc.org', code: c.loinc!.code };
      const body = {
        deviceId: 'T-1',
        patientId: 'P-1',
        timestamp: '2026-11-23T10:00:00Z',
        measurements: [{ code, value: 1, unit: c.unit }],
      };
      const bp = /8480-6|8462-4|8478-0/.test(c.loinc?.code ?? '') || /PRESS_BLD/.test(c.code);
      if (bp) continue; // a lone component is refused: blood pressure needs systolic and diastolic together
      const [r] = measurementsAdapter.translate({ body, channel: 'http', receivedAt: '2026-11-23T10:00:01Z' }, ctx);
      const codings = r.observations[0].code.coding ?? [];
      if (c.loinc)
        assert.ok(
          codings.some((x) => x.code === c.loinc!.code),
          `${c.code}: LOINC ${c.loinc.code}`,
        );
      if (c.mdc)
        assert.ok(
          codings.some((x) => x.code === String(c.mdc!.code)),
          `${c.code}: MDC ${c.mdc.code}`,
        );
    }
  });

  it('docs/codes.md is the generated table', () => {
    assert.equal(
      readFileSync(`${REPO_ROOT}/docs/codes.md`, 'utf8'),
      acceptedCodesMarkdown(),
      'regenerate: npx tsx src/main.ts formats --codes > docs/codes.md',
    );
  });

  describe('served by the gateway', () => {
    let redis: TestRedis;
    let gw: TestGateway;
    before(async () => {
      redis = await startRedis();
      gw = await startGateway({ REDIS_URL: redis.url, ADMIN_API_KEY: 'k-0123456789abcdef0123' });
    });
    after(async () => {
      await gw?.stop();
      await redis?.stop();
    });

    it('GET /formats/measurements/schema.json and /codes, without a credential', async () => {
      const schema = await fetch(`${gw.url}/formats/measurements/schema.json`);
      assert.equal(schema.status, 200);
      assert.deepEqual(await schema.json(), JSON.parse(JSON.stringify(MEASUREMENTS_SCHEMA)));
      const codes = (await (await fetch(`${gw.url}/formats/measurements/codes`)).json()) as { code: string }[];
      assert.ok(codes.some((c) => c.code === 'MDC_PULS_OXIM_SAT_O2'));
    });
  });
});
