/** The expression layer: JSONPath (jsonpath-plus) in iomt-fhir's Newtonsoft dialect, JMESPath with iomt's custom functions. */
import { strict as assert } from 'node:assert';
import jmespath from 'jmespath';
import {
  CUSTOM_FUNCTIONS,
  compileExpression,
  ExpressionError,
  JSONPATH_CACHE_MAX,
  jsonPathCacheSize,
  normaliseJsonPath,
} from '../../src/adapters/mapping/expressions.js';

describe('expressions: JSONPath in the Newtonsoft dialect', () => {
  const rewrites: [string, string][] = [
    ['$..[?(@heartRate)]', '$..[?((@.heartRate != null))]'],
    ['$..[?(@systolic && @diastolic)]', '$..[?((@.systolic != null) && (@.diastolic != null))]'],
    ['$..[?(@telemetry.HeartRate)]', '$..[?((@.telemetry.HeartRate != null))]'],
    ["$..[?(@unit == 'inches')]", "$..[?(@.unit == 'inches')]"],
    ["$..[?(@.email == 'a@b.example')]", "$..[?(@.email == 'a@b.example')]"],
    ['$..[?(@.v > 3 && !@flag)]', '$..[?(@.v > 3 && !(@.flag != null))]'],
    ['$.Body.deviceId', '$.Body.deviceId'],
  ];
  for (const [input, output] of rewrites) {
    it(`rewrites ${input}`, () => assert.equal(normaliseJsonPath(input), output));
  }

  const env = {
    Body: { hr: 0, steps: 12, readings: [{ sys: 1, dia: 2 }, { sys: 3 }], tags: ['a', 'b'] },
    Properties: { 'iothub-creation-time-utc': 't' },
    SystemProperties: {},
  };
  const selections: [string, unknown[], (string | undefined)[]][] = [
    ['$..[?(@hr)]', [env.Body], ['$.Body']],
    ['$..[?(@Body.hr)]', [env], ['$']],
    ['$..[?(@sys && @dia)]', [{ sys: 1, dia: 2 }], ['$.Body.readings[0]']],
    ['$..[?(@missing.deeper)]', [], []],
    ['$.Properties.iothub-creation-time-utc', ['t'], ["$.Properties['iothub-creation-time-utc']"]],
    ['$.Body.tags[*]', ['a', 'b'], ['$.Body.tags[0]', '$.Body.tags[1]']],
  ];
  for (const [path, values, paths] of selections) {
    it(`selects ${path}`, () => {
      const sel = compileExpression(path, 'JsonPath').selectTokens(env);
      assert.deepEqual(
        sel.map((s) => s.value),
        values,
      );
      assert.deepEqual(
        sel.map((s) => s.path),
        paths,
      );
    });
  }

  it('refuses malformed paths when compiled, not at the first message', () => {
    for (const bad of ['$..[?(@.a ==)]', 'heartRate', '$..[?(@.a'])
      assert.throws(() => compileExpression(bad, 'JsonPath'), ExpressionError, bad);
  });

  // Issue 13: jsonpath-plus's "safe" evaluator runs regex literals (on the backtracking engine: 19.7 s for one
  // message), string methods and its internal names. Filters are refused outright when compiled.
  const refused: [string, RegExp][] = [
    ['$.Body.readings[?(/(a+)+$/.test(_$_v.tag) || @.spo2 != null)]', /name starting with '_\$_'/],
    ['$.Body.readings[?(/(a+)+$/.test(@.tag) || @.spo2 != null)]', /function or method call/],
    ['$.Body.readings[?(@.spo2 != null && /(a+)+$/ == @.tag)]', /regular expression literal/],
    ["$.Body.readings[?(@.tag.match('a+'))]", /function or method call/],
    ["$.Body.readings[?(@.tag.padEnd(1e9) == 'x')]", /function or method call/],
    ['$.Body.readings[?(_$_v.spo2 > 90)]', /name starting with '_\$_'/],
    ['$.Body.readings[?(_$_root)]', /name starting with '_\$_'/],
    ['$.Body.readings[?(@.a = 1)]', /assignment/],
    ['$.Body.readings[?(@.a > 1; @.b)]', /several expressions|not valid|refused/],
    ['$.Body.readings[?(Math)]', /the name 'Math'/],
    ['$.Body.readings[(@.length - 1)]', /./],
  ];
  for (const [path, rx] of refused.slice(0, -1)) {
    it(`refuses ${path} when compiled`, () =>
      assert.throws(
        () => compileExpression(path, 'JsonPath'),
        (e: Error) => e instanceof ExpressionError && / refused: /.test(e.message) && rx.test(e.message),
      ));
  }

  const allowed = [
    "$..[?(@.spo2 != null && @.kN != 'x')]",
    '$.Body.readings[?(@.v > 3 && !(@.flag) || @.v * 2 - 1 <= 10 % 3)]',
    "$.Body.readings[?(@.tag == '_$_v' || @['odd-name'] === \"x\")]",
    "$.Body.readings[?(typeof @.v == 'number' ? @.v > 0 : -@.w < 0)]",
  ];
  for (const path of allowed) {
    it(`accepts ${path}`, () => assert.doesNotThrow(() => compileExpression(path, 'JsonPath')));
  }
});

