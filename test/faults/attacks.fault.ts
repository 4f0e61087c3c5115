/**
 * The attacks of issue 13 against a gateway process under legitimate load (HTTP and MLLP), with /healthz polled every
 * ~50 ms from a worker thread:
 *   - vendor templates: a JSONPath filter with a regex literal, JMESPath matchesRegex with '((a+))+$', 3,000 `$..`
 *     templates (1 MiB) with a 60 KB payload;
 *   - MLLP: 1,000 idle sockets from one peer, a frame trickled one byte a second, eight 1 MB frames of '~' at once.
 * For each: the hostile input is refused (at registration, or the connection is closed, or the frame is answered
 * AR/AE), legitimate traffic keeps being acknowledged, and the worst /healthz latency stays under 1 s (the target is
 * 100 ms; the bound is wide so that a busy machine does not fail it, and the figure is printed against the target).
 * The legitimate readings are then counted like every fault scenario: 0 lost, 0 duplicated.
 */
import { strict as assert } from 'node:assert';
import net from 'node:net';
import { type Ctx, printTable, type Row, runScenario } from './scenario.js';
import { Ledger, mllpLoad, pollHealth } from './load.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const ADMIN = 'faults-admin-key-0123456789abcdef';
const HEALTHZ_BOUND_MS = 1000;
const HEALTHZ_TARGET_MS = 100;

interface AttackFigure {
  attack: string;
  refused: string;
  worstHealthzMs: number;
  legitAcked: number;
  ok: boolean;
}
const figures: AttackFigure[] = [];

function printAttacks(): void {
  console.log('\n  attacks: worst /healthz against the 100 ms target');
  for (const f of figures) {
    console.log(
      `    ${f.ok ? 'ok  ' : 'FAIL'} ${f.attack.padEnd(44)} worst /healthz ${f.worstHealthzMs.toFixed(0).padStart(6)} ms (${f.worstHealthzMs <= HEALTHZ_TARGET_MS ? 'within' : 'over'} 100 ms), legitimate acknowledged during it: ${f.legitAcked}; ${f.refused}`,
    );
  }
}

/**
 * Runs one attack with its own /healthz poller; records the figures; returns the failures (collected, so that every
 * attack of a scenario runs and is reported before the test fails).
 */
async function attack(ctx: Ctx, name: string, run: () => Promise<{ refused: boolean; how: string }>): Promise<string[]> {
  const health = pollHealth([ctx.ingest.url]);
  const before = ctx.ledger.ackedCount;
  let result: { refused: boolean; how: string };
  try {
    result = await run();
  } catch (err) {
    result = { refused: false, how: `the attack failed: ${(err as Error).message}` };
  }
  // Legitimate traffic still gets through: more readings acknowledged after the attack.
  const afterAttack = ctx.ledger.ackedCount;
  await ctx.acked(20, 10000);
  const [h] = await health.stop();
  const failures: string[] = [];
  if (!result.refused) failures.push(`${name}: not refused or contained (${result.how})`);
  if (h.worstMs >= HEALTHZ_BOUND_MS) failures.push(`${name}: /healthz took ${h.worstMs.toFixed(0)} ms`);
  if (h.unanswered) failures.push(`${name}: ${h.unanswered} /healthz polls unanswered`);
  if (ctx.ledger.ackedCount - afterAttack < 20) failures.push(`${name}: legitimate traffic stalled after the attack`);
  figures.push({ attack: name, refused: result.how, worstHealthzMs: h.worstMs, legitAcked: afterAttack - before, ok: !failures.length });
  return failures;
}

async function call(base: string, method: string, path: string, key: string, body?: unknown, timeoutMs = 30000) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: parsed as { resourceType?: string; key?: string; issue?: { diagnostics?: string }[] } };
}

const diagnostics = (b: { issue?: { diagnostics?: string }[] }) => (b.issue ?? []).map((i) => i.diagnostics).join('; ');

