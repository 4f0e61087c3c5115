/** Problems found in a mapping (template files), each with the file and the JSON path inside it. */

export type MappingSeverity = 'error' | 'warning';

export interface MappingIssue {
  /** File name as the vendor knows it (devicecontent.json, fhirmapping.json, samples/x.json), when known. */
  file?: string;
  /** JSONPath inside that file, e.g. $.template[2].template.deviceIdExpression */
  path: string;
  message: string;
  severity: MappingSeverity;
}

export function formatIssue(i: MappingIssue): string {
  const where = [i.file, i.path].filter(Boolean).join(' ');
  return `${i.severity === 'warning' ? 'warning: ' : ''}${where}: ${i.message}`;
}

export const errorsOf = (issues: readonly MappingIssue[]) => issues.filter((i) => i.severity === 'error');

/** Thrown by createMappingAdapter when a mapping has errors; carries every one of them. */
export class MappingError extends Error {
  readonly issues: MappingIssue[];
  constructor(issues: MappingIssue[]) {
    const errs = errorsOf(issues);
    super(`invalid mapping (${errs.length} error${errs.length === 1 ? '' : 's'}):\n${errs.map(formatIssue).join('\n')}`);
    this.name = 'MappingError';
    this.issues = issues;
  }
}

/** Collects issues at paths under a common prefix. */
export class IssueSink {
  readonly issues: MappingIssue[] = [];
  constructor(private readonly file?: string) {}
  error(path: string, message: string): void {
    this.issues.push({ file: this.file, path, message, severity: 'error' });
  }
  warning(path: string, message: string): void {
    this.issues.push({ file: this.file, path, message, severity: 'warning' });
  }
  get errorCount(): number {
    return this.issues.filter((i) => i.severity === 'error').length;
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Case-insensitive property read (iomt's .NET deserialiser ignores the case of property names). */
export function prop(obj: Record<string, unknown>, name: string): { key: string; value: unknown } | undefined {
  if (Object.hasOwn(obj, name)) return { key: name, value: obj[name] };
  const lower = name.toLowerCase();
  const key = Object.keys(obj).find((k) => k.toLowerCase() === lower);
  return key === undefined ? undefined : { key, value: obj[key] };
}

/** "$.a" + "b" → "$.a.b"; keys that are not identifiers use bracket notation. */
export function child(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}['${key}']`;
}
