/**
 * The layer rules of src/ (docs/architecture.md), checked on every import of every .ts file under src/. A file may
 * import only from its own layer or a lower one:
 *
 *   layer 7   src/main.ts
 *   layer 6   app/
 *   layer 5   channels/  devices/  registration/
 *   layer 4   access/
 *   layer 3   audit/  pipeline/  delivery/
 *   layer 2   adapters/  hl7v2/  sandbox/
 *   layer 1   queue/  fhir/  http/  ehr-auth/
 *   layer 0   core/  config/  observability/
 *
 * and: core/ imports nothing of src/ outside core/; nothing but src/main.ts imports app/; delivery/ imports nothing
 * from devices/, adapters/, hl7v2/ or channels/; channels/ never import fhir/builders.
 *
 * No dependency: the sources are read with node:fs and scanned by a small lexer that skips comments, strings,
 * template literals and regular expressions, so an import written in a comment or a string is not taken for one.
 * Every relative specifier counts: `import … from`, `import type … from`, `export … from`, `import '…'` and
 * `import('…')` (dynamic, or in a type position). Package and node: specifiers are not checked.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The layer of each top-level folder of src/. src/main.ts is layer 7; no other file may sit directly in src/. */
const LAYERS: Readonly<Record<string, number>> = {
  app: 6,
  channels: 5,
  console: 5,
  devices: 5,
  registration: 5,
  access: 4,
  audit: 3,
  pipeline: 3,
  delivery: 3,
  adapters: 2,
  hl7v2: 2,
  sandbox: 2,
  queue: 1,
  fhir: 1,
  http: 1,
  'ehr-auth': 1,
  core: 0,
  config: 0,
  observability: 0,
};
const MAIN = 'src/main.ts';
const MAIN_LAYER = 7;
/** What the delivery worker must know nothing of. */
const DELIVERY_FORBIDDEN = ['devices', 'adapters', 'hl7v2', 'channels'];
/** Channels know nothing of FHIR resources. */
const FHIR_BUILDERS = 'src/fhir/builders.ts';

// ---------------------------------------------------------------------------------------------------------------------
// Lexer: just enough of TypeScript to tell code from comments, strings, template literals and regular expressions.

type Token = { kind: 'name' | 'num' | 'string' | 'punct'; value: string };

