/**
 * TypeScript / JavaScript adapter plugins: modules that export adapters made with `definePlugin` (sdk.ts), loaded with
 * dynamic import() from a directory (PLUGINS_DIR) or from installed npm packages (PLUGIN_PACKAGES), checked on their
 * own samples, and registered in the one adapter registry (registry.register), like built-ins and mappings.
 *
 * A plugin module exports its adapter(s) as the default export (one adapter or an array) or as `adapters`. Plugins may
 * be JavaScript (.js / .mjs) or TypeScript (.ts / .mts): a TypeScript file the running Node cannot import (the compiled
 * gateway, `node dist/main.js`) is imported through tsx's scoped loader (`tsImport` of 'tsx/esm/api', loaded only then),
 * so the same plugin works in `npm run dev` and in production. A plugin anywhere on disk may import the SDK by the
 * package name, `iomt-fhir-gateway/sdk`: a resolve hook (module.register) maps that name to the running gateway's own
 * SDK module, so the plugin needs no node_modules of its own and shares the gateway's classes. A plugin that fails to
 * load, defines no adapter, takes an id already in use, or fails one of its samples is reported (file and reason) and
 * left out; the gateway starts anyway.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { Resource } from 'fhir/r4';
import type { Config } from '../config/index.js';
import { issue, GatewayError } from '../core/errors.js';
import { validate } from '../fhir/validate.js';
import { TranslationError, type DeviceAdapter, type InboundMessage, type Reading, type TranslationContext } from '../core/contract.js';
import { DRY_RUN_CONTEXT, DRY_RUN_RECEIVED_AT } from './mapping/validate-mapping.js';
import { BUILT_IN_ADAPTERS } from './registry.js';
import { isPluginAdapter, PLUGIN_API_VERSION, PLUGIN_MARK, type PluginAdapter } from './sdk.js';

export { isPluginAdapter } from './sdk.js';

/** Config keys of plugins and the registration API (adapters/config.ts). */
export { PLUGIN_KEYS } from './config.js';

export interface PluginLoadError {
  /** The file, folder or package. */
  source: string;
  message: string;
}

export interface PluginLoadResult {
  adapters: PluginAdapter[];
  errors: PluginLoadError[];
}

const MODULE_EXT = /\.(m?js|cjs)$/;
const TS_EXT = /\.(m?ts|cts)$/;

/** The module file of a plugin directory entry, or undefined when the entry is not a plugin. */
function entryModule(full: string): string | undefined {
  const st = statSync(full);
  if (st.isFile()) {
    const base = path.basename(full);
    if (/\.d\.[mc]?ts$/.test(base) || /\.test\./.test(base)) return undefined;
    return MODULE_EXT.test(base) || TS_EXT.test(base) ? full : undefined;
  }
  if (!st.isDirectory()) return undefined;
  const pkg = path.join(full, 'package.json');
  if (existsSync(pkg)) {
    const main = (JSON.parse(readFileSync(pkg, 'utf8')) as { main?: string; exports?: unknown }).main;
    if (main) return path.join(full, main);
  }
  for (const name of ['index.js', 'index.mjs', 'index.ts', 'index.mts'])
    if (existsSync(path.join(full, name))) return path.join(full, name);
  return undefined;
}

/** The adapters a plugin module exports (default: one or an array; or `adapters`). */
function adaptersOf(mod: Record<string, unknown>): unknown[] {
  const found: unknown[] = [];
  for (const v of [mod.default, mod.adapters]) {
    if (Array.isArray(v)) found.push(...v);
    else if (v !== undefined) found.push(v);
  }
  return found;
}

/**
 * Wraps a plugin so that what it throws reaches the pipeline as the gateway's own TranslationError: a TranslationError
 * of another copy of the SDK keeps its OperationOutcome; anything else (a bug in the plugin, a TypeError on odd input)
 * refuses the message with 422 and the error's name, never a stack trace.
 */
function guarded(a: PluginAdapter, source: string): PluginAdapter {
  const translate = (message: InboundMessage, context: TranslationContext): Reading[] => {
    try {
      const out = a.translate(message, context);
      if (!Array.isArray(out)) throw TranslationError.of(`plugin '${a.id}' returned no translation list`);
      return out;
    } catch (e) {
      if (e instanceof GatewayError) throw e;
      const like = e as { name?: string; outcome?: { issue?: unknown[] } };
      if (like?.name === 'TranslationError' && Array.isArray(like.outcome?.issue)) throw new TranslationError(like.outcome.issue as never);
      throw new TranslationError([
        issue('exception', `plugin '${a.id}' could not translate this payload (it threw ${like?.name ?? typeof e})`),
      ]);
    }
  };
  return Object.freeze({ ...a, translate, source, [PLUGIN_MARK]: true as const });
}

