/** The expression layer: JSONPath (jsonpath-plus) in iomt-fhir's Newtonsoft dialect, JMESPath with iomt's custom functions. */
import { strict as assert } from 'node:assert';
import jmespath from 'jmespath';
import { compileExpression, CUSTOM_FUNCTIONS, ExpressionError, normaliseJsonPath } from '../../src/adapters/mapping/expressions.js';

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
    // Vendor patterns are untrusted: shapes that backtrack exponentially are refused, not run.
    ["matchesRegex(id, '(a+)+$')", { id: 'a'.repeat(40) + '!' }, /pattern refused: nested quantifiers/],
    ["matchesRegex(id, '(x|xx)*y')", { id: 'x'.repeat(40) }, /pattern refused: a quantified alternation/],
    ["matchesRegex(id, '(.)\\1')", { id: 'aa' }, /pattern refused: back-references/],
  ];
  for (const [expr, data, rx] of failures) {
    it(`${expr} fails clearly`, () => assert.throws(() => compileExpression(expr, 'JmesPath').selectTokens(data), rx));
  }

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