const fhirMapping = {
  templateType: 'CollectionFhir',
  template: [
    {
      templateType: 'CodeValueFhir',
      template: {
        typeName: 'spo2',
        periodInterval: 0,
        codes: [{ system: 'http://loinc.org', code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry' }],
        value: { valueName: 'spo2', valueType: 'Quantity', unit: '%', code: '%', system: 'http://unitsofmeasure.org' },
      },
    },
  ],
};

/** A template of the shape of mappings/pulse-oximeter (the envelope's Body, the matched token), the match hostile. */
const jsonPathTemplate = (typeMatchExpression: string) => ({
  templateType: 'CalculatedContent',
  template: {
    typeName: 'spo2',
    typeMatchExpression,
    deviceIdExpression: '$.Body.serial',
    patientIdExpression: '$.Body.patient.mrn',
    timestampExpression: '$.matchedToken.time',
    values: [{ valueName: 'spo2', valueExpression: '$.matchedToken.spo2', required: true }],
  },
});

const recent = () => new Date(Date.now() - 3600_000).toISOString();
const payload = (readings: Record<string, unknown>[]) => ({
  serial: 'ATTACK-OX-1',
  patient: { mrn: 'MRN-ATTACK' },
  readings: readings.map((r) => ({ serial: 'ATTACK-OX-1', mrn: 'MRN-ATTACK', ...r })),
});

/**
 * A vendor registers a template; if it is accepted, the hostile payload is sent to it. Contained: the registration is
 * refused with an OperationOutcome, or the hostile payload is answered (accepted, or refused with a 4xx) within the
 * template budget's order of magnitude (5 s) instead of holding the gateway: a pattern run by a linear-time engine is
 * harmless, and need not be refused.
 */
async function hostileTemplate(
  ctx: Ctx,
  vendorKey: string,
  id: string,
  deviceMapping: unknown,
  hostile: unknown,
): Promise<{ refused: boolean; how: string }> {
  const sample = payload([{ time: recent(), spo2: 97, tag: 'aaa' }]);
  const reg = await call(ctx.ingest.url, 'POST', '/api/adapters', vendorKey, { id, deviceMapping, fhirMapping, samples: [sample] }, 120000);
  if (reg.status >= 400) {
    return {
      refused: reg.body?.resourceType === 'OperationOutcome',
      how: `registration ${reg.status}: ${diagnostics(reg.body).slice(0, 140)}`,
    };
  }
  const t0 = Date.now();
  const r = await call(ctx.ingest.url, 'POST', `/ingest/${id}`, vendorKey, hostile, 120000).catch((e: Error) => ({
    status: 0,
    body: { issue: [{ diagnostics: e.message }] },
  }));
  const ms = Date.now() - t0;
  return {
    refused: r.status > 0 && r.status < 500 && ms < 5000,
    how: `registered (${reg.status}); the hostile payload: ${r.status} after ${ms} ms ${diagnostics(r.body).slice(0, 100)}`,
  };
}

/** Opens `count` connections from `localAddress` that send nothing (some may be refused: that is the point). */
async function idleSockets(port: number, count: number, localAddress: string): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < count; i += 100) {
    const batch = await Promise.all(
      Array.from(
        { length: Math.min(100, count - i) },
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port, localAddress }, () => resolve(s));
            s.on('error', () => resolve(s));
          }),
      ),
    );
    out.push(...batch);
  }
  return out;
}