/** Translates each sample of a plugin and validates every resource; returns the problems. */
export function checkPluginSamples(a: PluginAdapter, context: TranslationContext = DRY_RUN_CONTEXT): string[] {
  const problems: string[] = [];
  // A plugin goes live only after its own samples have shown its codes correct: no samples, no proof.
  if (!a.samples?.length)
    problems.push('the plugin has no samples: at least one sample payload is required, and every sample must translate and validate');
  for (const s of a.samples ?? []) {
    try {
      const translations = a.translate(
        { body: s.body, channel: 'sample', receivedAt: DRY_RUN_RECEIVED_AT, attributes: s.attributes },
        context,
      );
      if (!translations.some((t) => t.observations.length || t.devices.length)) problems.push(`sample '${s.name}': yields no resources`);
      translations.forEach((t, ti) => {
        const resources: Resource[] = [...t.devices, ...t.observations, ...(t.patients ?? [])];
        for (const r of resources)
          for (const i of validate(r))
            problems.push(
              `sample '${s.name}': translation[${ti}] ${r.resourceType}${i.expression?.[0] ? ` ${i.expression[0]}` : ''}: ${i.diagnostics ?? i.code}`,
            );
      });
    } catch (e) {
      const oe = e as GatewayError;
      problems.push(
        `sample '${s.name}': refused: ${oe.outcome ? oe.outcome.issue.map((i) => `${i.expression?.[0] ? i.expression[0] + ' ' : ''}${i.diagnostics ?? i.code}`).join('; ') : String(e)}`,
      );
    }
  }
  return problems;
}

/** The package name plugins import the SDK by (`import { definePlugin } from 'iomt-fhir-gateway/sdk'`). */
export const SDK_SPECIFIER = 'iomt-fhir-gateway/sdk';

/** The SDK module of this very gateway: src/adapters/sdk.ts from source (tsx), dist/adapters/sdk.js when compiled. */
const OWN_SDK_URL = new URL(import.meta.url.endsWith('.ts') ? './sdk.ts' : './sdk.js', import.meta.url).href;

/**
 * Resolve hook, run by Node's module-hooks thread: the gateway's package specifiers go to the gateway's own modules,
 * whoever imports them (a plugin in a folder without node_modules, or with its own copy of the package: one SDK, the
 * running one). Plain JavaScript, registered as a data: URL, so that it loads the same way from source and compiled.
 */
const RESOLVE_HOOK = `
let targets = {};
export async function initialize(data) { targets = data.targets; }
export async function resolve(specifier, context, nextResolve) {
  const url = targets[specifier];
  return url ? { url, format: 'module', shortCircuit: true } : nextResolve(specifier, context);
}
`;

let hookRegistrations = 0;

/**
 * Adds the resolve hook to the chain. Hooks registered later run first: it is registered before the first plugin is
 * imported, and again after tsx's own hooks (see typeScriptImport) so that tsx does not give the SDK a copy of its own.
 */
function registerResolveHook(): void {
  hookRegistrations += 1;
  register(`data:text/javascript,${encodeURIComponent(`${RESOLVE_HOOK}// ${hookRegistrations}\n`)}`, {
    data: { targets: { [SDK_SPECIFIER]: OWN_SDK_URL } },
  });
}

let typeScriptImporter: Promise<(specifier: string, parentURL: string) => Promise<unknown>> | undefined;

/** tsx's loader in a namespace of its own (loaded on first use): TypeScript plugins compiled as they are imported. */
function typeScriptImport(url: string): Promise<unknown> {
  typeScriptImporter ??= import('tsx/esm/api').then(({ register: registerTsx }) => {
    const api = registerTsx({ namespace: 'iomt-gateway-plugins' });
    registerResolveHook();
    return api.import;
  });
  return typeScriptImporter.then((load) => load(url, import.meta.url));
}

/**
 * Imports a plugin module. A TypeScript file the running Node cannot import (the compiled gateway) is imported through
 * tsx's scoped loader: the plugin's own graph is compiled on the fly, the rest of the process is untouched.
 */
async function importModule(url: string): Promise<Record<string, unknown>> {
  if (!hookRegistrations) registerResolveHook();
  try {
    return (await import(url)) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_UNKNOWN_FILE_EXTENSION' || !TS_EXT.test(url.split('?')[0])) throw e;
    return (await typeScriptImport(url)) as Record<string, unknown>;
  }
}

