/** MLLP sender allow-list (MLLP_ALLOWED_SENDERS): per sending facility, addresses, CIDR blocks and certificates. */
import { strict as assert } from 'node:assert';
import { MllpAllowList } from '../../src/access/mllp-senders.js';

const FP = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';

describe('MLLP sender allow-list', () => {
  const list = new MllpAllowList([
    'ICU_A=10.1.20.0/24|10.9.9.9',
    `LAB=cert:${FP}`,
    'WARD=10.2.0.5|cert:' + FP.replace(/:/g, ''),
    'V6=fd00::/8',
    '*=127.0.0.1',
  ]);
  const cases: [string, string, string | undefined, boolean][] = [
    ['ICU_A', '10.1.20.77', undefined, true],
    ['ICU_A', '::ffff:10.1.20.77', undefined, true],
    ['ICU_A', '10.9.9.9', undefined, true],
    ['ICU_A', '10.1.21.1', undefined, false],
    ['LAB', '192.168.0.1', FP, true],
    ['LAB', '192.168.0.1', FP.toLowerCase().replace(/:/g, ''), true],
    ['LAB', '192.168.0.1', undefined, false],
    ['LAB', '192.168.0.1', FP.replace('AB', '00'), false],
    ['WARD', '10.2.0.5', FP, true],
    ['WARD', '10.2.0.6', FP, false],
    ['WARD', '10.2.0.5', undefined, false],
    ['V6', 'fd00::1', undefined, true],
    ['V6', 'fe80::1', undefined, false],
    ['ELSEWHERE', '127.0.0.1', undefined, true],
    ['ELSEWHERE', '10.1.20.77', undefined, false],
  ];
  for (const [facility, addr, cert, ok] of cases) {
    it(`${facility} from ${addr}${cert ? ' with a certificate' : ''}: ${ok ? 'allowed' : 'refused'}`, () => {
      const r = list.check(facility, addr, cert);
      assert.equal(r.ok, ok, r.reason);
      assert.ok(r.reason.length > 0);
    });
  }
  it('without a default entry, an unlisted facility is refused', () => {
    const r = new MllpAllowList(['ICU_A=10.0.0.1']).check('OTHER', '10.0.0.1');
    assert.equal(r.ok, false);
    assert.match(r.reason, /not in MLLP_ALLOWED_SENDERS/);
  });
  it('unset: everyone is allowed', () => assert.equal(new MllpAllowList([]).check('X', '8.8.8.8').ok, true));
  it('reports every malformed entry', () => {
    const l = new MllpAllowList(['nofacility', 'A=999.1.1.1', 'B=10.0.0.0/33', 'C=cert:1234']);
    assert.equal(l.errors.length, 4);
  });
});