/** Keywords after which a `/` starts a regular expression rather than a division. */
const REGEX_AFTER_WORD = new Set([
  'return',
  'typeof',
  'instanceof',
  'in',
  'of',
  'new',
  'delete',
  'void',
  'throw',
  'case',
  'do',
  'else',
  'yield',
  'await',
]);

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  /** One entry per open `{` or template `${`: true when the `}` that closes it resumes a template literal. */
  const braces: boolean[] = [];
  let i = src.startsWith('#!') ? src.indexOf('\n') + 1 || src.length : 0;
  const n = src.length;

  /** Reads template text from i (just after ` or }) to the closing ` or the next ${. */
  const templateChunk = (): void => {
    let text = '';
    let substituted = false;
    while (i < n) {
      const c = src[i];
      if (c === '\\') {
        text += src[i + 1] ?? '';
        i += 2;
      } else if (c === '`') {
        i++;
        break;
      } else if (c === '$' && src[i + 1] === '{') {
        i += 2;
        braces.push(true);
        substituted = true;
        break;
      } else {
        text += c;
        i++;
      }
    }
    // A template without substitutions is a plain string (import(`../x.js`) is an import).
    tokens.push(substituted ? { kind: 'punct', value: '`' } : { kind: 'string', value: text });
  };

  const regexAllowed = (): boolean => {
    const prev = tokens[tokens.length - 1];
    if (!prev) return true;
    if (prev.kind === 'num' || prev.kind === 'string') return false;
    if (prev.kind === 'name') return REGEX_AFTER_WORD.has(prev.value);
    return prev.value !== ')' && prev.value !== ']';
  };

  while (i < n) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === '/' && src[i + 1] === '/') {
      const end = src.indexOf('\n', i);
      i = end < 0 ? n : end + 1;
    } else if (c === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === '"' || c === "'") {
      let text = '';
      i++;
      while (i < n && src[i] !== c && src[i] !== '\n') {
        if (src[i] === '\\') {
          text += src[i + 1] ?? '';
          i += 2;
        } else text += src[i++];
      }
      i++;
      tokens.push({ kind: 'string', value: text });
    } else if (c === '`') {
      i++;
      templateChunk();
    } else if (c === '{') {
      braces.push(false);
      tokens.push({ kind: 'punct', value: c });
      i++;
    } else if (c === '}') {
      i++;
      if (braces.pop()) templateChunk();
      else tokens.push({ kind: 'punct', value: c });
    } else if (c === '/' && regexAllowed()) {
      // A regular expression literal: skip to its closing / (outside a [class]), then its flags.
      let j = i + 1;
      let inClass = false;
      for (; j < n && src[j] !== '\n'; j++) {
        if (src[j] === '\\') j++;
        else if (src[j] === '[') inClass = true;
        else if (src[j] === ']') inClass = false;
        else if (src[j] === '/' && !inClass) break;
      }
      if (j < n && src[j] === '/') {
        i = j + 1;
        while (i < n && /[A-Za-z]/.test(src[i])) i++;
        tokens.push({ kind: 'punct', value: '/regex/' });
      } else {
        tokens.push({ kind: 'punct', value: c });
        i++;
      }
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w$]/.test(src[j])) j++;
      tokens.push({ kind: 'name', value: src.slice(i, j) });
      i = j;
    } else if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < n && /[\w.]/.test(src[j])) j++;
      tokens.push({ kind: 'num', value: src.slice(i, j) });
      i = j;
    } else {
      tokens.push({ kind: 'punct', value: c });
      i++;
    }
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------------------------------
// Import specifiers.

type SpecifierKind = 'import' | 'export' | 'side-effect' | 'dynamic';
interface Specifier {
  kind: SpecifierKind;
  specifier: string;
}

const isName = (t: Token | undefined, value?: string): boolean => t?.kind === 'name' && (value === undefined || t.value === value);
const isPunct = (t: Token | undefined, value: string): boolean => t?.kind === 'punct' && t.value === value;

