/**
 * Declarative adapters from a mappings folder: loaded and validated at start-up, each broken mapping reported with its
 * file and JSON path and left disabled (the gateway starts anyway), reloaded when the files change or on
 * POST /api/adapters/reload.
 */
import express, { type RequestHandler, type Router } from 'express';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../observability/logger.js';
import type { AdapterRegistry } from '../registry.js';
import { applyToRegistry, loadMappingsDir, watchMappingsDir, type LoadResult } from './index.js';
import { BUILT_IN_ADAPTERS } from '../registry.js';

export const SHIPPED_MAPPINGS_DIR = fileURLToPath(new URL('../../../mappings/', import.meta.url));

export interface MappingsFolderDeps {
  registry: AdapterRegistry;
  /** MAPPINGS_DIR, or the folder shipped with the gateway. */
  dir?: string;
  /** MAPPINGS_WATCH: reload when the files change. */
  watch: boolean;
  log: Logger;
  /** Access checks: reload (admin), read the load report (operators, vendors). */
  admin: RequestHandler;
  readers: RequestHandler;
}

export interface MappingsFolder {
  router: Router;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Loads the folder at once (its adapters are registered before this returns); `start` watches it. */
export function mappingsFolder(deps: MappingsFolderDeps): MappingsFolder {
  const { registry, log } = deps;
  const dir = deps.dir ?? SHIPPED_MAPPINGS_DIR;
  let ids = new Set<string>();
  // Ids that belong to others (built-ins, HL7v2, plugins, registered adapters) are never taken over by a folder.
  const reserved = () =>
    new Set(
      registry
        .list()
        .map((a) => a.id)
        .filter((id) => !ids.has(id))
        .concat(
          BUILT_IN_ADAPTERS.map((a) => a.id),
          ['hl7v2'],
        ),
    );
  let last: { at: string; loaded: string[]; errors: { file: string; path?: string; message: string }[] } = {
    at: '',
    loaded: [],
    errors: [],
  };
  const apply = (result: LoadResult) => {
    const applied = applyToRegistry(registry, result, ids, reserved());
    ids = applied.ids;
    const errors = [...result.errors, ...applied.errors];
    last = { at: new Date().toISOString(), loaded: [...ids].sort(), errors };
    for (const e of errors)
      log.error({ file: e.file, path: e.path, error: e.message }, 'mapping disabled: fix the file and it is reloaded');
    log.info({ dir, adapters: last.loaded, errors: errors.length }, 'mappings loaded');
  };
  apply(loadMappingsDir(dir));
  let watcher: { close(): void } | undefined;
  const router = express.Router();
  router.post('/api/adapters/reload', deps.admin, (_req, res) => {
    apply(loadMappingsDir(dir));
    res.json(last);
  });
  router.get('/api/adapters/mappings', deps.readers, (_req, res) => void res.json({ dir, ...last }));
  return {
    router,
    start: async () => {
      if (deps.watch && !watcher) {
        watcher = watchMappingsDir(dir, apply, { onError: (err: unknown) => log.warn({ error: String(err) }, 'mappings watcher error') });
      }
    },
    stop: async () => {
      watcher?.close();
      watcher = undefined;
    },
  };
}
