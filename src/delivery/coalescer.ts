/**
 * Group commit for EHR writes. Jobs handed in while earlier transactions are still in flight wait and leave together in
 * the next one: a quiet gateway writes each job at once (no added latency), a busy one writes fewer, larger
 * transactions instead of queueing more of them. Jobs that share a key (device, patient) with a transaction in flight
 * wait for it, so this process never races itself for the same identity and never waits on its own Redis lock.
 */

export interface CoalescerOptions<T, R> {
  /** Most weight (readings) in one batch; an item heavier than that goes alone. */
  maxBatch: number;
  weightOf(item: T): number;
  /** Most batches running at once. */
  maxInFlight: number;
  /** Keys that two batches running at once may not share. */
  keysOf(item: T): string[];
  /** Items that must form a batch of their own (still waiting for their keys). */
  solo?(item: T): boolean;
  /** Runs one batch; answers one result or error per item, in order. */
  run(items: T[]): Promise<Array<R | Error>>;
}

interface Waiting<T, R> {
  item: T;
  keys: string[];
  weight: number;
  solo: boolean;
  resolve(r: R): void;
  reject(e: Error): void;
}

export class Coalescer<T, R> {
  private pending: Waiting<T, R>[] = [];
  private readonly held = new Set<string>();
  private inFlight = 0;
  private scheduled = false;

  constructor(private readonly options: CoalescerOptions<T, R>) {}

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const o = this.options;
      this.pending.push({ item, keys: o.keysOf(item), weight: o.weightOf(item), solo: o.solo?.(item) ?? false, resolve, reject });
      this.schedule();
    });
  }

  /** After the current turn of the event loop, so that items handed in together leave together. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.inFlight < this.options.maxInFlight && this.pending.length) {
      const batch: Waiting<T, R>[] = [];
      const rest: Waiting<T, R>[] = [];
      let weight = 0;
      for (const w of this.pending) {
        const fits = batch.length === 0 || (!w.solo && !batch[0].solo && weight + w.weight <= this.options.maxBatch);
        if (fits && !w.keys.some((k) => this.held.has(k))) {
          batch.push(w);
          weight += w.weight;
        } else rest.push(w);
      }
      if (!batch.length) return;
      this.pending = rest;
      const keys = [...new Set(batch.flatMap((w) => w.keys))];
      for (const k of keys) this.held.add(k);
      this.inFlight++;
      void this.runBatch(batch).finally(() => {
        this.inFlight--;
        for (const k of keys) this.held.delete(k);
        this.schedule();
      });
    }
  }

  private async runBatch(batch: Waiting<T, R>[]): Promise<void> {
    let results: Array<R | Error>;
    try {
      results = await this.options.run(batch.map((w) => w.item));
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      results = batch.map(() => e);
    }
    batch.forEach((w, i) => {
      const r = results[i];
      if (r instanceof Error) w.reject(r);
      else if (r === undefined) w.reject(new Error('the batch gave no result for this item'));
      else w.resolve(r);
    });
  }
}
