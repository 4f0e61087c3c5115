/**
 * Expressions of the iomt-fhir / MedTech device-mapping format, evaluated with the libraries the project uses:
 * JSONPath with `jsonpath-plus`, JMESPath with `jmespath`. Nothing here interprets a path by hand; this module only
 * bridges the dialect differences between those libraries and the .NET ones iomt-fhir was written against:
 *
 * - Newtonsoft's JSONPath accepts `@heartRate` (no dot) in filters and treats a bare `@.x` as an existence test, so
 *   `[?(@steps)]` matches `{"steps": 0}`. jsonpath-plus evaluates filters as JavaScript (0 is falsy). Filters are
 *   rewritten before evaluation: `@x` → `@.x`, and a bare operand `@.x` → `(@.x != null)`.
 * - Newtonsoft's `$..[?(f)]` also tests the root token (iomt's IotJsonPathContent relies on it: "the
 *   TypeMatchExpression should resolve to the entire message"); jsonpath-plus only tests descendants. For a path of
 *   that shape the root is tested too, first, as Newtonsoft's pre-order scan does.
 * - iomt's custom JMESPath functions (add, subtract, multiply, divide, pow, insertString, fromUnixTimestamp,
 *   fromUnixTimestampMs, matchesRegex) are not part of jmespath.js, which has no public function registry. See
 *   `installCustomFunctions` below for the small extension layer.
 */
import jmespathModule from 'jmespath';
import { JSONPath } from 'jsonpath-plus';
import { filterProblem } from './filter-guard.js';
import { matchesRegex, RegexRefused, regexProblem } from './regex.js';

/** Longest expression accepted (characters): expressions are paths and small formulas, not programs. */
export const MAX_EXPRESSION_LENGTH = 2048;

/** jmespath.js also exports `compile` (expression → AST); @types/jmespath declares only `search`. */
const jmespath = jmespathModule as typeof jmespathModule & { compile(expression: string): unknown };

export const ExpressionLanguage = { jsonPath: 'JsonPath', jmesPath: 'JmesPath' } as const;
export type ExpressionLanguage = (typeof ExpressionLanguage)[keyof typeof ExpressionLanguage];

export function parseLanguage(v: unknown): ExpressionLanguage | undefined {
  if (typeof v !== 'string') return undefined;
  const s = v.trim().toLowerCase();
  if (s === 'jsonpath') return ExpressionLanguage.jsonPath;
  if (s === 'jmespath') return ExpressionLanguage.jmesPath;
  return undefined;
}

/** One token an expression selected: its value, and where it sits in the evaluated document (JSONPath only). */
export interface Selected {
  value: unknown;
  /** Normalised JSONPath of the token in the evaluated document ("$.Body.heartrate"), when the language gives one. */
  path?: string;
}

export interface CompiledExpression {
  readonly source: string;
  readonly language: ExpressionLanguage;
  /** Every token the expression selects (JMESPath: one result; an array result is one token). */
  selectTokens(data: unknown): Selected[];
}

export class ExpressionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExpressionError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JSONPath

/** Splits text into code and quoted-string segments, so rewrites never touch string literals. */
function mapOutsideStrings(text: string, fn: (code: string) => string): string {
  let out = '';
  let code = '';
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"' || ch === "'") {
      out += fn(code);
      code = '';
      let j = i + 1;
      while (j < text.length && text[j] !== ch) j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    code += ch;
    i++;
  }
  return out + fn(code);
}

