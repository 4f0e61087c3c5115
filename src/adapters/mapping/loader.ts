/**
 * The mappings folder: one declarative adapter per sub-folder.
 *
 *   mappings/<id>/devicecontent.json   device mapping (iomt-fhir CollectionContent)
 *   mappings/<id>/fhirmapping.json     FHIR mapping (iomt-fhir CollectionFhir)
 *   mappings/<id>/adapter.json         optional: { "description": "...", "vendor": "..." }
 *   mappings/<id>/samples/*.json       sample payloads: each must translate, and every resource must validate
 *
 * A broken mapping (unreadable file, template error, terminology error, a sample that fails) disables only that
 * adapter and is reported with file and JSON path; loading never throws. `watchMappingsDir` reloads on change.
 */
import { existsSync, readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { compileMapping, createMappingAdapter, DEVICE_MAPPING_FILE, FHIR_MAPPING_FILE, type MappingAdapter } from './adapter.js';
import { errorsOf, isObject, MappingError, type MappingIssue } from './issues.js';
import { checkSamples, type SamplePayload, type SampleResult } from './validate-mapping.js';

export const ADAPTER_FILE = 'adapter.json';
export const SAMPLES_DIR = 'samples';
/** Same rule as the registry's adapter ids (src/adapters/registry.ts). */
const ADAPTER_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface LoadError {
  file: string;
  path: string;
  message: string;
}

export interface LoadResult {
  adapters: MappingAdapter[];
  /** Problems that disabled an adapter (or the folder). */
  errors: LoadError[];
  /** Problems that did not. */
  warnings: LoadError[];
}

export interface MappingDirResult {
  id: string;
  adapter?: MappingAdapter;
  issues: MappingIssue[];
  samples: SampleResult[];
}

function readJson(file: string, label: string, issues: MappingIssue[]): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    issues.push({
      file: label,
      path: '$',
      message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      severity: 'error',
    });
    return undefined;
  }
  try {
    return JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (e) {
    issues.push({ file: label, path: '$', message: `not valid JSON: ${(e as Error).message}`, severity: 'error' });
    return undefined;
  }
}

/**
 * Loads one mapping folder (its name is the adapter id). `label` prefixes file names in messages (default: the
 * folder name, so messages read "acme-oximeter/devicecontent.json $.template[0]...").
 */
export function loadMappingDir(dir: string, label = path.basename(path.resolve(dir))): MappingDirResult {
  const id = path.basename(path.resolve(dir));
  const issues: MappingIssue[] = [];
  const f = (name: string) => `${label}/${name}`;
  try {
    if (!ADAPTER_ID.test(id))
      issues.push({ file: label, path: '$', message: `folder name '${id}' is not a valid adapter id (${ADAPTER_ID})`, severity: 'error' });
    const device = readJson(path.join(dir, DEVICE_MAPPING_FILE), f(DEVICE_MAPPING_FILE), issues);
    const fhir = readJson(path.join(dir, FHIR_MAPPING_FILE), f(FHIR_MAPPING_FILE), issues);
    let description = `Declarative mapping '${id}'`;
    let vendor: string | undefined;
    if (existsSync(path.join(dir, ADAPTER_FILE))) {
      const meta = readJson(path.join(dir, ADAPTER_FILE), f(ADAPTER_FILE), issues);
      if (meta !== undefined && !isObject(meta))
        issues.push({ file: f(ADAPTER_FILE), path: '$', message: 'must be an object { "description", "vendor" }', severity: 'error' });
      else if (isObject(meta)) {
        for (const k of ['description', 'vendor'] as const) {
          if (meta[k] !== undefined && typeof meta[k] !== 'string')
            issues.push({ file: f(ADAPTER_FILE), path: `$.${k}`, message: 'must be a string', severity: 'error' });
        }
        if (typeof meta.description === 'string' && meta.description.trim()) description = meta.description;
        if (typeof meta.vendor === 'string' && meta.vendor.trim()) vendor = meta.vendor;
      }
    }
    const samples: SamplePayload[] = [];
    const sdir = path.join(dir, SAMPLES_DIR);
    if (existsSync(sdir) && statSync(sdir).isDirectory()) {
      for (const name of readdirSync(sdir)
        .filter((n) => n.endsWith('.json'))
        .sort()) {
        const label2 = f(`${SAMPLES_DIR}/${name}`);
        const body = readJson(path.join(sdir, name), label2, issues);
        if (body !== undefined) samples.push({ file: label2, body });
      }
    }
    if (device === undefined || fhir === undefined || errorsOf(issues).length) {
      if (device !== undefined && fhir !== undefined) {
        const { issues: more } = compileMapping(device, fhir, { deviceFile: f(DEVICE_MAPPING_FILE), fhirFile: f(FHIR_MAPPING_FILE) });
        issues.push(...more);
      }
      return { id, issues, samples: [] };
    }
    const files = { deviceFile: f(DEVICE_MAPPING_FILE), fhirFile: f(FHIR_MAPPING_FILE) };
    let adapter: MappingAdapter;
    try {
      adapter = createMappingAdapter({ id, description, vendor, deviceMapping: device, fhirMapping: fhir, files });
    } catch (e) {
      if (!(e instanceof MappingError)) throw e;
      issues.push(...e.issues);
      return { id, issues, samples: [] };
    }
    issues.push(...adapter.warnings);
    const results = checkSamples(adapter.mapping, samples, { fhirFile: FHIR_MAPPING_FILE, file: label, vendor });
    for (const r of results) issues.push(...r.issues);
    if (errorsOf(issues).length) return { id, issues, samples: results };
    return { id, adapter, issues, samples: results };
  } catch (e) {
    issues.push({ file: label, path: '$', message: `could not load: ${(e as Error).message}`, severity: 'error' });
    return { id, issues, samples: [] };
  }
}

