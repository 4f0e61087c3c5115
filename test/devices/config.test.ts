/** Device-management configuration: defaults, maps, every error reported at once. */
import { strict as assert } from 'node:assert';
import { DEVICE_KEYS, readDeviceConfig } from '../../src/devices/config.js';
import { ConfigError, describeKeys, loadKeys } from '../../src/config/schema.js';
import { loadGatewayConfig } from '../../src/app/features.js';

const core = { deviceIdentifierSystem: 'urn:d', patientIdentifierSystem: 'urn:p' };

describe('device configuration', () => {
  it('has safe defaults: reject unknown devices, 15 min offline, rate limit on, no forwarding', () => {
    const c = readDeviceConfig(loadKeys(DEVICE_KEYS, {}).values, core);
    assert.equal(c.unknownDevicePolicy, 'reject');
    assert.deepEqual(c.channelPolicy, {});
    assert.equal(c.offlineAfterMs, 900000);
    assert.equal(c.credentialCacheTtlMs, 30000);
    assert.ok(c.rateLimitPerMinute > 0);
    assert.equal(c.auditForward, false);
    assert.equal(c.signingKey, undefined);
  });

  it('reads maps and per-channel policies from the loaded schema (config.raw)', () => {
    const env = {
      UNKNOWN_DEVICE_POLICY: 'accept',
      UNKNOWN_DEVICE_POLICY_MQTT: 'hold',
      UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES: 'ICU=accept, LAB=hold',
      DEVICE_OFFLINE_AFTER_MS_BY_TYPE: 'spo2=60000,scale=172800000',
    };
    const c = readDeviceConfig(loadKeys(DEVICE_KEYS, env).values, core);
    assert.equal(c.unknownDevicePolicy, 'accept');
    assert.equal(c.channelPolicy.mqtt, 'hold');
    assert.equal(c.facilityPolicy.get('LAB'), 'hold');
    assert.equal(c.offlineAfterMsByType.get('scale'), 172800000);
  });

  it('reports every error at once', () => {
    assert.throws(
      () =>
        loadGatewayConfig({
          UNKNOWN_DEVICE_POLICY: 'maybe',
          UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES: 'ICU=sometimes',
          DEVICE_OFFLINE_AFTER_MS_BY_TYPE: 'spo2',
          CREDENTIAL_SIGNING_KEY: 'short',
        }),
      (e: Error) =>
        e instanceof ConfigError &&
        [
          'UNKNOWN_DEVICE_POLICY: ',
          'UNKNOWN_DEVICE_POLICY_MLLP_FACILITIES',
          'DEVICE_OFFLINE_AFTER_MS_BY_TYPE',
          'CREDENTIAL_SIGNING_KEY',
        ].every((s) => e.message.includes(s)),
    );
  });

  it('documents every key, without printing secrets', () => {
    const help = describeKeys(DEVICE_KEYS);
    for (const k of DEVICE_KEYS) assert.match(help, new RegExp(`\\b${k.env}\\b`));
    assert.ok(DEVICE_KEYS.find((k) => k.env === 'CREDENTIAL_SIGNING_KEY')?.secret);
  });
});
