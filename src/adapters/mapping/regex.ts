/**
 * Regular expressions of vendor templates (JMESPath `matchesRegex`), run with RE2 (Google's linear-time engine,
 * compiled to WebAssembly by `re2-wasm`) instead of JavaScript's backtracking RegExp. A pattern such as `((a+))+$` or
 * `(.*a){12}$` takes time linear in the input on RE2, whatever its shape, so no heuristic about "dangerous" shapes is
 * needed. What RE2 cannot express (back-references, lookaround) is refused with a clear message, at registration when
 * the pattern is a literal in the template, else when a message is translated.
 *
 * Two properties of re2-wasm are handled here: its WebAssembly heap is fixed (16 MiB) and compiled patterns live there
 * until `delete()`d, so compiled patterns are kept in a bounded cache that deletes what it evicts; and a pattern RE2
 * refuses leaks its half-built wrapper (about 1 KiB; some 19,000 refusals break RE2 for the whole process), so the
 * wrapper of a refused pattern is caught and deleted too.
 */
import { createRequire } from 'node:module';
import type { RE2 } from 're2-wasm';

/** Longest pattern accepted (characters). */
export const MAX_REGEX_LENGTH = 256;
/** Longest input matched: a vendor's value is matched, not a document; longer values are cut to this length. */
export const MAX_REGEX_INPUT = 4096;
/** Compiled patterns kept (each holds WebAssembly memory until evicted). */
const CACHE_SIZE = 256;

interface Wrapper {
  delete(): void;
}

let lastWrapper: Wrapper | undefined;
let RE2Class: typeof RE2 | undefined;

/**
 * re2-wasm, loaded at the first pattern: its WebAssembly heap (16 MiB) is allocated when the module loads, and most
 * gateways (and template workers) never compile a pattern.
 */
function re2(): typeof RE2 {
  if (RE2Class) return RE2Class;
  const require = createRequire(import.meta.url);
  // The one module instance re2-wasm's RE2 class constructs its wrappers from (CommonJS: cached, so it is the same).
  const wasm = require('re2-wasm/build/wasm/re2.js') as { WrappedRE2: new (...a: unknown[]) => Wrapper };
  if (!(wasm.WrappedRE2 as { __iomtTracked?: boolean }).__iomtTracked) {
    const Original = wasm.WrappedRE2;
    const Tracked = function (...args: unknown[]) {
      lastWrapper = new Original(...args);
      return lastWrapper;
    } as unknown as typeof Original & { __iomtTracked?: boolean };
    Tracked.__iomtTracked = true;
    wasm.WrappedRE2 = Tracked;
  }
  RE2Class = (require('re2-wasm') as { RE2: typeof RE2 }).RE2;
  return RE2Class;
}

/** The wrapper the last RE2 construction made (and forget it). */
function takeLastWrapper(): Wrapper | undefined {
  const w = lastWrapper;
  lastWrapper = undefined;
  return w;
}

const wrapperOf = (rx: RE2): Wrapper | undefined => (rx as unknown as { wrapper?: Wrapper }).wrapper;

const cache = new Map<string, RE2>();

export class RegexRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegexRefused';
  }
}

/**
 * Why RE2 cannot run `pattern`, checked before compiling (cheap, and clearer than RE2's own words for the usual
 * cases), or undefined.
 */
function precheck(pattern: string): string | undefined {
  if (pattern.length > MAX_REGEX_LENGTH) return `the pattern is longer than ${MAX_REGEX_LENGTH} characters`;
  if (/\\[1-9]|\\k</.test(pattern)) return 'back-references are not supported (patterns run on RE2, in linear time)';
  if (/\(\?<?[=!]/.test(pattern)) return 'lookahead and lookbehind are not supported (patterns run on RE2, in linear time)';
  return undefined;
}

/** The compiled pattern (cached). Throws RegexRefused with the reason when RE2 cannot run it. */
export function compileRegex(pattern: string): RE2 {
  const hit = cache.get(pattern);
  if (hit) {
    cache.delete(pattern);
    cache.set(pattern, hit);
    return hit;
  }
  const problem = precheck(pattern);
  if (problem) throw new RegexRefused(problem);
  let rx: RE2;
  lastWrapper = undefined;
  try {
    rx = new (re2())(pattern, 'u');
  } catch (e) {
    takeLastWrapper()?.delete();
    const why = (e as Error).message.replace(`Invalid regular expression: /${pattern}/u: `, '');
    throw new RegexRefused(`RE2 cannot run it: ${why}`);
  }
  takeLastWrapper();
  if (cache.size >= CACHE_SIZE) {
    const oldest = cache.keys().next().value as string;
    wrapperOf(cache.get(oldest) as RE2)?.delete();
    cache.delete(oldest);
  }
  cache.set(pattern, rx);
  return rx;
}

/** Why `pattern` is refused, or undefined when RE2 runs it. */
export function regexProblem(pattern: string): string | undefined {
  try {
    compileRegex(pattern);
    return undefined;
  } catch (e) {
    if (e instanceof RegexRefused) return e.message;
    throw e;
  }
}

/** matchesRegex(value, pattern): the value (cut to MAX_REGEX_INPUT characters) against the pattern, on RE2. */
export function matchesRegex(value: string, pattern: string): boolean {
  return compileRegex(pattern).test(value.slice(0, MAX_REGEX_INPUT));
}
