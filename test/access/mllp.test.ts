/** MLLP sender allow-list (MLLP_ALLOWED_SENDERS): per sending facility, addresses, CIDR blocks and certificates. */
import { strict as assert } from 'node:assert';
import { MllpAllowList, mllpSenderPolicy } from '../../src/access/mllp-senders.js';

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
  it('gives the same verdicts asked again, in another order, and past the bound of remembered addresses', () => {
    for (const [facility, addr, cert, ok] of [...cases].reverse())
      assert.equal(list.check(facility, addr, cert).ok, ok, `${facility} ${addr}`);
    // 2,000 other addresses fill the remembered verdicts of the default entry past its bound; the verdicts hold.
    for (let i = 0; i < 2000; i++) assert.equal(list.check('ELSEWHERE', `10.7.${i >> 8}.${i & 255}`).ok, false);
    assert.equal(list.check('ELSEWHERE', '127.0.0.1').ok, true);
    assert.equal(list.check('ELSEWHERE', '10.1.20.77').ok, false);
  });
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

describe('MLLP sender policy: who may send when MLLP_ALLOWED_SENDERS is unset', () => {
  const base = { entries: [] as string[], production: true, mutualTls: false, allowAny: false };
  const cases: [string, Partial<typeof base>, boolean, string][] = [
    ['sandbox EHR: anyone', { production: false }, true, 'info'],
    ['real EHR, nothing set: closed', {}, false, 'error'],
    ['real EHR, mutual TLS: certificate holders', { mutualTls: true }, true, 'info'],
    ['real EHR, MLLP_ALLOW_ANY_SENDER: anyone, loudly', { allowAny: true }, true, 'warn'],
    ['real EHR, an allow-list: the list', { entries: ['*=10.0.0.1'] }, false, 'info'],
  ];
  for (const [what, over, anyoneFrom8888, level] of cases) {
    it(what, () => {
      const p = mllpSenderPolicy({ ...base, ...over });
      assert.equal(p.level, level);
      assert.equal(p.senders.check('WARD', '8.8.8.8').ok, anyoneFrom8888, p.message);
    });
  }
  it('the closed answer says what to set', () => {
    const r = mllpSenderPolicy(base).senders.check('WARD', '10.0.0.1');
    assert.match(r.reason, /MLLP is closed.*MLLP_ALLOWED_SENDERS.*MLLP_TLS_REQUIRE_CLIENT_CERT/);
  });
  it('knows the addresses of every facility (the connection reservation), not certificate-only entries', () => {
    const l = new MllpAllowList(['A=10.1.0.0/16', 'B=cert:' + 'AB'.repeat(32), 'C=fd00::1']);
    assert.equal(l.knowsAddress('10.1.2.3'), true);
    assert.equal(l.knowsAddress('::ffff:10.1.2.3'), true);
    assert.equal(l.knowsAddress('fd00::1'), true);
    assert.equal(l.knowsAddress('10.2.0.1'), false);
    assert.equal(new MllpAllowList([]).knowsAddress('10.1.2.3'), false);
  });
});
