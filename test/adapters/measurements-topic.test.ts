/** The measurements format on MQTT: the device the topic names is the reading's device when the payload names none. */
import { strict as assert } from 'node:assert';
import { measurementsAdapter } from '../../src/adapters/measurements.js';
import { TranslationError } from '../../src/core/contract.js';
import { ctx } from './helpers.js';

const body = {
  patientId: 'MRN-T',
  timestamp: '2026-11-23T10:00:00Z',
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }],
};

describe('measurements adapter: the device from the MQTT topic', () => {
  it('takes the topic device id when the payload has none (docs/mqtt.md: the topic names the device)', () => {
    const [r] = measurementsAdapter.translate(
      { body, channel: 'mqtt', receivedAt: '2026-11-23T10:00:01Z', attributes: { topic: 'devices/OX-2/m', deviceId: 'OX-2' } },
      ctx,
    );
    assert.equal(r.devices[0].identifier?.[0]?.value, 'OX-2');
  });

  it('keeps the payload device id when there is one (the guard refuses one that is not the topic device)', () => {
    const [r] = measurementsAdapter.translate(
      { body: { ...body, deviceId: 'OX-9' }, channel: 'mqtt', receivedAt: '2026-11-23T10:00:01Z', attributes: { deviceId: 'OX-2' } },
      ctx,
    );
    assert.equal(r.devices[0].identifier?.[0]?.value, 'OX-9');
  });

  it('still refuses a reading without a device anywhere', () => {
    assert.throws(
      () => measurementsAdapter.translate({ body, channel: 'http', receivedAt: '2026-11-23T10:00:01Z' }, ctx),
      TranslationError,
    );
  });
});
