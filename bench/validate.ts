/**
 * Structural validation benchmark (not a test). Prints, in one run on this machine, µs per resource for medplum's
 * `validateResource` alone, the fast path (`fastStructurallyValid`) alone, and the gateway's `validate()` (fast path,
 * medplum only when the fast path cannot prove validity, plus the vital-signs rules), on resources as the
 * `measurements` adapter produces them.
 *
 * Usage: npx tsx bench/validate.ts [--ms 1000]
 */
import { validateResource } from '@medplum/core';
import type { Resource } from 'fhir/r4';
import { measurementsAdapter } from '../src/adapters/measurements.js';
import { fastStructurallyValid } from '../src/fhir/fast-validate.js';
import { initValidation, validate } from '../src/fhir/validate.js';

const i = process.argv.indexOf('--ms');
const MS = i >= 0 ? Number(process.argv[i + 1]) : 1000;

/** µs per call, over at least `ms` milliseconds. */
function time(ms: number, fn: () => void): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let k = 0; k < 100; k++) fn();
    n += 100;
    now = performance.now();
  }
  return ((now - start) * 1000) / n;
}

initValidation();
const [t] = measurementsAdapter.translate(
  {
    body: {
      deviceId: 'SN-1',
      patientId: 'MRN-1',
      manufacturer: 'Acme',
      model: 'BP-2',
      timestamp: '2026-11-23T10:00:00Z',
      measurements: [
        { code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' },
        { code: 'MDC_PRESS_BLD_NONINV_SYS', value: 120, unit: 'mm[Hg]' },
        { code: 'MDC_PRESS_BLD_NONINV_DIA', value: 80, unit: 'mm[Hg]' },
        { code: 'MDC_PRESS_BLD_NONINV_MEAN', value: 93, unit: 'mm[Hg]' },
      ],
    },
    channel: 'bench',
    receivedAt: '2026-11-23T10:00:01Z',
  },
  { deviceIdentifierSystem: 'urn:bench:device', patientIdentifierSystem: 'urn:bench:mrn' },
);
const cases: [string, Resource][] = [
  ['Observation (SpO2)', t.observations[0]],
  ['Observation (BP panel, 3 components)', t.observations[1]],
  ['Device', t.devices[0]],
];

for (const [, r] of cases) {
  if (!fastStructurallyValid(r) || validate(r).length)
    throw new Error(`${r.resourceType} is not valid: the benchmark needs valid resources`);
}
console.log(`µs per resource (${MS} ms per figure, after as long a warm-up)`);
console.log(
  `${'resource'.padEnd(38)}${'medplum'.padStart(10)}${'fast path'.padStart(11)}${'validate()'.padStart(12)}${'speed-up'.padStart(10)}`,
);
for (const [name, r] of cases) {
  const runs = { medplum: () => validateResource(r as never), fast: () => fastStructurallyValid(r), validate: () => validate(r) };
  for (const fn of Object.values(runs)) time(MS, fn);
  const [m, f, v] = Object.values(runs).map((fn) => time(MS, fn));
  console.log(
    `${name.padEnd(38)}${m.toFixed(1).padStart(10)}${f.toFixed(1).padStart(11)}${v.toFixed(1).padStart(12)}${`${(m / f).toFixed(0)}x`.padStart(10)}`,
  );
}