/** Every import/export specifier of a source file (relative or not), in source order. */
function extractSpecifiers(source: string): Specifier[] {
  const t = tokenize(source);
  const found: Specifier[] = [];
  for (let i = 0; i < t.length; i++) {
    if (isPunct(t[i - 1], '.')) continue; // x.import, x.export
    if (isName(t[i], 'import')) {
      const next = t[i + 1];
      if (isPunct(next, '(')) {
        // import('…'): a dynamic import, or a type position (typeof import('…'), import('…').T).
        if (t[i + 2]?.kind === 'string') found.push({ kind: 'dynamic', specifier: t[i + 2].value });
      } else if (next?.kind === 'string') {
        found.push({ kind: 'side-effect', specifier: next.value });
      } else if (!isPunct(next, '.')) {
        // import [type] X, { a as b, type c }, * as ns from '…'
        let j = i + 1;
        while (j < t.length && (t[j].kind === 'name' || ['{', '}', ',', '*'].includes(t[j].value))) {
          if (isName(t[j], 'from') && t[j + 1]?.kind === 'string') {
            found.push({ kind: 'import', specifier: t[j + 1].value });
            break;
          }
          j++;
        }
      }
    } else if (isName(t[i], 'export')) {
      let j = i + 1;
      if (isName(t[j], 'type')) j++;
      if (isPunct(t[j], '*')) {
        j++;
        if (isName(t[j], 'as')) j += 2;
      } else if (isPunct(t[j], '{')) {
        while (j < t.length && !isPunct(t[j], '}')) j++;
        j++;
      } else continue; // export const / function / class / default / interface / type X = …
      if (isName(t[j], 'from') && t[j + 1]?.kind === 'string') found.push({ kind: 'export', specifier: t[j + 1].value });
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------------------------------
// The checker: files (posix paths from the repository root, 'src/…') and their sources in, violations per rule out.

type Rule = 'placement' | 'resolves' | 'layers' | 'core' | 'app' | 'delivery' | 'channels' | 'bull';
const RULES: Record<Rule, string> = {
  placement: 'every file under src/ lives in a layer folder (only main.ts sits directly in src/)',
  resolves: 'every relative import resolves to a .ts file under src/',
  layers: 'no file imports from a higher layer',
  core: 'core/ imports nothing of src/ outside core/',
  app: 'nothing imports app/ except src/main.ts',
  delivery: 'delivery/ imports nothing from devices/, adapters/, hl7v2/ or channels/',
  channels: 'channels/ never import fhir/builders',
  bull: "only queue/ imports 'bull' (the rest of the gateway sees DeliveryQueue and QueuedJob)",
};

interface Edge {
  from: string;
  to: string;
  kind: SpecifierKind;
}

type Place = { folder: string; layer: number } | { error: string };

function placeOf(file: string): Place {
  const parts = file.split('/');
  if (parts[0] !== 'src') return { error: 'not under src/' };
  if (parts.length === 2)
    return file === MAIN ? { folder: '', layer: MAIN_LAYER } : { error: 'directly in src/: it must live in a layer folder' };
  const folder = parts[1];
  return folder in LAYERS ? { folder, layer: LAYERS[folder] } : { error: `folder ${folder}/ is not in the layer table` };
}

/** The file a relative specifier names, among the known files: '.js' written for a '.ts' source, or a folder's index. */
function resolve(from: string, specifier: string, files: ReadonlySet<string>): string | undefined {
  const base = posix.normalize(posix.join(posix.dirname(from), specifier));
  const candidates = base.endsWith('.js')
    ? [base.slice(0, -3) + '.ts']
    : base.endsWith('.ts')
      ? [base]
      : [base + '.ts', base + '/index.ts'];
  return candidates.find((c) => c.startsWith('src/') && files.has(c));
}

interface Report {
  files: number;
  edges: Edge[];
  violations: Record<Rule, string[]>;
}

function check(sources: ReadonlyMap<string, string>): Report {
  const files = new Set(sources.keys());
  const violations: Record<Rule, string[]> = {
    placement: [],
    resolves: [],
    layers: [],
    core: [],
    app: [],
    delivery: [],
    channels: [],
    bull: [],
  };
  const edges: Edge[] = [];

  for (const file of [...files].sort()) {
    const place = placeOf(file);
    if ('error' in place) violations.placement.push(`${file} (${place.error})`);
    for (const { kind, specifier } of extractSpecifiers(sources.get(file) ?? '')) {
      if (specifier === 'bull' && !file.startsWith('src/queue/')) violations.bull.push(`${file} → bull (only queue/ may use bull)`);
      if (!specifier.startsWith('./') && !specifier.startsWith('../')) continue;
      const to = resolve(file, specifier, files);
      if (!to) {
        violations.resolves.push(`${file} → ${specifier} (does not resolve to a .ts file under src/)`);
        continue;
      }
      edges.push({ from: file, to, kind });
    }
  }

  for (const { from, to } of edges) {
    const a = placeOf(from);
    const b = placeOf(to);
    if ('error' in a || 'error' in b) continue; // reported by the placement rule
    const arrow = `${from} → ${to}`;
    if (b.layer > a.layer) violations.layers.push(`${arrow} (layer ${a.layer} imports layer ${b.layer})`);
    if (a.folder === 'core' && b.folder !== 'core')
      violations.core.push(`${arrow} (core/ imports ${b.folder ? `${b.folder}/` : 'main.ts'})`);
    if (b.folder === 'app' && a.folder !== 'app' && from !== MAIN) violations.app.push(`${arrow} (only src/main.ts may import app/)`);
    if (a.folder === 'delivery' && DELIVERY_FORBIDDEN.includes(b.folder))
      violations.delivery.push(`${arrow} (delivery/ imports ${b.folder}/)`);
    if (a.folder === 'channels' && to === FHIR_BUILDERS) violations.channels.push(`${arrow} (channels/ imports fhir/builders)`);
  }
  return { files: files.size, edges, violations };
}

/** Every .ts file under src/, keyed by its posix path from the repository root. */
function readSourceTree(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile() && entry.name.endsWith('.ts')) out.set(relative(root, path).split(sep).join('/'), readFileSync(path, 'utf8'));
    }
  };
  walk(join(root, 'src'));
  return out;
}

