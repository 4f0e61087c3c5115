/**
 * Test wiring for device management: the one gateway starter (test/helpers/harness.ts, production features) with an
 * admin key and without the harness's 'accept' device policy (the policy default is what these tests check), plus
 * small HTTP helpers.
 */
import type { Role } from '../../src/config/index.js';
import type { DeviceManagement } from '../../src/devices/index.js';
import { startGateway, type TestGateway } from '../helpers/harness.js';

export const ADMIN = 'admin-key-0123456789abcdef';

export interface DmGateway extends TestGateway {
  dm: DeviceManagement;
}

export async function startDmGateway(env: Record<string, string>, role: Role = 'all'): Promise<DmGateway> {
  const gw = await startGateway({ UNKNOWN_DEVICE_POLICY: undefined, ADMIN_API_KEY: ADMIN, UNKNOWN_PATIENT_POLICY: 'create', ...env }, role);
  return { ...gw, dm: gw.gateway.features!.devices };
}

export interface Res {
  status: number;
  body: any;
  headers: Headers;
}

/** The longest a test's request may go unanswered: longer than any bound of the gateway's, shorter than a test. */
const CALL_TIMEOUT_MS = 30_000;

/** One HTTP call; `key` is sent as a bearer token; a string body is sent as text/csv unless a content type is given. */
export async function call(base: string, method: string, path: string, key?: string, body?: unknown, contentType?: string): Promise<Res> {
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  let payload: string | undefined;
  if (body !== undefined) {
    headers['content-type'] = contentType ?? (typeof body === 'string' ? 'text/csv' : 'application/json');
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  // Bounded, so that a request that never returns fails naming itself rather than as the test's timeout.
  const r = await fetch(`${base}${path}`, { method, headers, body: payload, signal: AbortSignal.timeout(CALL_TIMEOUT_MS) }).catch(
    (e: Error) => {
      throw new Error(`${method} ${path}: ${e.name === 'TimeoutError' ? `no answer within ${CALL_TIMEOUT_MS} ms` : e.message}`, {
        cause: e,
      });
    },
  );
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: parsed, headers: r.headers };
}

/** A measurements-format reading (with a patient unless `extra` sets patientId: undefined). */
export const reading = (deviceId: string, extra: Record<string, unknown> = {}, minute = 0) => ({
  deviceId,
  patientId: 'MRN-T1',
  timestamp: `2026-11-23T10:${String(minute).padStart(2, '0')}:00Z`,
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }],
  ...extra,
});
