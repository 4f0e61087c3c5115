import { measurementsAdapter } from './src/adapters/measurements.js';
import { validate } from './src/fhir/validate.js';
const ctx = { deviceIdentifierSystem: 'urn:dev', patientIdentifierSystem: 'urn:mrn' };
const msg = { channel: 'http', receivedAt: new Date().toISOString(), body: { deviceId: 'SN-1', patientId: 'MRN-9', timestamp: '2026-11-23T10:00:00Z', measurements: [
  { code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }, { code: 'MDC_PULS_OXIM_PULS_RATE', value: 72, unit: 'bpm' },
  { code: 'MDC_PRESS_BLD_NONINV_SYS', value: 120, unit: 'mmHg' }, { code: 'MDC_PRESS_BLD_NONINV_DIA', value: 80, unit: 'mmHg' } ] } };
let t = Date.now();
const [tr] = measurementsAdapter.translate(msg, ctx);
console.log(JSON.stringify(tr.observations[2], null, 0));
for (const o of [...tr.devices, ...tr.observations]) console.log(JSON.stringify(validate(o)));
console.log('ms', Date.now() - t);
const bad = structuredClone(tr.observations[0]); (bad as any).status = 'bogus'; bad.valueQuantity!.code = 'kg';
console.log(JSON.stringify(validate(bad)));
const bad2 = structuredClone(tr.observations[2]); bad2.component![1].code.coding = [{ system: 'http://loinc.org', code: '8867-4' }];
console.log(JSON.stringify(validate(bad2)));
t = Date.now(); for (let i = 0; i < 1000; i++) for (const o of tr.observations) validate(o); console.log('1000x ms', Date.now() - t);
