/**
 * Test wiring for the vendor-adapter features (plugins, the registration API, MQTT): the one gateway starter
 * (test/helpers/harness.ts, production features) with an admin key and a short adapter poll interval.
 */
import type { Role } from '../../src/config/index.js';
import { startGateway, type TestGateway } from '../helpers/harness.js';

export { ADMIN, call } from '../devices/wire.js';
import { ADMIN } from '../devices/wire.js';

export async function startVendorGateway(env: Record<string, string>, role: Role = 'all'): Promise<TestGateway> {
  return startGateway({ ADMIN_API_KEY: ADMIN, UNKNOWN_PATIENT_POLICY: 'create', ADAPTERS_POLL_INTERVAL_MS: '200', ...env }, role);
}
