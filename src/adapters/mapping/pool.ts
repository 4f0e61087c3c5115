/**
 * Declarative templates evaluated off the event loop, with a hard time budget per message (issue 13). A small pool of
 * worker threads (TEMPLATE_WORKERS) runs the mappings; a message whose templates overrun TEMPLATE_BUDGET_MS is refused
 * (422, not retryable: the same message would overrun again) and the worker that ran it is terminated and replaced, so
 * whatever a template does (a pathological path over a large payload, memory growth) costs at most the budget, and
 * the event loop (health checks, other channels, delivery) is never blocked by it. A worker that runs out of its
 * memory limit refuses the message the same way.
 *
 * The budget starts when a worker takes the message, so a message waiting behind a costly one is not refused for
 * the wait. The static refusals (filter-guard.ts), RE2 (regex.ts) and the size limits (limits.ts) keep templates
 * cheap in the first place; the pool is the bound that holds whatever gets past them.
 */
import type { OperationOutcomeIssue } from 'fhir/r4';
import { Worker } from 'node:worker_threads';
import type { InboundMessage, Reading, TranslationContext } from '../../core/contract.js';
import { GatewayError, issue, outcome, TranslationError } from '../../core/errors.js';
import { limitText, templateLimits } from '../limits.js';
import { siblingModule, threadEntry } from '../../core/threads.js';
import type { MappingFiles } from './adapter.js';

/** What a worker needs to compile a mapping it has not seen. */
export interface MappingSource {
  deviceMapping: unknown;
  fhirMapping: unknown;
  files?: MappingFiles;
  vendor?: string;
}

export interface PoolRequest {
  id: number;
  key: string;
  source?: MappingSource;
  vendor?: string;
  message: InboundMessage;
  context: TranslationContext;
}

export type PoolResponse =
  | { id: number; ok: true; translations: Reading[]; origins: number[][] }
  | { id: number; ok: false; missing: true }
  | { id: number; ok: false; status: number; issues: OperationOutcomeIssue[] }
  | { id: number; ok: false; error: string };

export interface PoolResult {
  translations: Reading[];
  /** Per reading, the index in the mapping's FHIR templates of each Observation's template (-1: unknown). */
  origins: number[][];
}

/** Heap limit of a worker (MiB): a template that grows memory without bound stops its worker, not the gateway. */
export const WORKER_HEAP_MB = 256;

const WORKER_URL = siblingModule(import.meta.url, 'worker');

interface Job {
  key: string;
  source: MappingSource;
  message: InboundMessage;
  context: TranslationContext;
  adapterId: string;
  resolve(r: PoolResult): void;
  reject(e: Error): void;
  /** A worker answered "missing": the source has been sent once. */
  sentSource?: boolean;
}

interface Slot {
  worker: Worker;
  /** The worker has loaded its module and takes messages (the budget never counts a worker's start). */
  ready: boolean;
  loaded: Set<string>;
  job?: Job;
  reqId?: number;
  timer?: NodeJS.Timeout;
  /** Set when this worker is being replaced: its messages and exit are ignored. */
  retired?: boolean;
}

/** The refusal of a message whose templates overran the budget. */
export const overBudget = (adapterId: string, budgetMs: number) =>
  new TranslationError([
    issue(
      'too-costly',
      `the templates of adapter '${adapterId}' did not finish this message within its time budget; a message may take ${limitText('budgetMs', 'ms', budgetMs)}. The message is refused and not retried: simplify the templates (or the message) and replay it`,
    ),
  ]);

