/**
 * Declarative templates: what evaluating them off the event loop costs (issue 13), in one run.
 *
 *   npx tsx bench/templates.ts [--messages 5000] [--concurrency 16] [--workers 2]
 *
 * Translates the sample of mappings/pulse-oximeter (a typical mapping message) three ways and prints throughput and
 * p50 / p99 per message: in the event loop (TEMPLATE_WORKERS=0), through the worker pool one message at a time
 * (latency), and through the pool with --concurrency messages in flight (throughput). Then the cost of RE2 against
 * JavaScript's RegExp for a typical matchesRegex() pattern.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configureTemplateLimits, DEFAULT_TEMPLATE_LIMITS } from '../src/adapters/limits.js';
import { loadMappingDir, runMapping, runMappingBounded } from '../src/adapters/mapping/index.js';
import { compileExpression } from '../src/adapters/mapping/expressions.js';
import { closeTemplatePool, templatePool } from '../src/adapters/mapping/pool.js';
import { compileRegex } from '../src/adapters/mapping/regex.js';
import { DRY_RUN_CONTEXT } from '../src/adapters/mapping/validate-mapping.js';
import type { InboundMessage } from '../src/core/contract.js';
import { opt, ROOT, run } from './common.js';

const MESSAGES = opt('messages', 5000);
const CONCURRENCY = opt('concurrency', 16);
const WORKERS = opt('workers', DEFAULT_TEMPLATE_LIMITS.workers);

function pct(sorted: number[], p: number): string {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))].toFixed(3);
}

function report(label: string, ms: number[], wallMs: number): void {
  const sorted = [...ms].sort((a, b) => a - b);
  const rate = Math.round((ms.length / wallMs) * 1000);
  console.log(`${label.padEnd(44)} ${String(rate).padStart(7)} msg/s   p50 ${pct(sorted, 50)} ms   p99 ${pct(sorted, 99)} ms`);
}

run(async () => {
  const dir = join(ROOT, 'mappings/pulse-oximeter');
  const loaded = loadMappingDir(dir);
  if (!loaded.adapter) throw new Error(`pulse-oximeter mapping did not load: ${JSON.stringify(loaded.issues)}`);
  const adapter = loaded.adapter;
  const sampleFile = join(dir, 'samples', 'spot-check.json');
  const body = JSON.parse(readFileSync(sampleFile, 'utf8')) as unknown;
  const message = (i: number): InboundMessage => ({
    body,
    channel: 'http',
    receivedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
  });
  console.log(
    `mapping pulse-oximeter, ${MESSAGES} messages of ${JSON.stringify(body).length} bytes; workers ${WORKERS}, concurrency ${CONCURRENCY}`,
  );

  // Warm-up (JIT, caches), then in the event loop.
  for (let i = 0; i < 500; i++) runMapping(adapter.mapping, message(i), DRY_RUN_CONTEXT);
  {
    const ms: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < MESSAGES; i++) {
      const t = performance.now();
      runMapping(adapter.mapping, message(i), DRY_RUN_CONTEXT);
      ms.push(performance.now() - t);
    }
    report('in the event loop (TEMPLATE_WORKERS=0)', ms, performance.now() - t0);
  }

  configureTemplateLimits({ workers: WORKERS });
  const pool = templatePool();
  pool.warm();
  for (let i = 0; i < 500; i++) await runMappingBounded(adapter.id, adapter.bounded, message(i), DRY_RUN_CONTEXT);
  {
    const ms: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < MESSAGES; i++) {
      const t = performance.now();
      await runMappingBounded(adapter.id, adapter.bounded, message(i), DRY_RUN_CONTEXT);
      ms.push(performance.now() - t);
    }
    report(`worker pool, one message at a time`, ms, performance.now() - t0);
  }
  {
    const ms: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < MESSAGES) {
          const i = next++;
          const t = performance.now();
          await runMappingBounded(adapter.id, adapter.bounded, message(i), DRY_RUN_CONTEXT);
          ms.push(performance.now() - t);
        }
      }),
    );
    report(`worker pool, ${CONCURRENCY} in flight`, ms, performance.now() - t0);
  }
  await closeTemplatePool();

  // RE2 against RegExp, for a typical matchesRegex() pattern, and for a whole JMESPath expression using it.
  const values = Array.from({ length: 1000 }, (_, i) => `OX-${100000 + i}`);
  const pattern = '^OX-[0-9]{6}$';
  const re2 = compileRegex(pattern);
  const js = new RegExp(pattern, 'u');
  const N = 200_000;
  const time = (f: (s: string) => boolean) => {
    const t = performance.now();
    for (let i = 0; i < N; i++) f(values[i % values.length]);
    return ((performance.now() - t) * 1e6) / N;
  };
  time((s) => re2.test(s));
  time((s) => js.test(s));
  console.log(
    `matchesRegex '${pattern}': RE2 ${time((s) => re2.test(s)).toFixed(0)} ns/match, RegExp ${time((s) => js.test(s)).toFixed(0)} ns/match`,
  );
  const expr = compileExpression(`matchesRegex(deviceId, '${pattern}')`, 'JmesPath');
  const plain = compileExpression(`starts_with(deviceId, 'OX-')`, 'JmesPath');
  const per = (e: typeof expr) => {
    const t = performance.now();
    for (let i = 0; i < N; i++) e.selectTokens({ deviceId: values[i % values.length] });
    return ((performance.now() - t) * 1e6) / N;
  };
  per(expr);
  console.log(`a JMESPath expression: matchesRegex() ${per(expr).toFixed(0)} ns, starts_with() ${per(plain).toFixed(0)} ns per evaluation`);
});
