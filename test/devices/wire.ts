/**
 * Test wiring: the real gateway (real Redis, real sandbox EHR over HTTP) with device management as its extension,
 * exactly as production wires it (`extensions: [createDeviceManagement]`), plus small HTTP helpers.
 */
import { Writable } from 'node:stream';
import { loadConfig, type Role } from '../../src/config/index.js';
import { Gateway, type Extension, type ExtensionContext } from '../../src/app/gateway.js';
import { type ConfigKey, loadKeys } from '../../src/config/schema.js';
import { createLogger } from '../../src/observability/logger.js';
import { createDeviceManagement, type DeviceManagement } from '../../src/devices/index.js';
import { registrationExtension } from '../../src/registration/service.js';
import { FAST_ENV, type TestGateway } from '../helpers/harness.js';

export const ADMIN = 'admin-key-0123456789abcdef';

export interface DmGateway extends TestGateway {
  dm: DeviceManagement;
}

export interface WireOptions {
  /** Other extensions, built before device management (e.g. the HL7v2 one, which registers its adapter). */
  before?: ((ctx: ExtensionContext) => Promise<Extension>)[];
  /** Config keys of those extensions not yet in the schema: parsed from `env` into config.raw. */
  extraKeys?: readonly ConfigKey[];
}

export async function startDmGateway(env: Record<string, string>, role: Role = 'all', options: WireOptions = {}): Promise<DmGateway> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  // The device-policy default is what these tests check: do not inherit the harness's 'accept'.
  const { UNKNOWN_DEVICE_POLICY: _accept, ...fast } = FAST_ENV;
  const full = { ...fast, ADMIN_API_KEY: ADMIN, UNKNOWN_PATIENT_POLICY: 'create', ...env };
  const loaded = loadConfig(full);
  const extra = loadKeys(options.extraKeys ?? [], full);
  if (extra.errors.length) throw new Error(extra.errors.join('; '));
  const config = { ...loaded, raw: new Map([...loaded.raw, ...extra.values]) };
  let dm: DeviceManagement | undefined;
  const gateway = new Gateway(config, role, {
    logger: createLogger(config.logLevel, sink),
    extensions: [...(options.before ?? []), async (ctx) => (dm = await createDeviceManagement(ctx, full)), registrationExtension()],
  });
  await gateway.start();
  return { gateway, url: gateway.url, logs, dm: dm as DeviceManagement, stop: () => gateway.stop() };
}

export interface Res {
  status: number;
  body: any;
  headers: Headers;
}

/** One HTTP call; `key` is sent as a bearer token; a string body is sent as text/csv unless a content type is given. */
export async function call(base: string, method: string, path: string, key?: string, body?: unknown, contentType?: string): Promise<Res> {
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  let payload: string | undefined;
  if (body !== undefined) {
    headers['content-type'] = contentType ?? (typeof body === 'string' ? 'text/csv' : 'application/json');
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const r = await fetch(`${base}${path}`, { method, headers, body: payload });
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