export class TemplatePool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  /** Workers terminated for overrunning the budget or their memory (for metrics and tests). */
  replaced = 0;

  constructor(private readonly size: number) {}

  /** Runs one message through a mapping in a worker. Rejects with a GatewayError (422 when the message is at fault). */
  run(adapterId: string, key: string, source: MappingSource, message: InboundMessage, context: TranslationContext): Promise<PoolResult> {
    if (this.closed) return Promise.reject(new GatewayError(503, outcome([issue('transient', 'the gateway is stopping; retry')])));
    // Only what the mapping reads crosses the thread boundary (not the principal).
    const msg: InboundMessage = {
      body: message.body,
      channel: message.channel,
      receivedAt: message.receivedAt,
      attributes: message.attributes,
    };
    return new Promise<PoolResult>((resolve, reject) => {
      this.queue.push({ key, source, message: msg, context, adapterId, resolve, reject });
      this.pump();
    });
  }

  /** Terminates every worker; queued messages are refused as retryable (the gateway is stopping). */
  async close(): Promise<void> {
    this.closed = true;
    for (const j of this.queue.splice(0)) j.reject(new GatewayError(503, outcome([issue('transient', 'the gateway is stopping; retry')])));
    await Promise.all(this.slots.splice(0).map((s) => this.retire(s)));
  }

  /** Number of live workers (tests). */
  get workers(): number {
    return this.slots.length;
  }

  /** Starts the workers now rather than on the first message (benchmarks; the gateway starts them on demand). */
  warm(): void {
    while (this.slots.length < this.size) this.spawn();
  }

  private spawn(): Slot {
    const { entry, eval: isEval } = threadEntry(WORKER_URL);
    const worker = new Worker(entry, {
      eval: isEval,
      workerData: { limits: { ...templateLimits() } },
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB, maxYoungGenerationSizeMb: 32 },
      stdout: false,
      stderr: false,
    });
    const slot: Slot = { worker, ready: false, loaded: new Set() };
    worker.unref();
    worker.on('message', (res: PoolResponse | { ready: true }) => {
      if ('ready' in res) {
        slot.ready = true;
        this.pump();
      } else this.answer(slot, res);
    });
    worker.on('error', (err: Error) => this.lost(slot, err));
    worker.on('exit', (code) => this.lost(slot, new Error(`template worker exited with code ${code}`)));
    this.slots.push(slot);
    return slot;
  }

  private pump(): void {
    while (this.queue.length) {
      const slot = this.slots.find((s) => s.ready && !s.job && !s.retired);
      if (!slot) {
        // Start a worker when every live one is busy (each takes the queue when it is ready).
        if (this.slots.length < this.size && this.slots.every((s) => s.ready && s.job)) this.spawn();
        return;
      }
      this.dispatch(slot, this.queue.shift() as Job);
    }
  }

  private dispatch(slot: Slot, job: Job, withSource = !slot.loaded.has(job.key)): void {
    const id = this.nextId++;
    slot.job = job;
    slot.reqId = id;
    slot.worker.ref();
    const req: PoolRequest = { id, key: job.key, message: job.message, context: job.context, vendor: job.source.vendor };
    if (withSource) req.source = job.source;
    const budgetMs = templateLimits().budgetMs;
    slot.timer = setTimeout(() => {
      this.finish(slot)?.reject(overBudget(job.adapterId, budgetMs));
      this.replace(slot);
    }, budgetMs);
    try {
      slot.worker.postMessage(req);
    } catch (e) {
      // A payload that cannot be cloned (not JSON-like): the message's fault.
      this.finish(slot)?.reject(TranslationError.of(`the payload cannot be evaluated: ${(e as Error).message}`));
      this.pump();
    }
  }

  /** Clears the slot's job and returns it. */
  private finish(slot: Slot): Job | undefined {
    const job = slot.job;
    if (slot.timer) clearTimeout(slot.timer);
    slot.job = undefined;
    slot.reqId = undefined;
    slot.timer = undefined;
    if (!slot.retired) slot.worker.unref();
    return job;
  }

  private answer(slot: Slot, res: PoolResponse): void {
    if (slot.retired || res.id !== slot.reqId || !slot.job) return;
    const job = slot.job;
    if (!res.ok && 'missing' in res) {
      if (job.sentSource) {
        this.finish(slot)?.reject(new GatewayError(500, outcome([issue('exception', 'the template worker lost the mapping')])));
      } else {
        job.sentSource = true;
        if (slot.timer) clearTimeout(slot.timer);
        this.dispatch(slot, job, true);
        return;
      }
    } else {
      this.finish(slot);
      if (res.ok) {
        slot.loaded.add(job.key);
        job.resolve({ translations: res.translations, origins: res.origins });
      } else if ('issues' in res) {
        slot.loaded.add(job.key);
        job.reject(res.status === 422 ? new TranslationError(res.issues) : new GatewayError(res.status, outcome(res.issues)));
      } else job.reject(new Error(res.error));
    }
    this.pump();
  }

  /** The worker died (its memory limit, or a crash): its message is refused, a fresh worker takes the queue. */
  private lost(slot: Slot, err: Error): void {
    if (slot.retired) return;
    const job = this.finish(slot);
    const oom = (err as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY';
    job?.reject(
      oom
        ? new TranslationError([
            issue(
              'too-costly',
              `the templates of adapter '${job.adapterId}' ran out of memory on this message (a worker may use ${WORKER_HEAP_MB} MiB); the message is refused and not retried`,
            ),
          ])
        : new GatewayError(500, outcome([issue('exception', `the template worker failed: ${err.message}`)])),
    );
    this.replace(slot);
  }

  private replace(slot: Slot): void {
    this.replaced++;
    void this.retire(slot);
    this.pump();
  }

  private async retire(slot: Slot): Promise<void> {
    slot.retired = true;
    if (slot.timer) clearTimeout(slot.timer);
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
    await slot.worker.terminate().catch(() => undefined);
  }
}

let pool: TemplatePool | undefined;

/** The process's pool (created on first use with TEMPLATE_WORKERS workers). */
export function templatePool(): TemplatePool {
  if (!pool) pool = new TemplatePool(Math.max(1, templateLimits().workers));
  return pool;
}

/** Stops the pool's workers (gateway shutdown); the next use starts a new pool. */
export async function closeTemplatePool(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.close();
}
