/**
 * The EHR write path (not a test): CPU per transaction of the gateway's EhrClient (node:http, delivery/ehr-http.ts)
 * against fhir-kit-client's transaction() and a bare fetch, in the same run, against the bench sink.
 *
 * Usage: npx tsx bench/ehr-write.ts [--requests 3000] [--entries 21] [--in-flight 8] [--rounds 3]
 * Prints, per round and variant, process CPU µs per transaction (JSON.stringify of the Bundle and JSON.parse of the
 * answer included in each) and transactions/s; the summary gives each variant's median over the rounds. The variants
 * take turns, so that a busy moment of the machine does not fall on one of them only.
 */
import { fork } from 'node:child_process';
import { join } from 'node:path';
import type { Bundle, BundleEntry, Observation } from 'fhir/r4';
import { Client } from 'fhir-kit-client';
import { EhrClient } from '../src/delivery/ehr-client.js';
import { opt, ROOT, run } from './common.js';

const REQUESTS = opt('requests', 3000);
const ENTRIES = opt('entries', 21);
const IN_FLIGHT = opt('in-flight', 8);
const ROUNDS = opt('rounds', 3);

const entry = (i: number): BundleEntry => ({
  fullUrl: `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  resource: {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'urn:iso:std:iso:11073:10101', code: '150456', display: 'MDC_PULS_OXIM_SAT_O2' }] },
    effectiveDateTime: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
    valueQuantity: { value: 97, unit: '%', system: 'http://unitsofmeasure.org', code: '%' },
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:bench:${i}` }],
  } as Observation,
  request: { method: 'PUT', url: `Observation?identifier=urn:ietf:rfc:3986|urn:bench:${i}` },
});

async function main(): Promise<void> {
  const sink = fork(join(ROOT, 'bench/sink.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((res) =>
    sink.on('message', (m: { type: string; port: number }) => m.type === 'listening' && res(m.port)),
  );
  const baseUrl = `http://127.0.0.1:${port}/fhir`;
  const bundle: Bundle = { resourceType: 'Bundle', type: 'transaction', entry: Array.from({ length: ENTRIES }, (_, i) => entry(i)) };
  const gateway = new EhrClient({ baseUrl, timeoutMs: 10_000 });
  const fkc = new Client({ baseUrl, customHeaders: { accept: 'application/fhir+json' } });
  const variants: Record<string, () => Promise<unknown>> = {
    'gateway EhrClient (node:http)': () => gateway.transaction(bundle),
    'fhir-kit-client transaction()': () => fkc.transaction({ body: bundle as never, options: { signal: AbortSignal.timeout(10_000) } }),
    'fetch, no client': async () => {
      const res = await fetch(baseUrl, {
        method: 'POST',
        body: JSON.stringify(bundle),
        headers: { 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
        signal: AbortSignal.timeout(10_000),
      });
      return JSON.parse(await res.text());
    },
  };
  console.log(
    `machine: node ${process.version}; ${REQUESTS} transactions of ${ENTRIES} entries per variant and round, ${IN_FLIGHT} in flight, ${ROUNDS} round(s)`,
  );
  const cpu = new Map<string, number[]>();
  for (let round = 1; round <= ROUNDS + 1; round++) {
    for (const [name, send] of Object.entries(variants)) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      let i = 0;
      await Promise.all(
        Array.from({ length: IN_FLIGHT }, async () => {
          while (i++ < REQUESTS) await send();
        }),
      );
      const c = process.cpuUsage(c0);
      const us = (c.user + c.system) / REQUESTS;
      // The first round warms the code up and is not counted.
      if (round === 1) continue;
      (cpu.get(name) ?? cpu.set(name, []).get(name))?.push(us);
      console.log(
        `  round ${round - 1}  ${name.padEnd(32)} ${us.toFixed(0).padStart(5)} µs CPU per transaction, ${(REQUESTS / ((performance.now() - t0) / 1000)).toFixed(0)} transactions/s`,
      );
    }
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const ours = median(cpu.get('gateway EhrClient (node:http)') ?? []);
  console.log('median CPU per transaction:');
  for (const [name, a] of cpu)
    console.log(`  ${name.padEnd(32)} ${median(a).toFixed(0).padStart(5)} µs (${(median(a) / ours).toFixed(2)}× the gateway's)`);
  gateway.close();
  sink.kill();
}

run(main);
