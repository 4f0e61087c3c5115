/**
 * Test wiring for the vendor-adapter features: the real gateway (real Redis, real sandbox EHR over HTTP) with the
 * production extensions plus plugins, the registration API and the MQTT channel, whose config keys are parsed into
 * config.raw here until they are part of the one schema.
 */
import { Writable } from 'node:stream';
import { loadConfig, type Role } from '../../src/config/index.js';
import { loadKeys } from '../../src/config/schema.js';
import { Gateway } from '../../src/app/gateway.js';
import { createLogger } from '../../src/observability/logger.js';
import { createDeviceManagement } from '../../src/devices/index.js';
import { mappingsExtension } from '../../src/adapters/mapping/folder.js';
import { PLUGIN_KEYS, pluginsExtension } from '../../src/adapters/plugins.js';
import { registrationExtension } from '../../src/registration/service.js';
import { MQTT_KEYS, mqttExtension } from '../../src/channels/mqtt/channel.js';
import { FAST_ENV, type TestGateway } from '../helpers/harness.js';

export { ADMIN, call } from '../devices/wire.js';
import { ADMIN } from '../devices/wire.js';

export async function startVendorGateway(env: Record<string, string>, role: Role = 'all'): Promise<TestGateway> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const full = { ...FAST_ENV, ADMIN_API_KEY: ADMIN, UNKNOWN_PATIENT_POLICY: 'create', ADAPTERS_POLL_INTERVAL_MS: '200', ...env };
  const loaded = loadConfig(full);
  const extra = loadKeys([...PLUGIN_KEYS, ...MQTT_KEYS], full);
  if (extra.errors.length) throw new Error(extra.errors.join('; '));
  const config = { ...loaded, raw: new Map([...loaded.raw, ...extra.values]) };
  const gateway = new Gateway(config, role, {
    logger: createLogger(config.logLevel, sink),
    extensions: [async (ctx) => createDeviceManagement(ctx, full), mappingsExtension(), pluginsExtension(), registrationExtension(), mqttExtension()],
  });
  await gateway.start();
  return { gateway, url: gateway.url, logs, stop: () => gateway.stop() };
}