const COMPARISON = /^\s*(===|!==|==|!=|<=|>=|<|>|=~)/;
const COMPARISON_BEFORE = /(===|!==|==|!=|<=|>=|<|>|=~)\s*$/;
/** A filter operand path: @ followed by .name, ['name'] or [n] segments (after `@x` → `@.x`). */
const OPERAND = /@((?:\.[A-Za-z_$][\w$-]*|\[(?:\d+|'[^']*'|"[^"]*")\])*)/g;

function rewriteFilter(filter: string): string {
  // Newtonsoft accepts "@name"; jsonpath-plus needs "@.name". jsonpath-plus's own @path/@parent/@root variables are
  // rewritten too: iomt templates were written for Newtonsoft, where "@parent" means the member "parent".
  const dotted = mapOutsideStrings(filter, (code) => code.replace(/@(?=[A-Za-z_$])/g, '@.'));
  // Existence tests: a bare operand not compared with anything means "is present" in Newtonsoft.
  let result = '';
  let last = 0;
  const src = dotted;
  for (const m of src.matchAll(OPERAND)) {
    const start = m.index ?? 0;
    const end = start + m[0].length;
    if (insideString(src, start) || m[1] === '') continue;
    const before = src.slice(0, start);
    const after = src.slice(end);
    if (COMPARISON.test(after) || COMPARISON_BEFORE.test(before)) continue;
    result += src.slice(last, start) + `(${m[0]} != null)`;
    last = end;
  }
  return result + src.slice(last);
}

function insideString(text: string, pos: number): boolean {
  let quote: string | undefined;
  for (let i = 0; i < pos; i++) {
    const ch = text[i];
    if (quote) {
      if (ch === '\\') i++;
      else if (ch === quote) quote = undefined;
    } else if (ch === '"' || ch === "'") quote = ch;
  }
  return quote !== undefined;
}

/** Rewrites every `?( … )` filter of a JSONPath written for Newtonsoft into jsonpath-plus's dialect. */
export function normaliseJsonPath(path: string): string {
  let out = '';
  let i = 0;
  while (i < path.length) {
    const start = path.indexOf('?(', i);
    if (start < 0 || insideString(path, start)) {
      out += path.slice(i);
      break;
    }
    // Find the matching parenthesis, skipping strings.
    let depth = 0;
    let j = start + 1;
    let quote: string | undefined;
    for (; j < path.length; j++) {
      const ch = path[j];
      if (quote) {
        if (ch === '\\') j++;
        else if (ch === quote) quote = undefined;
        continue;
      }
      if (ch === '"' || ch === "'") quote = ch;
      else if (ch === '(') depth++;
      else if (ch === ')' && --depth === 0) break;
    }
    if (j >= path.length) throw new ExpressionError(`unbalanced parentheses in filter of JSONPath '${path}'`);
    out += path.slice(i, start + 2) + rewriteFilter(path.slice(start + 2, j)) + ')';
    i = j + 1;
  }
  return out;
}

/** "$['Body']['arr'][0]" → "$.Body.arr[0]" (bracket form kept for names that are not identifiers). */
export function prettyPath(p: string): string {
  return p.replace(/\['([^']*)'\]/g, (_m, name: string) => (/^[A-Za-z_$][\w$]*$/.test(name) ? `.${name}` : `['${name}']`));
}

const PROBE = { a: { b: 1, c: 'x' }, d: [{ e: 1 }, { e: 'y' }] };

/**
 * jsonpath-plus keeps every path and filter it has parsed in one object (`JSONPath.cache`) for the life of the process.
 * The paths come from vendors' templates, and every version of a template and every preview in the mapping editor adds
 * its own: emptied past this many entries, so that what vendors type cannot grow the gateway's memory without end.
 */
export const JSONPATH_CACHE_MAX = 5000;
const jsonPathStatics = JSONPath as unknown as { cache: Record<string, unknown> };

/** Entries in jsonpath-plus's cache (for tests). */
export const jsonPathCacheSize = (): number => Object.keys(jsonPathStatics.cache).length;

function compileJsonPath(source: string): CompiledExpression {
  if (jsonPathCacheSize() > JSONPATH_CACHE_MAX) jsonPathStatics.cache = {};
  const path = source.trim();
  if (!path.startsWith('$')) throw new ExpressionError(`JSONPath '${source}' must start with '$'`);
  const normalised = normaliseJsonPath(path);
  // Filters run as JavaScript in jsonpath-plus: only a side-effect-free subset without regular expressions or calls.
  const problem = filterProblem(normalised);
  if (problem && 'invalid' in problem) throw new ExpressionError(`invalid JSONPath '${source}': ${problem.invalid}`);
  if (problem) throw new ExpressionError(`JSONPath '${source}' refused: ${problem.refused}`);
  // A member of a missing member is "no match" in Newtonsoft; in jsonpath-plus it is an evaluation error, ignored here.
  const run = (json: unknown, p: string, ignoreEvalErrors = true) =>
    JSONPath({ path: p, json: json as object, resultType: 'all', eval: 'safe', wrap: true, ignoreEvalErrors }) as {
      value: unknown;
      path: string;
    }[];
  // Surface syntax errors now (jsonpath-plus parses filters lazily, so run them once on a probe document); errors of
  // evaluation on the probe (reading a member of undefined) are not syntax errors.
  try {
    JSONPath.toPathArray(normalised);
    run(PROBE, normalised, false);
  } catch (e) {
    const msg = (e as Error).message;
    if (!/Cannot read propert|is not a function|Cannot convert/.test(msg))
      throw new ExpressionError(`invalid JSONPath '${source}': ${msg}`);
  }
  const rootFilter = /^\$\.\.\[\?\(/.test(normalised) ? '$' + normalised.slice(3) : undefined;
  return {
    source,
    language: ExpressionLanguage.jsonPath,
    selectTokens(data: unknown): Selected[] {
      if (data === null || typeof data !== 'object') return [];
      const out: Selected[] = [];
      if (rootFilter && !Array.isArray(data)) {
        for (const r of run([data], rootFilter)) out.push({ value: r.value, path: '$' });
      }
      for (const r of run(data, normalised)) out.push({ value: r.value, path: prettyPath(r.path) });
      return out;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// JMESPath and iomt's custom functions

type JmesType = 'number' | 'string' | 'any';
interface CustomFunction {
  args: JmesType[];
  fn: (args: unknown[]) => unknown;
}

function iso(ms: number, name: string): string {
  const d = new Date(ms);
  if (!Number.isFinite(ms) || Number.isNaN(d.getTime())) throw new Error(`${name}(): ${ms} is not a valid Unix time`);
  return d.toISOString();
}

function finite(n: number, name: string): number {
  if (!Number.isFinite(n)) throw new Error(`${name}(): the result is not a finite number`);
  return n;
}

/** The custom functions iomt-fhir defines for JMESPath (docs/CustomFunctions.md of microsoft/iomt-fhir). */
export const CUSTOM_FUNCTIONS: Readonly<Record<string, CustomFunction>> = {
  add: { args: ['number', 'number'], fn: ([a, b]) => finite((a as number) + (b as number), 'add') },
  subtract: { args: ['number', 'number'], fn: ([a, b]) => finite((a as number) - (b as number), 'subtract') },
  multiply: { args: ['number', 'number'], fn: ([a, b]) => finite((a as number) * (b as number), 'multiply') },
  divide: {
    args: ['number', 'number'],
    fn: ([a, b]) => {
      if (b === 0) throw new Error('divide(): division by zero');
      return finite((a as number) / (b as number), 'divide');
    },
  },
  pow: { args: ['number', 'number'], fn: ([a, b]) => finite(Math.pow(a as number, b as number), 'pow') },
  insertString: {
    args: ['string', 'string', 'number'],
    fn: ([s, ins, pos]) => {
      const str = s as string;
      const p = pos as number;
      if (!Number.isInteger(p) || p < 0 || p > str.length)
        throw new Error(`insertString(): position ${p} is out of range 0..${str.length}`);
      return str.slice(0, p) + (ins as string) + str.slice(p);
    },
  },
  fromUnixTimestamp: { args: ['number'], fn: ([s]) => iso((s as number) * 1000, 'fromUnixTimestamp') },
  fromUnixTimestampMs: { args: ['number'], fn: ([ms]) => iso(ms as number, 'fromUnixTimestampMs') },
  matchesRegex: {
    args: ['string', 'string'],
    fn: ([s, re]) => {
      try {
        return matchesRegex(s as string, re as string);
      } catch (e) {
        if (e instanceof RegexRefused) throw new Error(`matchesRegex(): pattern refused: ${e.message}`);
        throw e;
      }
    },
  },
};

function jmesTypeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'object' ? 'object' : typeof v;
}

interface JmesRuntime {
  functionTable: Record<string, unknown>;
  callFunction(name: string, args: unknown[]): unknown;
}

let installed = false;

/**
 * The extension layer. jmespath.js (0.16) keeps its function table inside a `Runtime` it creates per search and does
 * not export. Its `search` assigns `runtime._interpreter` right after construction; a one-shot setter on
 * Object.prototype catches that instance (synchronously, during one search of a constant), gives us
 * `Runtime.prototype`, and is removed at once. `callFunction` is then wrapped: names jmespath knows go to jmespath,
 * the names in CUSTOM_FUNCTIONS are type-checked and run here. A self-test runs at install; if a future jmespath
 * changes these internals the first template load fails loudly instead of evaluating wrongly.
 */
function installCustomFunctions(): void {
  if (installed) return;
  let captured: JmesRuntime | undefined;
  const key = '_interpreter';
  Object.defineProperty(Object.prototype, key, {
    configurable: true,
    set(this: object, v: unknown) {
      if (!captured) captured = this as JmesRuntime;
      Object.defineProperty(this, key, { value: v, writable: true, configurable: true, enumerable: true });
    },
  });
  try {
    jmespath.search({}, '@');
  } finally {
    delete (Object.prototype as Record<string, unknown>)[key];
  }
  const proto = captured ? (Object.getPrototypeOf(captured) as JmesRuntime) : undefined;
  if (!proto || typeof proto.callFunction !== 'function')
    throw new Error('jmespath: cannot install iomt custom functions (internals changed)');
  const original = proto.callFunction;
  proto.callFunction = function (this: JmesRuntime, name: string, args: unknown[]): unknown {
    const custom = Object.hasOwn(CUSTOM_FUNCTIONS, name) ? CUSTOM_FUNCTIONS[name] : undefined;
    if (!custom || Object.hasOwn(this.functionTable, name)) return original.call(this, name, args);
    if (args.length !== custom.args.length)
      throw new Error(`ArgumentError: ${name}() takes ${custom.args.length} arguments but received ${args.length}`);
    custom.args.forEach((t, i) => {
      if (t !== 'any' && jmesTypeOf(args[i]) !== t)
        throw new Error(
          `TypeError: ${name}() expected argument ${i + 1} to be type ${t} but received type ${jmesTypeOf(args[i])} instead.`,
        );
    });
    return custom.fn(args);
  };
  installed = true;
  if (jmespath.search({ a: 1 }, 'add(a, `2`)') !== 3) throw new Error('jmespath: iomt custom functions did not install');
}

function compileJmesPath(source: string): CompiledExpression {
  installCustomFunctions();
  let ast: unknown;
  try {
    ast = jmespath.compile(source);
  } catch (e) {
    throw new ExpressionError(`invalid JMESPath '${source}': ${(e as Error).message}`);
  }
  const unknownFns = functionNames(ast).filter((n) => !JMESPATH_BUILTINS.has(n) && !Object.hasOwn(CUSTOM_FUNCTIONS, n));
  if (unknownFns.length)
    throw new ExpressionError(`invalid JMESPath '${source}': unknown function ${unknownFns.map((n) => `${n}()`).join(', ')}`);
  // A pattern written in the template is checked now (RE2 runs it or it is refused); one read from the payload is
  // checked when the message is translated.
  for (const pattern of literalPatterns(ast)) {
    const problem = regexProblem(pattern);
    if (problem) throw new ExpressionError(`JMESPath '${source}': matchesRegex() pattern '${pattern}' refused: ${problem}`);
  }
  return {
    source,
    language: ExpressionLanguage.jmesPath,
    selectTokens(data: unknown): Selected[] {
      const v = jmespath.search(data as never, source) as unknown;
      return v === null || v === undefined ? [] : [{ value: v }];
    },
  };
}

const JMESPATH_BUILTINS = new Set([
  'abs',
  'avg',
  'ceil',
  'contains',
  'ends_with',
  'floor',
  'join',
  'keys',
  'length',
  'map',
  'max',
  'max_by',
  'merge',
  'min',
  'min_by',
  'not_null',
  'reverse',
  'sort',
  'sort_by',
  'starts_with',
  'sum',
  'to_array',
  'to_number',
  'to_string',
  'type',
  'values',
]);

function functionNames(node: unknown): string[] {
  if (!node || typeof node !== 'object') return [];
  const n = node as { type?: string; name?: string; children?: unknown[] };
  const own = n.type === 'Function' && typeof n.name === 'string' ? [n.name] : [];
  return [...own, ...(n.children ?? []).flatMap(functionNames)];
}

/** The literal second arguments of matchesRegex() calls. */
function literalPatterns(node: unknown): string[] {
  if (!node || typeof node !== 'object') return [];
  const n = node as { type?: string; name?: string; value?: unknown; children?: unknown[] };
  const children = n.children ?? [];
  const own: string[] = [];
  if (n.type === 'Function' && n.name === 'matchesRegex') {
    const arg = children[1] as { type?: string; value?: unknown } | undefined;
    if (arg?.type === 'Literal' && typeof arg.value === 'string') own.push(arg.value);
  }
  return [...own, ...children.flatMap(literalPatterns)];
}

export function compileExpression(source: string, language: ExpressionLanguage): CompiledExpression {
  if (source.length > MAX_EXPRESSION_LENGTH)
    throw new ExpressionError(`the expression is longer than ${MAX_EXPRESSION_LENGTH} characters (${source.length})`);
  switch (language) {
    case ExpressionLanguage.jsonPath:
      return compileJsonPath(source);
    case ExpressionLanguage.jmesPath:
      return compileJmesPath(source);
    default:
      language satisfies never;
      throw new ExpressionError(`unknown expression language '${String(language)}'`);
  }
}
