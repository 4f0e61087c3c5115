/**
 * Example vendor plugin: a Bluetooth LE blood-pressure cuff whose hub forwards the raw GATT Blood Pressure Measurement
 * characteristic (0x2A35, Bluetooth SIG "Blood Pressure Service" 1.1) as base64 in a small JSON envelope:
 *
 *   { "deviceId": "BLE-BP-0042",            optional when the channel names the device (MQTT topic → attributes.deviceId)
 *     "patientId": "MRN-0042",              optional
 *     "characteristic": "2A35",
 *     "data": "BnkATwBdAOoHCxcIHgBAAA==",   the characteristic value, base64
 *     "timeZoneOffsetMinutes": 60 }         the cuff clock's offset from UTC (BLE date-times carry no time zone)
 *
 * Characteristic layout (little endian): flags (uint8: bit 0 units kPa, bit 1 time stamp present, bit 2 pulse rate
 * present, bit 3 user id present, bit 4 measurement status present), systolic, diastolic, mean arterial pressure
 * (IEEE 11073-20601 SFLOAT each), [time stamp: uint16 year, uint8 month, day, hours, minutes, seconds], [pulse rate
 * SFLOAT], [user id uint8], [measurement status uint16].
 *
 * The plugin only decodes; the gateway's vendor-neutral `measurements` translation (fromMeasurements) supplies the
 * codes (LOINC 85354-9 panel with 8480-6 / 8462-4 components, MDC 150020…), UCUM units and identifiers. Pure: no I/O,
 * no clock (a cuff without a clock is stamped with the receive time carried by the message).
 *
 * This file is TypeScript so that the repository type-checks it; a production plugin ships compiled JavaScript.
 */
import {
  definePlugin,
  fromMeasurements,
  isRecord,
  refuse,
  TranslationError,
  issue,
  type InboundMessage,
  type TranslationContext,
} from '../../src/adapters/sdk.js';

/** IEEE 11073-20601 SFLOAT: 4-bit exponent, 12-bit mantissa (two's complement); undefined for NaN / NRes / ±INF. */
export function sfloat(raw: number): number | undefined {
  if (raw === 0x07ff || raw === 0x0800 || raw === 0x07fe || raw === 0x0802 || raw === 0x0801) return undefined;
  let mantissa = raw & 0x0fff;
  if (mantissa >= 0x0800) mantissa -= 0x1000;
  let exponent = raw >> 12;
  if (exponent >= 8) exponent -= 16;
  return Number((mantissa * 10 ** exponent).toFixed(Math.max(0, -exponent)));
}

export interface BpMeasurement {
  unit: 'mmHg' | 'kPa';
  systolic: number;
  diastolic: number;
  mean?: number;
  /** Local date-time of the cuff, without zone: YYYY-MM-DDTHH:MM:SS */
  localTime?: string;
  pulse?: number;
  userId?: number;
  status?: number;
}

/** Decodes a Blood Pressure Measurement characteristic value. Throws TranslationError naming the byte at fault. */
export function decodeBloodPressure(buf: Buffer): BpMeasurement {
  const need = (offset: number, n: number, what: string) => {
    if (buf.length < offset + n)
      refuse(`the characteristic value is ${buf.length} bytes: too short for ${what} at byte ${offset}`, '$.data');
  };
  need(0, 7, 'flags, systolic, diastolic and mean arterial pressure');
  const flags = buf.readUInt8(0);
  let o = 7;
  const systolic = sfloat(buf.readUInt16LE(1));
  const diastolic = sfloat(buf.readUInt16LE(3));
  const mean = sfloat(buf.readUInt16LE(5));
  if (systolic === undefined || diastolic === undefined)
    refuse('systolic or diastolic pressure is not a number (SFLOAT NaN/NRes/INF)', '$.data');
  const m: BpMeasurement = { unit: flags & 0x01 ? 'kPa' : 'mmHg', systolic, diastolic, ...(mean !== undefined ? { mean } : {}) };
  if (flags & 0x02) {
    need(o, 7, 'the time stamp');
    const [y, mo, d, h, mi, s] = [buf.readUInt16LE(o), buf[o + 2], buf[o + 3], buf[o + 4], buf[o + 5], buf[o + 6]];
    if (!y || !mo || !d || mo > 12 || d > 31 || h > 23 || mi > 59 || s > 59)
      refuse(`the time stamp ${y}-${mo}-${d} ${h}:${mi}:${s} is not a valid date-time (the cuff clock is not set?)`, '$.data');
    const p2 = (n: number) => String(n).padStart(2, '0');
    m.localTime = `${String(y).padStart(4, '0')}-${p2(mo)}-${p2(d)}T${p2(h)}:${p2(mi)}:${p2(s)}`;
    o += 7;
  }
  if (flags & 0x04) {
    need(o, 2, 'the pulse rate');
    m.pulse = sfloat(buf.readUInt16LE(o));
    o += 2;
  }
  if (flags & 0x08) {
    need(o, 1, 'the user id');
    m.userId = buf.readUInt8(o);
    o += 1;
  }
  if (flags & 0x10) {
    need(o, 2, 'the measurement status');
    m.status = buf.readUInt16LE(o);
    o += 2;
  }
  return m;
}