describe('expressions: JMESPath with the iomt-fhir custom functions', () => {
  const table: [string, unknown, unknown][] = [
    ['add(`10`, `10`)', {}, 20],
    ['add(left, right)', { left: 40, right: 50 }, 90],
    ['subtract(left, right)', { left: 40, right: 50 }, -10],
    ['multiply(left, right)', { left: 40, right: 50 }, 2000],
    ['divide(left, right)', { left: 40, right: 50 }, 0.8],
    ['pow(left, right)', { left: 100, right: 0.5 }, 10],
    ['insertString(original, toInsert, pos)', { original: 'suess', toInsert: 'cc', pos: 2 }, 'success'],
    ['insertString(original, toInsert, length(original))', { original: 'myString', toInsert: '!!' }, 'myString!!'],
    ['fromUnixTimestamp(unix)', { unix: 1625677200 }, '2021-07-07T17:00:00.000Z'],
    ['fromUnixTimestampMs(unix)', { unix: 1626799080000 }, '2021-07-20T16:38:00.000Z'],
    ["matchesRegex(id, '^SN-[0-9]+$')", { id: 'SN-42' }, true],
    ['to_number(v)', { v: '72' }, 72],
  ];
  for (const [expr, data, result] of table) {
    it(`${expr} → ${JSON.stringify(result)}`, () =>
      assert.deepEqual(compileExpression(expr, 'JmesPath').selectTokens(data), [{ value: result }]));
  }

  const failures: [string, unknown, RegExp][] = [
    ['divide(left, right)', { left: 50, right: 0 }, /division by zero/],
    ['insertString(original, toInsert, pos)', { original: 'myString', toInsert: '!!', pos: 100 }, /out of range/],
    ['add(a, `1`)', { a: '1' }, /expected argument 1 to be type number/],
    ['pow(`10`, `1000`)', {}, /not a finite number/],
    // Patterns RE2 cannot run are refused, with the reason (here the pattern comes from the payload, so at translation).
    ['matchesRegex(id, p)', { id: 'aa', p: '(.)\\1' }, /pattern refused: back-references are not supported/],
    ['matchesRegex(id, p)', { id: 'ab', p: '(?=a)a' }, /pattern refused: lookahead and lookbehind are not supported/],
    ['matchesRegex(id, p)', { id: 'aa', p: 'a{2000}' }, /pattern refused: RE2 cannot run it: invalid repetition size/],
  ];
  for (const [expr, data, rx] of failures) {
    it(`${expr} on ${JSON.stringify(data).slice(0, 40)} fails clearly`, () =>
      assert.throws(() => compileExpression(expr, 'JmesPath').selectTokens(data), rx));
  }

  it('refuses a matchesRegex() pattern written in the template when it is compiled, with the reason', () => {
    assert.throws(
      () => compileExpression("matchesRegex(tag, '(a)\\1')", 'JmesPath'),
      (e: Error) => e instanceof ExpressionError && /pattern '\(a\)\\1' refused: back-references are not supported/.test(e.message),
    );
    assert.throws(() => compileExpression("matchesRegex(tag, '(?<!a)b')", 'JmesPath'), /lookahead and lookbehind/);
  });

  // Issue 13: '((a+))+$' got past the nested-quantifier check and took 24.5 s; '(.*a){12}$' is polynomial. On RE2
  // both take time linear in the input. Without RE2 these cases backtrack for hours (the timeout fails the test).
  for (const [pattern, value] of [
    ['((a+))+$', 'a'.repeat(40) + '!'],
    ['(.*a){12}$', 'a'.repeat(4000) + '!'],
    ['(a+)+$', 'a'.repeat(4000) + '!'],
    ['(x|xx)*y', 'x'.repeat(4000)],
  ]) {
    it(`runs matchesRegex(tag, '${pattern}') on a hostile value without backtracking`, function () {
      this.timeout(10_000);
      const e = compileExpression(`matchesRegex(tag, '${pattern}')`, 'JmesPath');
      assert.deepEqual(e.selectTokens({ tag: value }), [{ value: false }]);
      // Same answers as JavaScript on values that do not backtrack.
      for (const benign of ['aaa', 'a'.repeat(12), 'xxy', 'b'])
        assert.deepEqual(e.selectTokens({ tag: benign }), [{ value: new RegExp(pattern).test(benign) }], benign);
    });
  }

  it('keeps RE2 working after many distinct patterns, refused ones included (its heap is fixed)', function () {
    this.timeout(60_000);
    // re2-wasm's heap is 16 MiB: without deleting evicted and refused patterns, RE2 breaks after about 10,000 of each.
    const e = compileExpression('matchesRegex(id, p)', 'JmesPath');
    for (let i = 0; i < 20_000; i++) {
      assert.deepEqual(e.selectTokens({ id: `SN-${i}`, p: `^SN-${i}$` }), [{ value: true }]);
      assert.throws(() => e.selectTokens({ id: 'a', p: `a{${2000 + i}}` }), /invalid repetition size/);
    }
    assert.deepEqual(e.selectTokens({ id: 'SN-1', p: '^SN-[0-9]+$' }), [{ value: true }]);
  });

  it('refuses unknown functions and syntax errors when compiled', () => {
    assert.throws(() => compileExpression('toUpper(a)', 'JmesPath'), /unknown function toUpper\(\)/);
    assert.throws(() => compileExpression('a.[', 'JmesPath'), ExpressionError);
  });

  it('leaves jmespath itself intact: built-ins work and a custom name never shadows one', () => {
    assert.equal(jmespath.search({ a: [3, 1, 2] }, 'max(a)'), 3);
    assert.deepEqual(Object.keys(CUSTOM_FUNCTIONS).sort(), [
      'add',
      'divide',
      'fromUnixTimestamp',
      'fromUnixTimestampMs',
      'insertString',
      'matchesRegex',
      'multiply',
      'pow',
      'subtract',
    ]);
    assert.equal(Object.hasOwn(Object.prototype, '_interpreter'), false);
  });
});

describe('JSONPath: the parser cache stays bounded', () => {
  it('compiling more distinct paths than JSONPATH_CACHE_MAX (vendors’ previews) does not grow jsonpath-plus’s cache past it', () => {
    for (let i = 0; i < JSONPATH_CACHE_MAX + 1500; i++) {
      const sel = compileExpression(`$.body[?(@.seq == ${i})].value`, 'JsonPath').selectTokens({ body: [{ seq: i, value: i }] });
      assert.deepEqual(
        sel.map((s) => s.value),
        [i],
      );
    }
    // Each path leaves a path entry and a filter entry: past the bound the cache is emptied and starts again.
    assert.ok(jsonPathCacheSize() <= JSONPATH_CACHE_MAX + 2, `${jsonPathCacheSize()} entries`);
    assert.deepEqual(
      compileExpression('$.a', 'JsonPath')
        .selectTokens({ a: 1 })
        .map((s) => s.value),
      [1],
      'paths still compile and select after the cache was emptied',
    );
  });
});