/** True when `dir` itself is a mapping folder (holds a devicecontent.json or fhirmapping.json). */
export function isMappingDir(dir: string): boolean {
  return existsSync(path.join(dir, DEVICE_MAPPING_FILE)) || existsSync(path.join(dir, FHIR_MAPPING_FILE));
}

/** Loads every mapping folder under `dir` (sub-folders starting with '.' or '_' are skipped). Never throws. */
export function loadMappingsDir(dir: string): LoadResult {
  const result: LoadResult = { adapters: [], errors: [], warnings: [] };
  let names: string[];
  try {
    names = readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && !d.name.startsWith('.') && !d.name.startsWith('_'))
      .map((d) => d.name)
      .sort();
  } catch (e) {
    result.errors.push({
      file: dir,
      path: '$',
      message: `cannot read the mappings folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    });
    return result;
  }
  for (const name of names) {
    const r = loadMappingDir(path.join(dir, name), name);
    if (r.adapter) result.adapters.push(r.adapter);
    for (const i of r.issues)
      (i.severity === 'error' ? result.errors : result.warnings).push({ file: i.file ?? name, path: i.path, message: i.message });
  }
  return result;
}

export interface MappingsWatcher {
  close(): void;
}

/**
 * Watches the mappings folder and calls `onReload` with a fresh LoadResult after changes settle (debounced), so
 * adapters can be re-registered without a restart. The callback's errors are passed to `onError`, never thrown.
 */
export function watchMappingsDir(
  dir: string,
  onReload: (result: LoadResult) => void,
  opts: { debounceMs?: number; onError?: (err: unknown) => void } = {},
): MappingsWatcher {
  const debounceMs = opts.debounceMs ?? 300;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const fire = () => {
    timer = undefined;
    if (closed) return;
    try {
      onReload(loadMappingsDir(dir));
    } catch (e) {
      opts.onError?.(e);
    }
  };
  const schedule = () => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(fire, debounceMs);
  };
  let watcher: FSWatcher;
  try {
    watcher = watch(dir, { recursive: true }, schedule);
  } catch {
    try {
      watcher = watch(dir, schedule); // platforms without recursive watching: top level only
    } catch (e) {
      // A folder that does not exist (yet) is reported, not fatal: POST /api/adapters/reload reads it when it does.
      opts.onError?.(e);
      return { close() {} } as MappingsWatcher;
    }
  }
  watcher.on('error', (e) => opts.onError?.(e));
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      watcher.close();
    },
  };
}

/** The part of AdapterRegistry (src/adapters/registry.ts) a reload needs. */
export interface RegistryLike {
  register(adapter: MappingAdapter): void;
  unregister(id: string): boolean;
}

/**
 * Applies a (re)load to a registry: registers every loaded mapping adapter and unregisters the mapping ids of the
 * previous load that are gone or now broken (a broken mapping is disabled, not kept in its last good state). Ids in
 * `reserved` (built-in adapters, plugins) are never replaced by a mapping; such a mapping is reported in the returned
 * errors. Returns the ids now registered from mappings, to pass as `previous` next time.
 */
export function applyToRegistry(
  registry: RegistryLike,
  result: LoadResult,
  previous: ReadonlySet<string> = new Set(),
  reserved: ReadonlySet<string> = new Set(),
): { ids: Set<string>; errors: LoadError[] } {
  const ids = new Set<string>();
  const errors: LoadError[] = [];
  for (const a of result.adapters) {
    if (reserved.has(a.id)) {
      errors.push({ file: a.id, path: '$', message: `adapter id '${a.id}' is taken by a built-in adapter or plugin; rename the folder` });
      continue;
    }
    registry.register(a);
    ids.add(a.id);
  }
  for (const id of previous) if (!ids.has(id) && !reserved.has(id)) registry.unregister(id);
  return { ids, errors };
}