describe('fault suite: attacks (the gateway keeps answering /healthz; the hostile input is refused)', function () {
  this.timeout(600000);
  const rows: Row[] = [];
  after(() => {
    printAttacks();
    printTable('attacks: legitimate traffic', rows);
  });

  it('hostile vendor templates: a regex-literal JSONPath filter, matchesRegex ((a+))+$, 3,000 $.. templates', async () => {
    const failures: string[] = [];
    rows.push(
      await runScenario(
        'attacks: templates',
        {
          roles: ['all'],
          env: { ADMIN_API_KEY: ADMIN, ADAPTERS_POLL_INTERVAL_MS: '200' },
          httpHeaders: { authorization: `Bearer ${ADMIN}` },
        },
        async (ctx) => {
          assert.equal((await call(ctx.ingest.url, 'POST', '/api/vendors', ADMIN, { id: 'evil' })).status, 201);
          const vendorKey = (await call(ctx.ingest.url, 'POST', '/api/vendors/evil/credentials', ADMIN)).body.key!;
          await ctx.load(['http', 'mllp']);
          await ctx.acked(100, 10000);
          // 2^30 steps of backtracking for a backtracking engine (the issue: 19.7 s and 24.5 s for one payload).
          const evilTag = `${'a'.repeat(30)}!`;
          failures.push(
            ...(await attack(ctx, 'JSONPath filter with a regex literal', () =>
              hostileTemplate(
                ctx,
                vendorKey,
                'evil-regex',
                {
                  templateType: 'CollectionContent',
                  template: [jsonPathTemplate('$.Body.readings[?(/(a+)+$/.test(_$_v.tag) || @.spo2 != null)]')],
                },
                payload([{ time: recent(), spo2: 97, tag: evilTag }]),
              ),
            )),
          );
          failures.push(
            ...(await attack(ctx, "JMESPath matchesRegex '((a+))+$'", () =>
              hostileTemplate(
                ctx,
                vendorKey,
                'evil-jmes',
                {
                  templateType: 'CollectionContent',
                  template: [
                    {
                      templateType: 'CalculatedContent',
                      template: {
                        typeName: 'spo2',
                        defaultExpressionLanguage: 'JmesPath',
                        typeMatchExpression: { value: '$.Body.readings[*]', language: 'JsonPath' },
                        // The pattern runs on every token: the device id is the same either way.
                        deviceIdExpression:
                          "matchesRegex(to_string(matchedToken.tag), '((a+))+$') && matchedToken.serial || matchedToken.serial",
                        patientIdExpression: 'matchedToken.mrn',
                        timestampExpression: 'matchedToken.time',
                        values: [{ valueName: 'spo2', valueExpression: 'matchedToken.spo2', required: true }],
                      },
                    },
                  ],
                },
                payload([{ time: recent(), spo2: 97, tag: evilTag }]),
              ),
            )),
          );
          // 3,000 templates (about 1 MiB) and a 60 KB payload (the issue: 86 s for one payload).
          const many = {
            templateType: 'CollectionContent',
            template: Array.from({ length: 3000 }, (_, i) => jsonPathTemplate(`$..[?(@.spo2 != null && @.k${i} != 'x')]`)),
          };
          const big = payload(
            Array.from({ length: 600 }, (_, i) => ({ time: recent(), spo2: 90 + (i % 10), k0: 'y', pad: 'p'.repeat(60) })),
          );
          failures.push(
            ...(await attack(ctx, '3,000 $.. templates, 60 KB payload', () => hostileTemplate(ctx, vendorKey, 'evil-many', many, big))),
          );
        },
      ),
    );
    assert.deepEqual(failures, []);
  });

  it('MLLP: 1,000 idle sockets from one peer, a trickled frame, eight 1 MB frames of ~', async () => {
    const failures: string[] = [];
    rows.push(
      await runScenario(
        'attacks: MLLP',
        {
          roles: ['all'],
          env: {
            // The legitimate sender (127.0.0.1) and the 1 MB frames' peer are allowed; the idle and trickling peers are not.
            MLLP_ALLOWED_SENDERS: '*=127.0.0.1|127.0.0.4',
            // A short frame deadline so that the test is short (the idle timeout stays at its default: a byte a second,
            // or an idle socket, is well within it).
            // A global cap the 1,000 idle sockets exceed twice over, whatever the legitimate sender holds.
            MLLP_MAX_CONNECTIONS: '500',
            MLLP_FRAME_TIMEOUT_MS: '3000',
          },
        },
        async (ctx) => {
          await ctx.load(['http', 'mllp']);
          await ctx.acked(100, 10000);
          const port = ctx.ingest.mllpPort!;
          let idle: net.Socket[] = [];
          failures.push(
            ...(await attack(ctx, '1,000 idle sockets from one peer', async () => {
              idle = await idleSockets(port, 1000, '127.0.0.2');
              await sleep(500);
              const open = idle.filter((s) => !s.destroyed && s.readyState === 'open').length;
              // A legitimate sender that connects now (its existing connections would hide a full connection table).
              // Counted apart from the background load, whose connections were open before the attack.
              const own = new Ledger();
              const fresh = mllpLoad(own, () => port, { concurrency: 1 });
              const t0 = Date.now();
              while (own.stats.mllp.acked < 20 && Date.now() - t0 < 10000) await sleep(50);
              await fresh.stop();
              const answered = own.stats.mllp.acked;
              return {
                refused: answered >= 20,
                how: `${open} of 1,000 open after 0.5 s; a new legitimate connection had ${answered} messages acknowledged`,
              };
            })),
          );
          for (const s of idle) s.destroy();
          failures.push(
            ...(await attack(ctx, 'a frame trickled one byte a second', async () => {
              const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.3' });
              await new Promise((r) => s.once('connect', r));
              const closed = new Promise<number>((r) => s.once('close', () => r(Date.now())));
              s.on('error', () => undefined);
              const t0 = Date.now();
              const text = `\x0bMSH|^~\\&|TRICKLE|TRICKLE|||20261123000000||ORU^R01|T1|P|2.6\r${'x'.repeat(60)}`;
              let i = 0;
              const timer = setInterval(() => {
                if (!s.destroyed) s.write(text[i++ % text.length]);
              }, 1000);
              const at = await Promise.race([closed, sleep(15000).then(() => 0)]);
              clearInterval(timer);
              s.destroy();
              return {
                refused: at > 0,
                how: at ? `closed after ${((at - t0) / 1000).toFixed(1)} s (MLLP_FRAME_TIMEOUT_MS=3000)` : 'still open after 15 s',
              };
            })),
          );
          failures.push(
            ...(await attack(ctx, 'eight 1 MB frames of ~ at once', async () => {
              const frame = Buffer.concat([
                Buffer.from('\x0bMSH|^~\\&|BIG|BIG|GW|GW|20261123000000||ORU^R01^ORU_R01|BIG-1|P|2.6\rOBX|1|NM|150456^X^MDC||'),
                Buffer.alloc(1_000_000, '~'),
                Buffer.from('\r\x1c\r'),
              ]);
              const answers = await Promise.all(
                Array.from(
                  { length: 8 },
                  () =>
                    new Promise<string>((resolve) => {
                      const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.4' }, () => s.write(frame));
                      let out = '';
                      s.on('data', (b) => {
                        out += b.toString('latin1');
                        if (out.includes('\x1c\r')) s.destroy();
                      });
                      s.on('error', () => undefined);
                      s.on('close', () => resolve(/MSA\|([A-Z]{2})/.exec(out)?.[1] ?? 'closed'));
                      setTimeout(() => s.destroy(), 30000);
                    }),
                ),
              );
              return {
                refused: answers.every((a) => a !== 'AA' && a !== 'CA'),
                how: `answers: ${answers.join(' ')}`,
              };
            })),
          );
        },
      ),
    );
    assert.deepEqual(failures, []);
  });
});
