/**
 * Deterministic identifiers: the same content gives the same id in every process and on every retry, which is what
 * makes a replay or a redelivery harmless (job ids, resource ids, conditional-create identifiers, lock keys).
 */
import { createHash } from 'node:crypto';

/** A UUID (version 5 layout) derived from a SHA-256 of the parts: stable across processes and retries. */
export function deterministicUuid(...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\u001f')).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** A 128-bit hex key of the parts (job ids, Redis keys). */
export function hashKey(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u001f')).digest('hex').slice(0, 32);
}
