/**
 * Configuration of the operations console (a fragment of the one schema; see config/schema.ts).
 */
import type { ConfigValue } from '../config/schema.js';
import type { ConfigKey } from '../config/schema.js';

export const CONSOLE_KEYS: readonly ConfigKey[] = [
  {
    env: 'CONSOLE_ENABLED',
    type: 'bool',
    default: 'true',
    description: 'Serve the operations console at /console (sign-in with an admin, operator or vendor API key)',
  },
  {
    env: 'CONSOLE_SESSION_IDLE_MS',
    type: 'int',
    default: '900000',
    min: 1000,
    max: 86_400_000,
    description: 'A console session unused for this long ends (the user signs in again)',
  },
  {
    env: 'CONSOLE_SESSION_MAX_MS',
    type: 'int',
    default: '43200000',
    min: 1000,
    max: 604_800_000,
    description: 'A console session ends this long after sign-in, however active',
  },
];

export interface ConsoleConfig {
  enabled: boolean;
  idleMs: number;
  maxMs: number;
}

export function readConsoleConfig(raw: ReadonlyMap<string, ConfigValue>): ConsoleConfig {
  return {
    enabled: raw.get('CONSOLE_ENABLED') !== false,
    idleMs: (raw.get('CONSOLE_SESSION_IDLE_MS') as number | undefined) ?? 900_000,
    maxMs: (raw.get('CONSOLE_SESSION_MAX_MS') as number | undefined) ?? 43_200_000,
  };
}
