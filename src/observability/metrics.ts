/**
 * Counters and gauges kept in the process and exposed in Prometheus text format at /metrics.
 * Labels never carry PHI (no patient ids, no values): adapter, channel, outcome, device type at most.
 */
type Labels = Record<string, string>;

function key(name: string, labels: Labels): string {
  const l = Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`)
    .join(',');
  return l ? `${name}{${l}}` : name;
}

export class Metrics {
  private readonly counters = new Map<string, number>();
  private readonly gauges = new Map<string, () => number | Promise<number>>();
  private readonly families = new Map<string, () => Array<{ labels: Labels; value: number }>>();

  inc(name: string, labels: Labels = {}, by = 1): void {
    const k = key(name, labels);
    this.counters.set(k, (this.counters.get(k) ?? 0) + by);
  }

  get(name: string, labels: Labels = {}): number {
    return this.counters.get(key(name, labels)) ?? 0;
  }

  gauge(name: string, read: () => number | Promise<number>): void {
    this.gauges.set(name, read);
  }

  /** A gauge with one series per label set (a state set, one series per destination…), read when rendered. */
  gaugeFamily(name: string, read: () => Array<{ labels: Labels; value: number }>): void {
    this.families.set(name, read);
  }

  async render(): Promise<string> {
    const lines: string[] = [];
    for (const [k, v] of [...this.counters].sort()) lines.push(`iomt_${k} ${v}`);
    for (const [k, read] of this.gauges) {
      try {
        lines.push(`iomt_${k} ${await read()}`);
      } catch {
        /* a gauge that cannot be read now is left out */
      }
    }
    for (const [name, read] of this.families) for (const { labels, value } of read()) lines.push(`iomt_${key(name, labels)} ${value}`);
    return lines.join('\n') + '\n';
  }
}
