/**
 * The destinations file is checked at start-up: every error is listed (unknown keys, bad URLs, duplicate names, bad
 * filters, bad auth), and the gateway does not start (the CLI prints one message and exits 1). Without a file, the one
 * destination `ehr` comes from FHIR_BASE_URL and FHIR_AUTH.
 */
import { strict as assert } from 'node:assert';
import { parseDestinations } from '../../src/config/destinations.js';
import { loadGatewayConfig } from '../../src/app/features.js';
import { ConfigError } from '../../src/config/schema.js';
import { spawnGateway } from '../helpers/harness.js';
import { destinationsFile } from './helpers.js';

const BAD = {
  destinations: [
    { name: 'ehr', baseUrl: 'not a url', colour: 'blue', filter: { codes: [], channel: ['http'] } },
    { name: 'ehr', baseUrl: 'ftp://example.org/fhir', writeMode: 'bulk', auth: { type: 'bearer' } },
    { name: 'Bad Name!', sandbox: true, baseUrl: 'https://example.org/fhir', filter: { resourceTypes: ['Medication'] }, timeoutMs: 5 },
    { name: 'env', baseUrl: 'https://example.org/fhir', auth: { type: 'bearer', tokenEnv: 'NO_SUCH_TOKEN_VAR' }, deviceCacheS: -1 },
  ],
  extra: true,
};

describe('destinations: the file', () => {
  it('lists every error, each with where it is', () => {
    const { errors } = parseDestinations(BAD, { timeoutMs: 1000 }, {});
    const expected = [
      "unknown key 'extra'",
      "destinations[0]: unknown key 'colour'",
      "destinations[0].baseUrl: 'not a url' is not a URL",
      'destinations[0].filter.codes: must be a non-empty list',
      "destinations[0].filter: unknown key 'channel'",
      "destinations[1].name: 'ehr' is also the name of destinations[0]",
      "destinations[1].baseUrl: 'ftp://example.org/fhir' is not an http(s) URL",
      "destinations[1].writeMode: 'bulk' is not one of transaction, batch, individual",
      'destinations[1].auth: bearer needs exactly one of "token" or "tokenEnv"',
      'destinations[2].name: must be 1-40 lower-case letters',
      'destinations[2]: set either baseUrl or "sandbox": true, not both',
      "destinations[2].filter.resourceTypes[0]: 'Medication' is not one of",
      'destinations[2].timeoutMs: must be a whole number from 100',
      'destinations[3].auth.tokenEnv: the environment variable NO_SUCH_TOKEN_VAR is not set',
      'destinations[3].deviceCacheS: must be a whole number from 0',
    ];
    for (const e of expected)
      assert.ok(
        errors.some((x) => x.includes(e)),
        `missing: ${e}\n${errors.join('\n')}`,
      );
    assert.equal(errors.length, expected.length, errors.join('\n'));
  });

  it('accepts a good file; an unset write mode is left to the CapabilityStatement', () => {
    const { destinations, errors } = parseDestinations(
      {
        destinations: [
          {
            name: 'ehr',
            baseUrl: 'https://ehr.example.org/fhir/',
            auth: { type: 'bearer', tokenEnv: 'T' },
            writeMode: 'individual',
            deviceCacheS: 60,
          },
          { name: 'local', sandbox: true, filter: { categories: ['vital-signs'] }, concurrency: 2 },
        ],
      },
      { timeoutMs: 1234 },
      { T: 'x' },
    );
    assert.deepEqual(errors, []);
    assert.equal(destinations[0].baseUrl, 'https://ehr.example.org/fhir');
    assert.equal(destinations[0].timeoutMs, 1234);
    assert.equal(destinations[1].writeMode, undefined);
    assert.equal(destinations[0].deviceCacheS, 60);
    assert.equal(destinations[1].deviceCacheS, undefined, 'DELIVERY_DEVICE_CACHE_S then');
    assert.equal(destinations[1].sandbox, true);
  });

  it('without a file: one destination ehr from FHIR_BASE_URL and FHIR_AUTH, in transaction mode as before', () => {
    const c = loadGatewayConfig({ FHIR_BASE_URL: 'https://ehr.example.org/fhir', FHIR_AUTH: 'bearer', FHIR_BEARER_TOKEN: 'tok' });
    assert.equal(c.destinations.length, 1);
    assert.deepEqual(
      { ...c.destinations[0], filter: undefined },
      {
        name: 'ehr',
        type: 'fhir',
        baseUrl: 'https://ehr.example.org/fhir',
        sandbox: false,
        auth: { type: 'bearer', token: 'tok' },
        writeMode: 'transaction',
        timeoutMs: 15000,
        filter: undefined,
      },
    );
    assert.equal(loadGatewayConfig({}).destinations[0].sandbox, true);
  });

  it('the file and FHIR_BASE_URL together are an error, reported with the rest', () => {
    const file = destinationsFile({ destinations: [{ name: 'ehr', baseUrl: 'https://x.example/fhir', filter: 3 }] });
    assert.throws(
      () => loadGatewayConfig({ DESTINATIONS_FILE: file, FHIR_BASE_URL: 'https://y.example/fhir', PORT: 'x' }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.errors.some((x) => x.includes('either FHIR_BASE_URL or DESTINATIONS_FILE')) &&
        e.errors.some((x) => x.includes('destinations[0].filter: must be an object')) &&
        e.errors.some((x) => x.includes('PORT')),
    );
  });

  it('a bad file stops the start: one message listing every error, exit code 1', async function () {
    this.timeout(30_000);
    const file = destinationsFile(BAD);
    const child = spawnGateway({ DESTINATIONS_FILE: file, REDIS_URL: 'redis://127.0.0.1:1' }, 'all');
    const code = await new Promise<number | null>((res) => child.child.once('exit', (c) => res(c)));
    assert.equal(code, 1, child.output());
    const out = child.output();
    assert.match(out, /^invalid configuration:/m);
    assert.equal((out.match(/DESTINATIONS_FILE /g) ?? []).length, 15, out);
    assert.doesNotMatch(out, /at .*\.ts:\d+/, 'no stack trace');
    assert.doesNotMatch(out, /gateway started/);
  });

  it('a file that is not JSON, or missing, is one clear error', () => {
    for (const [file, pattern] of [
      [destinationsFile('destinations:\n  - name: ehr\n'), /not JSON/],
      ['/nonexistent/destinations.json', /cannot read .* \(ENOENT\)/],
    ] as const)
      assert.throws(
        () => loadGatewayConfig({ DESTINATIONS_FILE: file }),
        (e: unknown) => e instanceof ConfigError && e.errors.length === 1 && pattern.test(e.errors[0]),
      );
  });
});
