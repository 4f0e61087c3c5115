/**
 * Differential tests of the deterministic identifiers: every id the gateway has written (job ids, Observation
 * identifiers, lock keys) must come out the same after a change of how they are computed. The reference functions
 * below are the first implementation (a Hash object, the digest as a Buffer edited in place); the gateway's must agree
 * with them on every input, including non-ASCII text, lone surrogates and the separator itself.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { deterministicUuid, hashKey } from '../../src/core/ids.js';
import { canonicalEui64 } from '../../src/fhir/identifiers.js';

function referenceUuid(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\u001f')).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

function referenceHashKey(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u001f')).digest('hex').slice(0, 32);
}

function referenceEui64(v: string): string | undefined {
  const hex = v.replace(/[-:\s]/g, '');
  return /^[0-9A-Fa-f]{16}$/.test(hex) ? hex.toUpperCase().match(/.{2}/g)!.join('-') : undefined;
}

/** Parts as the gateway passes them, and as anything could: ASCII, any UTF-16 (lone surrogates too), the separator. */
const part = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: fc.constantFrom('a', '\u001f', '|', 'é', '\ud800', '\udc00', '😀') }),
  fc.constantFrom('', 'Observation', 'urn:ietf:rfc:3986', '2026-11-23T10:14:05+01:00'),
);

describe('deterministic ids (core/ids.ts) against the reference implementation', () => {
  it('deterministicUuid and hashKey agree on 20,000 generated part lists', () => {
    fc.assert(
      fc.property(fc.array(part, { maxLength: 8 }), (parts) => {
        assert.equal(deterministicUuid(...parts), referenceUuid(...parts));
        assert.equal(hashKey(...parts), referenceHashKey(...parts));
      }),
      { numRuns: 20_000 },
    );
  });

  it('every variant digit occurs, and the result is a version 5 layout', () => {
    const variants = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const u = deterministicUuid('Observation', String(i));
      assert.equal(u, referenceUuid('Observation', String(i)));
      assert.match(u, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      variants.add(u[19]);
    }
    assert.deepEqual([...variants].sort(), ['8', '9', 'a', 'b']);
  });
});

describe('canonicalEui64 (fhir/identifiers.ts) against the reference implementation', () => {
  it('agrees on generated values: hex with and without separators, case, whitespace, near misses', () => {
    const hexDigit = fc.constantFrom(...'0123456789abcdefABCDEFgG');
    const sep = fc.constantFrom('', '', '', '-', ':', ' ', '\t', '\u00a0', '\n', '.', '--');
    const value = fc.oneof(
      fc.array(fc.tuple(hexDigit, sep), { minLength: 14, maxLength: 18 }).map((xs) => xs.map(([d, s]) => d + s).join('')),
      fc.string({ unit: fc.constantFrom('0', 'a', 'F', '-', ':', ' ', 'x') }),
      fc.string(),
    );
    fc.assert(
      fc.property(value, (v) => assert.equal(canonicalEui64(v), referenceEui64(v))),
      { numRuns: 20_000 },
    );
  });
});
