/**
 * Battery level and signal strength, when a payload reports them (kept simple on purpose):
 *   - in the measurements JSON format, top-level fields of the reading: `battery` / `batteryLevel` (percent) and
 *     `signal` / `rssi` (dBm), or a measurement whose code names the battery (MDC_ATTR_VAL_BATT_CHARGE) or RSSI;
 *   - in the translated observations, an observation whose coding display/code names the battery charge.
 * Values are device health, not PHI; they are kept per device and shown in the registry record.
 */
import type { Reading } from '../core/contract.js';

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const BATTERY_CODE = /BATT/i;
const SIGNAL_CODE = /RSSI|SIGNAL/i;

export function readingsOf(body: unknown, deviceId: string, t?: Reading): { battery?: number; signal?: number } {
  const out: { battery?: number; signal?: number } = {};
  const readings = Array.isArray(body) ? body : [body];
  for (const r of readings) {
    if (!isRecord(r) || (r.deviceId !== undefined && r.deviceId !== deviceId)) continue;
    out.battery ??= num(r.battery) ?? num(r.batteryLevel);
    out.signal ??= num(r.signal) ?? num(r.rssi);
    if (Array.isArray(r.measurements)) {
      for (const m of r.measurements) {
        if (!isRecord(m)) continue;
        const code = typeof m.code === 'string' ? m.code : isRecord(m.code) && typeof m.code.code === 'string' ? m.code.code : '';
        if (BATTERY_CODE.test(code)) out.battery ??= num(m.value);
        else if (SIGNAL_CODE.test(code)) out.signal ??= num(m.value);
      }
    }
  }
  for (const o of t?.observations ?? []) {
    const names = (o.code.coding ?? []).map((c) => `${c.code ?? ''} ${c.display ?? ''}`).join(' ');
    if (BATTERY_CODE.test(names)) out.battery ??= num(o.valueQuantity?.value);
  }
  return out;
}
