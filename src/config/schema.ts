/**
 * One configuration schema: each key with its environment variable, type, default and description. Validated at
 * start-up; every error is reported, not just the first. `--help` and docs print this table.
 * Units are in the names (…_MS, …_BYTES). Feature areas add their keys in their own fragment (see hl7v2/config.ts) and
 * the fragments are listed once, in `ALL_KEYS` of app/features.ts (the composition root).
 */

/** Every configuration error at once, each naming its variable. */
export class ConfigError extends Error {
  constructor(readonly errors: string[]) {
    super(`invalid configuration:\n  - ${errors.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

export type ConfigType = 'string' | 'int' | 'bool' | 'url' | 'enum' | 'list';

export interface ConfigKey {
  env: string;
  type: ConfigType;
  /** Default as the environment would spell it; undefined = unset (optional) unless `required`. */
  default?: string;
  description: string;
  values?: readonly string[];
  required?: boolean;
  /** Never printed (tokens, keys). */
  secret?: boolean;
  min?: number;
  max?: number;
}

export type ConfigValue = string | number | boolean | string[] | undefined;

export function parseValue(key: ConfigKey, raw: string): { value?: ConfigValue; error?: string } {
  switch (key.type) {
    case 'string':
      return { value: raw };
    case 'int': {
      if (!/^-?\d+$/.test(raw.trim())) return { error: `${key.env}: '${raw}' is not a whole number` };
      const n = Number(raw);
      if (key.min !== undefined && n < key.min) return { error: `${key.env}: ${n} is below the minimum ${key.min}` };
      if (key.max !== undefined && n > key.max) return { error: `${key.env}: ${n} is above the maximum ${key.max}` };
      return { value: n };
    }
    case 'bool': {
      const v = raw.trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return { value: true };
      if (['0', 'false', 'no', 'off'].includes(v)) return { value: false };
      return { error: `${key.env}: '${raw}' is not a boolean (true/false)` };
    }
    case 'url': {
      try {
        const u = new URL(raw);
        return { value: u.toString().replace(/\/$/, '') };
      } catch {
        return { error: `${key.env}: '${raw}' is not a URL` };
      }
    }
    case 'enum':
      if (!key.values?.includes(raw)) return { error: `${key.env}: '${raw}' is not one of ${key.values?.join(', ')}` };
      return { value: raw };
    case 'list':
      return {
        value: raw
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean),
      };
    default:
      key.type satisfies never;
      return { error: `${key.env}: unknown type` };
  }
}

export interface Loaded {
  values: Map<string, ConfigValue>;
  errors: string[];
}

export function loadKeys(keys: readonly ConfigKey[], env: NodeJS.ProcessEnv): Loaded {
  const values = new Map<string, ConfigValue>();
  const errors: string[] = [];
  for (const key of keys) {
    const raw = env[key.env];
    const src = raw !== undefined && raw !== '' ? raw : key.default;
    if (src === undefined) {
      if (key.required) errors.push(`${key.env} is required: ${key.description}`);
      values.set(key.env, undefined);
      continue;
    }
    const { value, error } = parseValue(key, src);
    if (error) errors.push(error);
    values.set(key.env, value);
  }
  return { values, errors };
}

/** The table printed by --help and kept in README/docs. */
export function describeKeys(keys: readonly ConfigKey[]): string {
  const rows = keys.map((k) => {
    const def = k.default === undefined ? '(unset)' : k.secret ? '(secret)' : k.default || "''";
    const vals = k.values ? `${k.description.endsWith('.') ? '' : '.'} One of: ${k.values.join(', ')}.` : '';
    return `  ${k.env.padEnd(30)} ${k.type.padEnd(6)} ${def.padEnd(24)} ${k.description}${vals}`;
  });
  return [`  ${'VARIABLE'.padEnd(30)} ${'TYPE'.padEnd(6)} ${'DEFAULT'.padEnd(24)} DESCRIPTION`, ...rows].join('\n');
}
