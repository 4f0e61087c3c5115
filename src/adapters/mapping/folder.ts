/**
 * Declarative adapters from a mappings folder: loaded and validated at start-up, each broken mapping reported with its
 * file and JSON path and left disabled (the gateway starts anyway), reloaded when the files change or on
 * POST /api/adapters/reload.
 */
import express from 'express';
import { fileURLToPath } from 'node:url';
import type { Extension, ExtensionContext } from '../../app/gateway.js';
import { applyToRegistry, loadMappingsDir, watchMappingsDir, type LoadResult } from './index.js';
import { BUILT_IN_ADAPTERS } from '../registry.js';

export const SHIPPED_MAPPINGS_DIR = fileURLToPath(new URL('../../../mappings/', import.meta.url));

export function mappingsExtension(): (ctx: ExtensionContext) => Promise<Extension> {
  return async (ctx) => {
    const dir = (ctx.config.raw.get('MAPPINGS_DIR') as string | undefined) ?? SHIPPED_MAPPINGS_DIR;
    let ids = new Set<string>();
    // Ids that belong to others (built-ins, HL7v2, plugins, registered adapters) are never taken over by a folder.
    const reserved = () => new Set(ctx.registry.list().map((a) => a.id).filter((id) => !ids.has(id)).concat(BUILT_IN_ADAPTERS.map((a) => a.id), ['hl7v2']));
    let last: { at: string; loaded: string[]; errors: { file: string; path?: string; message: string }[] } = { at: '', loaded: [], errors: [] };
    const apply = (result: LoadResult) => {
      const applied = applyToRegistry(ctx.registry, result, ids, reserved());
      ids = applied.ids;
      const errors = [...result.errors, ...applied.errors];
      last = { at: new Date().toISOString(), loaded: [...ids].sort(), errors };
      for (const e of errors) ctx.log.error({ file: e.file, path: e.path, error: e.message }, 'mapping disabled: fix the file and it is reloaded');
      ctx.log.info({ dir, adapters: last.loaded, errors: errors.length }, 'mappings loaded');
    };
    apply(loadMappingsDir(dir));
    let watcher: { close(): void } | undefined;
    const router = express.Router();
    router.post('/api/adapters/reload', ctx.requireRole(), (_req, res) => {
      apply(loadMappingsDir(dir));
      res.json(last);
    });
    router.get('/api/adapters/mappings', ctx.requireRole('operator', 'vendor'), (_req, res) => void res.json({ dir, ...last }));
    return {
      routers: [router],
      start: async () => {
        if (ctx.config.raw.get('MAPPINGS_WATCH') !== false) {
          watcher = watchMappingsDir(dir, apply, { onError: (err: unknown) => ctx.log.warn({ error: String(err) }, 'mappings watcher error') });
        }
      },
      stop: async () => watcher?.close(),
    };
  };
}