async function importPlugin(specifier: string, source: string, result: PluginLoadResult, context: TranslationContext): Promise<void> {
  let mod: Record<string, unknown>;
  try {
    mod = await importModule(specifier);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // require() (a file loaded as CommonJS) passes no module hook, and the SDK is an ES module: say how to make it one.
    const hint =
      err.code === 'MODULE_NOT_FOUND' && err.message.includes(SDK_SPECIFIER)
        ? ' (the plugin was loaded as CommonJS: name it .mjs or .mts, or give its folder a package.json with "type": "module")'
        : '';
    result.errors.push({ source, message: `cannot import: ${err.message.split('\n')[0]}${hint}` });
    return;
  }
  const found = adaptersOf(mod);
  if (!found.length) {
    result.errors.push({ source, message: 'exports no adapter: export default definePlugin({ ... }) (or an array of them)' });
    return;
  }
  for (const a of found) {
    if (!isPluginAdapter(a)) {
      result.errors.push({ source, message: 'an export is not made with definePlugin() from the plugin SDK' });
      continue;
    }
    if (Math.floor(a.apiVersion) !== PLUGIN_API_VERSION) {
      result.errors.push({
        source,
        message: `plugin '${a.id}' is built for plugin API ${a.apiVersion}; this gateway speaks ${PLUGIN_API_VERSION}`,
      });
      continue;
    }
    const adapter = guarded(a, source);
    const problems = checkPluginSamples(adapter, context);
    if (problems.length) {
      for (const p of problems) result.errors.push({ source, message: `plugin '${a.id}' not loaded: ${p}` });
      continue;
    }
    if (result.adapters.some((x) => x.id === a.id)) {
      result.errors.push({ source, message: `plugin id '${a.id}' is defined twice` });
      continue;
    }
    result.adapters.push(adapter);
  }
}

export interface PluginSources {
  /** PLUGINS_DIR */
  dir?: string;
  /** PLUGIN_PACKAGES, resolved from `resolveFrom` (default: the working directory). */
  packages?: readonly string[];
  resolveFrom?: string;
  context?: TranslationContext;
}

/** Loads every plugin of a directory and of a package list. Never throws: problems are in `errors`. */
export async function loadPlugins(sources: PluginSources): Promise<PluginLoadResult> {
  const result: PluginLoadResult = { adapters: [], errors: [] };
  const context = sources.context ?? DRY_RUN_CONTEXT;
  if (sources.dir) {
    let names: string[] = [];
    try {
      names = readdirSync(sources.dir)
        .filter((n) => !n.startsWith('.') && !n.startsWith('_'))
        .sort();
    } catch (e) {
      result.errors.push({
        source: sources.dir,
        message: `cannot read the plugins folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      });
    }
    for (const name of names) {
      const full = path.resolve(sources.dir, name);
      let file: string | undefined;
      try {
        file = entryModule(full);
      } catch (e) {
        result.errors.push({ source: full, message: `cannot read: ${(e as Error).message}` });
        continue;
      }
      if (file) await importPlugin(pathToFileURL(file).href, path.join(sources.dir, name), result, context);
    }
  }
  if (sources.packages?.length) {
    const require = createRequire(path.join(path.resolve(sources.resolveFrom ?? process.cwd()), 'noop.js'));
    for (const pkg of sources.packages) {
      let resolved: string;
      try {
        resolved = pathToFileURL(require.resolve(pkg)).href;
      } catch {
        resolved = pkg; // ESM-only packages without a require condition: let import() resolve the bare name
      }
      await importPlugin(resolved, pkg, result, context);
    }
  }
  return result;
}

/** The plugin sources a configuration names (PLUGINS_DIR, PLUGIN_PACKAGES). */
export function pluginSources(config: Pick<Config, 'raw' | 'deviceIdentifierSystem' | 'patientIdentifierSystem'>): PluginSources {
  const dir = config.raw.get('PLUGINS_DIR') as string | undefined;
  const packages = (config.raw.get('PLUGIN_PACKAGES') as string[] | undefined) ?? [];
  return {
    dir,
    packages,
    context: { deviceIdentifierSystem: config.deviceIdentifierSystem, patientIdentifierSystem: config.patientIdentifierSystem },
  };
}

export interface RegistryLike {
  register(adapter: DeviceAdapter): void;
  get(id: string): DeviceAdapter | undefined;
}

/**
 * Loads the configured plugins into a registry (for the CLI: `translate --adapter <plugin id>`, and app/features.ts).
 * A plugin whose id is taken (built-in, hl7v2, an adapter already registered) is refused and reported.
 */
export async function loadPluginsInto(
  registry: RegistryLike,
  config: Pick<Config, 'raw' | 'deviceIdentifierSystem' | 'patientIdentifierSystem'>,
): Promise<{ ids: string[]; errors: PluginLoadError[] }> {
  const sources = pluginSources(config);
  if (!sources.dir && !sources.packages?.length) return { ids: [], errors: [] };
  const loaded = await loadPlugins(sources);
  const reserved = new Set(BUILT_IN_ADAPTERS.map((a) => a.id).concat(['hl7v2']));
  const ids: string[] = [];
  const errors = [...loaded.errors];
  for (const a of loaded.adapters) {
    if (reserved.has(a.id) || registry.get(a.id)) {
      errors.push({
        source: (a as { source?: string }).source ?? a.id,
        message: `plugin id '${a.id}' is already taken by another adapter; rename the plugin`,
      });
      continue;
    }
    registry.register(a);
    ids.push(a.id);
  }
  return { ids, errors };
}
