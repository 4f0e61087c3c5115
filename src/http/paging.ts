/**
 * The one ?offset=&limit= rule of every list route: whole numbers, limit 1..500 (default 100), offset ≥ 0; anything
 * else is a 400 that says so (rather than a silent default that hides a typo).
 */
import { badRequest } from '../core/errors.js';

export const MAX_PAGE = 500;

export function page(query: Record<string, unknown>, defaultLimit = 100): { offset: number; limit: number } {
  const num = (name: string, v: unknown): number | undefined => {
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string' || !/^\d+$/.test(v)) throw badRequest(`${name} must be a whole number`, [name]);
    return Number(v);
  };
  const offset = num('offset', query.offset) ?? 0;
  const limit = Math.min(MAX_PAGE, Math.max(1, num('limit', query.limit) ?? defaultLimit));
  return { offset, limit };
}
