/**
 * A fast FHIR sink for benchmarks: accepts transaction Bundles and answers a transaction-response at once, without
 * storing anything. It counts readings (device id + effective time) and records when each arrived, for latency figures, and sends
 * the records to the parent process on request. Not a FHIR server: a stand-in for an EHR that is never the bottleneck.
 */
import { createServer } from 'node:http';

interface Entry {
  fullUrl?: string;
  resource?: { resourceType?: string; identifier?: { value?: string }[]; effectiveDateTime?: string; device?: { reference?: string } };
  request?: { method?: string; url?: string };
}

const arrivals: [string, number][] = [];
let observations = 0;
let transactions = 0;
let readings = 0;
/** Bytes of the transaction Bundles received. */
let bytes = 0;

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/fhir+json' });
    return void res.end(
      '{"resourceType":"CapabilityStatement","status":"active","kind":"instance","fhirVersion":"4.0.1","format":["json"]}',
    );
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const now = Date.now();
    const body = Buffer.concat(chunks);
    bytes += body.length;
    if (process.env.SINK_SHOW_FIRST && transactions === 1) console.error(body.toString());
    const bundle = JSON.parse(body.toString()) as { entry?: Entry[] };
    const entries = bundle.entry ?? [];
    transactions++;
    // A transaction may carry several readings (the gateway coalesces jobs): a reading is a device + effective time.
    // A Device's id here is its identifier's value; an Observation refers to a Device of the bundle (urn:uuid) or, once
    // the gateway knows that id, to `Device/<value>`.
    const devices = new Map<string, string>();
    for (const e of entries)
      if (e.resource?.resourceType === 'Device' && e.fullUrl) devices.set(e.fullUrl, e.resource.identifier?.[0]?.value ?? '');
    const seen = new Set<string>();
    for (const e of entries) {
      const r = e.resource;
      if (r?.resourceType !== 'Observation') continue;
      observations++;
      const ref = r.device?.reference ?? '';
      const key = `${devices.get(ref) ?? (ref.startsWith('Device/') ? ref.slice(7) : '')}|${r.effectiveDateTime ?? ''}`;
      if (seen.has(key)) continue;
      seen.add(key);
      readings++;
      arrivals.push([key, now]);
    }
    const out = {
      resourceType: 'Bundle',
      type: 'transaction-response',
      entry: entries.map((e, i) => ({
        response: {
          status: '201 Created',
          location:
            e.resource?.resourceType === 'Device'
              ? `Device/${e.resource.identifier?.[0]?.value ?? i}/_history/1`
              : `${e.resource?.resourceType}/${i}/_history/1`,
        },
      })),
    };
    res.writeHead(200, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify(out));
  });
});

server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.send?.({ type: 'listening', port: (server.address() as { port: number }).port });
});

process.on('message', (m: { type: string }) => {
  if (m.type === 'stats') process.send?.({ type: 'stats', observations, transactions, readings, bytes, arrivals: arrivals.splice(0) });
  if (m.type === 'stop') server.close(() => process.exit(0));
});
