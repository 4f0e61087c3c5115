/**
 * A parser of the Prometheus text exposition format (0.0.4), strict enough for tests: comment lines HELP and TYPE,
 * samples `name{label="value",…} value`, label values unescaped. Used to check /metrics and the dashboard's queries.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  help?: string;
  type?: string;
}

export interface Exposition {
  families: Map<string, Family>;
  samples: Sample[];
  /** The family a sample name belongs to (histograms: `_bucket`, `_sum`, `_count`). */
  familyOf(sample: string): string | undefined;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const SAMPLE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: \\d+)?$`);
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;

function unescape(v: string): string {
  return v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

export function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const at = LABEL.lastIndex;
    const m = LABEL.exec(text);
    if (!m) throw new Error(`bad labels at ${at}: ${text}`);
    if (m[1] in labels) throw new Error(`label ${m[1]} twice: ${text}`);
    labels[m[1]] = unescape(m[2]);
  }
  return labels;
}

export function parseExposition(text: string): Exposition {
  const families = new Map<string, Family>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = families.get(meta[2]) ?? {};
      const key = meta[1] === 'HELP' ? 'help' : 'type';
      if (f[key] !== undefined) throw new Error(`${meta[1]} twice for ${meta[2]}`);
      f[key] = meta[3];
      families.set(meta[2], f);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`bad value: ${line}`);
    samples.push({ name: m[1], labels: m[2] ? parseLabels(m[2]) : {}, value });
  }
  const familyOf = (name: string): string | undefined => {
    if (families.has(name)) return name;
    const base = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1];
    return base && families.get(base)?.type === 'histogram' ? base : undefined;
  };
  return { families, samples, familyOf };
}

/** The value of the one sample with exactly these labels, or undefined. */
export function sampleValue(e: Exposition, name: string, labels: Record<string, string>): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return e.samples.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)?.value;
}
