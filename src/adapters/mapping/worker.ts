/**
 * A worker thread of the template pool (pool.ts): compiles declarative mappings it is sent (cached by key) and runs
 * them over messages, so that a costly template blocks this thread, never the gateway's event loop. The pool
 * terminates a worker whose message overruns the budget and starts a fresh one.
 *
 * Messages in:  { id, key, source?, message, context }    (source: the mapping, sent when this worker lacks it)
 * Messages out: { id, ok: true, translations, origins }   (origins: per reading, the FHIR template index per Observation)
 *               { id, ok: false, issues }                 (the mapping refused the message: a TranslationError)
 *               { id, ok: false, missing: true }          (this worker does not hold `key`: send the source)
 *               { id, ok: false, error }                  (anything else)
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GatewayError } from '../../core/errors.js';
import { configureTemplateLimits, type TemplateLimits } from '../limits.js';
import { type CompiledMapping, compileMapping, runMapping } from './adapter.js';
import { MappingError } from './issues.js';
import type { PoolRequest, PoolResponse } from './pool.js';

const CACHE_SIZE = 128;

if (parentPort) {
  const port = parentPort;
  configureTemplateLimits((workerData as { limits?: TemplateLimits } | undefined)?.limits ?? {});
  const cache = new Map<string, CompiledMapping>();
  port.on('message', (req: PoolRequest) => {
    let res: PoolResponse;
    try {
      let mapping = cache.get(req.key);
      if (!mapping && req.source) {
        const compiled = compileMapping(req.source.deviceMapping, req.source.fhirMapping, req.source.files);
        if (!compiled.mapping) throw new MappingError(compiled.issues);
        mapping = compiled.mapping;
        if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
        cache.set(req.key, mapping);
      }
      if (!mapping) res = { id: req.id, ok: false, missing: true };
      else {
        const m = mapping;
        const run = runMapping(m, req.message, req.context, req.source?.vendor ?? req.vendor);
        const origins = run.translations.map((t) =>
          t.observations.map((o) => {
            const origin = run.origins.get(o);
            return origin ? m.fhirTemplates.indexOf(origin) : -1;
          }),
        );
        res = { id: req.id, ok: true, translations: run.translations, origins };
      }
    } catch (e) {
      if (e instanceof GatewayError) res = { id: req.id, ok: false, status: e.status, issues: e.outcome.issue };
      else res = { id: req.id, ok: false, error: `${(e as Error)?.name ?? 'Error'}: ${(e as Error)?.message ?? String(e)}` };
    }
    port.postMessage(res);
  });
  port.postMessage({ ready: true });
}