function zoned(localTime: string, offsetMinutes: number): string {
  const sign = offsetMinutes < 0 ? '-' : '+';
  const abs = Math.abs(offsetMinutes);
  return `${localTime}${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

function translate(message: InboundMessage, context: TranslationContext) {
  const body = message.body;
  if (!isRecord(body)) refuse('the payload must be a JSON object { deviceId, characteristic, data }', '$');
  const problems = [];
  const deviceId = typeof body.deviceId === 'string' && body.deviceId.trim() ? body.deviceId.trim() : message.attributes?.deviceId;
  if (!deviceId) problems.push(issue('required', 'deviceId is required (in the payload, or from the MQTT topic)', ['$.deviceId']));
  if (body.characteristic !== undefined && String(body.characteristic).toUpperCase() !== '2A35')
    problems.push(
      issue(
        'not-supported',
        `characteristic '${String(body.characteristic)}' is not supported: this plugin decodes 2A35 (Blood Pressure Measurement)`,
        ['$.characteristic'],
      ),
    );
  if (typeof body.data !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(body.data))
    problems.push(issue('value', 'data must be the characteristic value in base64', ['$.data']));
  const offset = body.timeZoneOffsetMinutes;
  if (offset !== undefined && (typeof offset !== 'number' || !Number.isInteger(offset) || Math.abs(offset) > 14 * 60))
    problems.push(
      issue('value', 'timeZoneOffsetMinutes must be a whole number of minutes between -840 and 840', ['$.timeZoneOffsetMinutes']),
    );
  if (problems.length) throw new TranslationError(problems);
  const bp = decodeBloodPressure(Buffer.from(body.data as string, 'base64'));
  let timestamp = message.receivedAt;
  if (bp.localTime) {
    if (offset === undefined)
      refuse('the reading carries the cuff clock time without a zone: send timeZoneOffsetMinutes', '$.timeZoneOffsetMinutes');
    timestamp = zoned(bp.localTime, offset as number);
  }
  const unit = bp.unit === 'kPa' ? 'kPa' : 'mmHg';
  const measurements = [
    { code: 'MDC_PRESS_BLD_NONINV_SYS', value: bp.systolic, unit },
    { code: 'MDC_PRESS_BLD_NONINV_DIA', value: bp.diastolic, unit },
    ...(bp.mean !== undefined ? [{ code: 'MDC_PRESS_BLD_NONINV_MEAN', value: bp.mean, unit }] : []),
    ...(bp.pulse !== undefined ? [{ code: 'MDC_PULS_RATE_NON_INV', value: bp.pulse, unit: '/min' }] : []),
  ];
  return fromMeasurements(
    {
      deviceId,
      ...(typeof body.patientId === 'string' ? { patientId: body.patientId } : {}),
      manufacturer: 'Example Vendor',
      model: 'BLE BP cuff',
      timestamp,
      measurements,
    },
    message,
    context,
  );
}

export default definePlugin({
  id: 'example-ble-bp',
  description: 'Example vendor plugin: Bluetooth LE blood-pressure cuff (GATT 0x2A35, base64)',
  vendor: 'example-vendor',
  translate,
  samples: [
    {
      name: 'cuff with clock and pulse',
      body: {
        deviceId: 'BLE-BP-0042',
        patientId: 'MRN-0042',
        characteristic: '2A35',
        data: 'BnkATwBdAOoHCxcIHgBAAA==',
        timeZoneOffsetMinutes: 60,
      },
    },
    {
      name: 'cuff without clock, no mean pressure',
      body: { deviceId: 'BLE-BP-0043', patientId: 'MRN-0043', characteristic: '2A35', data: 'BIIAUgD/B0gA' },
    },
  ],
});
