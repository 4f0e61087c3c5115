/**
 * UTF-8 checks on raw bytes, before anything decodes them. Decoders replace a byte sequence that is not UTF-8 with
 * U+FFFD silently, so two ids that differ only in such bytes would become one id: the channels refuse the bytes instead.
 * `isUtf8` (node:buffer) answers whether; this says where, for the refusal.
 */

/**
 * The offset where the first sequence that is not well-formed UTF-8 starts (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or -1 when all of it is well-formed.
 */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  const n = bytes.length;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => k < n && bytes[k] >= lo && bytes[k] <= hi;
  while (i < n) {
    const b = bytes[i];
    if (b < 0x80) i += 1;
    else if (b >= 0xc2 && b <= 0xdf && cont(i + 1)) i += 2;
    else if (b === 0xe0 && cont(i + 1, 0xa0) && cont(i + 2)) i += 3;
    else if (((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) && cont(i + 1) && cont(i + 2)) i += 3;
    else if (b === 0xed && cont(i + 1, 0x80, 0x9f) && cont(i + 2)) i += 3;
    else if (b === 0xf0 && cont(i + 1, 0x90) && cont(i + 2) && cont(i + 3)) i += 4;
    else if (b >= 0xf1 && b <= 0xf3 && cont(i + 1) && cont(i + 2) && cont(i + 3)) i += 4;
    else if (b === 0xf4 && cont(i + 1, 0x80, 0x8f) && cont(i + 2) && cont(i + 3)) i += 4;
    else return i;
  }
  return -1;
}