function assertNone(rule: Rule, found: string[]): void {
  if (found.length) assert.fail(`${found.length} violation(s) of "${RULES[rule]}":\n  ${found.join('\n  ')}`);
}

// ---------------------------------------------------------------------------------------------------------------------

describe('architecture: the layers of src/', function () {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  let report: Report;

  before(function () {
    report = check(readSourceTree(root));
  });

  it('reads the source tree (src/main.ts, more than 50 files, more than 200 relative imports)', function () {
    assert.ok(report.files > 50, `found only ${report.files} .ts files under src/`);
    assert.ok(
      report.edges.some((e) => e.from === MAIN),
      'src/main.ts was not read or has no relative import',
    );
    assert.ok(report.edges.length > 200, `found only ${report.edges.length} relative imports under src/`);
  });

  it(RULES.placement, () => assertNone('placement', report.violations.placement));
  it(RULES.resolves, () => assertNone('resolves', report.violations.resolves));
  it(RULES.layers, () => assertNone('layers', report.violations.layers));
  it(RULES.core, () => assertNone('core', report.violations.core));
  it(RULES.app, () => assertNone('app', report.violations.app));
  it(RULES.delivery, () => assertNone('delivery', report.violations.delivery));
  it(RULES.channels, () => assertNone('channels', report.violations.channels));
  it(RULES.bull, () => assertNone('bull', report.violations.bull));

  describe('the checker itself', function () {
    it('finds every form of import and export, and none in comments, strings, templates or regular expressions', function () {
      const source = [
        '#!/usr/bin/env node',
        "import a from './a.js';",
        "import type { B } from '../b.js';",
        'import c, { d as e, type F } from "./c.js";',
        "import * as g from './g.js';",
        "import './side.js';",
        "export * from './star.js';",
        "export * as ns from './ns.js';",
        "export { h } from './h.js';",
        "export type { I } from './i.js';",
        "const m = await import('./dynamic.js');",
        "type T = typeof import('./typeonly.js');",
        'const url = new URL(`./x`, import.meta.url);',
        "// import z from './comment.js';",
        "/* export * from './block.js'; */",
        'const s = "import x from \'./string.js\'";',
        "const q = `import('./template.js') ${`nested ${ { k: 1 }.k }`} export * from './template2.js'`;",
        "const re = /['\"]import('.\\/regex.js')/g;",
        "const ratio = (1 + 2) / 3; const r2 = a / b; // import('./divide.js')",
        'export const from = 1; export function f() {}',
        "export default { x: import('./in-object.js') };",
      ].join('\n');
      assert.deepEqual(extractSpecifiers(source), [
        { kind: 'import', specifier: './a.js' },
        { kind: 'import', specifier: '../b.js' },
        { kind: 'import', specifier: './c.js' },
        { kind: 'import', specifier: './g.js' },
        { kind: 'side-effect', specifier: './side.js' },
        { kind: 'export', specifier: './star.js' },
        { kind: 'export', specifier: './ns.js' },
        { kind: 'export', specifier: './h.js' },
        { kind: 'export', specifier: './i.js' },
        { kind: 'dynamic', specifier: './dynamic.js' },
        { kind: 'dynamic', specifier: './typeonly.js' },
        { kind: 'dynamic', specifier: './in-object.js' },
      ]);
    });

    it('reports a violation of each rule in a small in-memory tree, and nothing in a clean one', function () {
      const clean: [string, string][] = [
        ['src/main.ts', "import { Gateway } from './app/gateway.js';"],
        ['src/app/gateway.ts', "import { features } from './features.js';\nimport { Pipeline } from '../pipeline/pipeline.js';"],
        ['src/app/features.ts', "import { httpChannel } from '../channels/http.js';"],
        [
          'src/channels/http.ts',
          "import type { Ingestor } from '../pipeline/pipeline.js';\nimport { GatewayError } from '../core/errors.js';",
        ],
        ['src/pipeline/pipeline.ts', "import { validate } from '../fhir/validate.js';\nimport { DeliveryQueue } from '../queue/index.js';"],
        ['src/fhir/validate.ts', "import { issue } from '../core/errors.js';\nimport { log } from '../observability/logger.js';"],
        ['src/fhir/builders.ts', "import { hashKey } from '../core/ids.js';"],
        ['src/queue/index.ts', "export * from '../core/ids.js';"],
        [
          'src/delivery/worker.ts',
          "import { buildTransaction } from '../fhir/transaction.js';\nimport type { DeliveryJob } from '../queue/index.js';",
        ],
        ['src/fhir/transaction.ts', "import { hashKey } from '../core/ids.js';"],
        ['src/core/errors.ts', "import type { OperationOutcome } from 'fhir/r4';\nimport { hashKey } from './ids.js';"],
        ['src/core/ids.ts', "import { createHash } from 'node:crypto';"],
        ['src/observability/logger.ts', "import pino from 'pino';"],
        ['src/config/index.ts', "import { log } from '../observability/logger.js';"],
      ];
      const cleanReport = check(new Map(clean));
      assert.equal(cleanReport.edges.length, 17);
      for (const rule of Object.keys(RULES) as Rule[]) assert.deepEqual(cleanReport.violations[rule], [], rule);

      const broken = new Map<string, string>([
        ...clean,
        ['src/stray.ts', 'export const x = 1;'],
        ['src/ingest/old.ts', "import { x } from '../stray.js';"],
        ['src/channels/mqtt.ts', "import { observation } from '../fhir/builders.js';\nimport { gone } from './gone.js';"],
        ['src/core/keys.ts', "import type { Config } from '../config/index.js';"],
        ['src/queue/bad.ts', "export { Pipeline } from '../pipeline/pipeline.js';"],
        ['src/pipeline/lazy.ts', "const guard = await import('../devices/guard.js');"],
        ['src/devices/guard.ts', "import type { Gateway } from '../app/gateway.js';"],
        [
          'src/delivery/hl7.ts',
          "import type { Hl7Message } from '../hl7v2/parse.js';\nimport { registry } from '../adapters/registry.js';",
        ],
        ['src/hl7v2/parse.ts', ''],
        ['src/adapters/registry.ts', "// import { Gateway } from '../app/gateway.js';"],
        ['src/delivery/jobs.ts', "import type Bull from 'bull';"],
      ]);
      assert.deepEqual(check(broken).violations, {
        placement: [
          'src/ingest/old.ts (folder ingest/ is not in the layer table)',
          'src/stray.ts (directly in src/: it must live in a layer folder)',
        ],
        resolves: ['src/channels/mqtt.ts → ./gone.js (does not resolve to a .ts file under src/)'],
        layers: [
          'src/devices/guard.ts → src/app/gateway.ts (layer 5 imports layer 6)',
          'src/pipeline/lazy.ts → src/devices/guard.ts (layer 3 imports layer 5)',
          'src/queue/bad.ts → src/pipeline/pipeline.ts (layer 1 imports layer 3)',
        ],
        core: ['src/core/keys.ts → src/config/index.ts (core/ imports config/)'],
        app: ['src/devices/guard.ts → src/app/gateway.ts (only src/main.ts may import app/)'],
        delivery: [
          'src/delivery/hl7.ts → src/hl7v2/parse.ts (delivery/ imports hl7v2/)',
          'src/delivery/hl7.ts → src/adapters/registry.ts (delivery/ imports adapters/)',
        ],
        channels: ['src/channels/mqtt.ts → src/fhir/builders.ts (channels/ imports fhir/builders)'],
        bull: ['src/delivery/jobs.ts → bull (only queue/ may use bull)'],
      });
    });
  });
});
