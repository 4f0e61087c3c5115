/**
 * What a JSONPath filter (`[?( … )]`) or script (`[( … )]`) of a vendor template may contain. jsonpath-plus's "safe"
 * evaluator still runs JavaScript expressions: regular-expression literals (on the backtracking RegExp engine:
 * `/(a+)+$/.test(@.tag)` took 20 s on one message), string and array methods, and its internal variables
 * (`_$_v`, `_$_root`, ...). A filter is parsed here with jsonpath-plus's own parser, exactly as it would be evaluated,
 * and only a small, side-effect-free subset is let through: `@` and its members, literals (strings, numbers, booleans,
 * null), comparison, arithmetic and logical operators, `!`, unary minus, `typeof` and `a ? b : c`. Everything else (a
 * call of any function or method, a regular expression, an assignment, a name other than `@`, a name starting with
 * `_$_`) is refused when the template is compiled, so the vendor hears of it at registration with the template's path.
 * To match text, use JMESPath's `matchesRegex()`, which runs on RE2 in linear time.
 */
import { JSONPath } from 'jsonpath-plus';

interface Node {
  type: string;
  [k: string]: unknown;
}

/** jsonpath-plus's safe evaluator (its own bundled jsep parser): `new Script(code).ast`. */
const SafeScript = (JSONPath.prototype as unknown as { safeVm: { Script: new (code: string) => { ast: Node } } }).safeVm.Script;

/** The name jsonpath-plus gives `@` in a filter. */
const CURRENT = '_$_v';
const BINARY = new Set(['||', '&&', '==', '!=', '===', '!==', '<', '>', '<=', '>=', '+', '-', '*', '/', '%']);
const UNARY = new Set(['!', '-', '+', 'typeof']);

/** The code of a filter as jsonpath-plus rewrites it before parsing (see JSONPath.prototype._eval). */
function asEvaluated(code: string): string {
  return code
    .replaceAll('@parentProperty', '_$_parentProperty')
    .replaceAll('@parent', '_$_parent')
    .replaceAll('@property', '_$_property')
    .replaceAll('@root', '_$_root')
    .replaceAll(/@([.\s)[])/gu, '_$_v$1')
    .replaceAll('@path', '_$_path');
}

/** The code outside string literals (for the internal-name check: '_$_v' inside quotes is just text). */
function outsideStrings(code: string): string {
  let out = '';
  for (let i = 0; i < code.length; i++) {
    const ch = code[i];
    if (ch === '"' || ch === "'") {
      let j = i + 1;
      while (j < code.length && code[j] !== ch) j += code[j] === '\\' ? 2 : 1;
      i = j;
      out += ' ';
    } else out += ch;
  }
  return out;
}

/** What in the node is not allowed, or undefined. */
function problemOf(node: Node): string | undefined {
  switch (node.type) {
    case 'Literal':
      return node.value instanceof RegExp || node.regex !== undefined
        ? 'a regular expression literal (regular expressions run only through JMESPath matchesRegex(), on RE2)'
        : undefined;
    case 'Identifier': {
      const name = String(node.name);
      if (name === CURRENT) return undefined;
      if (name.startsWith('_$_')) return `the evaluator's internal name '${name}'`;
      return `the name '${name}' (a filter reads only @ and its members)`;
    }
    case 'MemberExpression':
      return problemOf(node.object as Node) ?? (node.computed ? problemOf(node.property as Node) : undefined);
    case 'BinaryExpression':
    case 'LogicalExpression':
      if (!BINARY.has(String(node.operator))) return `the operator '${String(node.operator)}'`;
      return problemOf(node.left as Node) ?? problemOf(node.right as Node);
    case 'UnaryExpression':
      if (!UNARY.has(String(node.operator))) return `the operator '${String(node.operator)}'`;
      return problemOf(node.argument as Node);
    case 'ConditionalExpression':
      return problemOf(node.test as Node) ?? problemOf(node.consequent as Node) ?? problemOf(node.alternate as Node);
    case 'CallExpression':
      return 'a function or method call (string and array methods are not available in filters)';
    case 'Compound':
      return 'several expressions in one filter';
    case 'AssignmentExpression':
    case 'UpdateExpression':
      return 'an assignment';
    case 'ArrayExpression':
      return 'an array literal';
    default:
      return `a ${node.type}`;
  }
}

/**
 * Checks every filter and script of a JSONPath (in jsonpath-plus's dialect, after the Newtonsoft rewrites). Returns
 * the first problem, or undefined when every filter is in the allowed subset: `invalid` (the parser's message) when a
 * filter does not parse, `refused` (a sentence) when it parses but is outside the subset.
 */
export function filterProblem(normalisedPath: string): { invalid: string } | { refused: string } | undefined {
  for (const segment of JSONPath.toPathArray(normalisedPath)) {
    if (typeof segment !== 'string') continue;
    const m = /^(\?)?\(([\s\S]*)\)$/.exec(segment);
    if (!m) continue;
    const code = m[2];
    const kind = m[1] ? 'filter' : 'script';
    if (outsideStrings(code).includes('_$_'))
      return { refused: `the ${kind} '${code}' uses a name starting with '_$_' (internal to the evaluator)` };
    let ast: Node;
    try {
      ast = new SafeScript(asEvaluated(code)).ast;
    } catch (e) {
      return { invalid: (e as Error).message };
    }
    const problem = problemOf(ast);
    if (problem)
      return {
        refused: `the ${kind} '${code}' contains ${problem}; allowed are @ and its members, literals, comparisons, arithmetic, && || ! and ?:`,
      };
  }
  return undefined;
}
