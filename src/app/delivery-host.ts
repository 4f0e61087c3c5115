/**
 * The gateway's side of the delivery thread (delivery-thread.ts): starts it, passes its settlements to the console's
 * statistics, asks it for its state and counters, stops it gracefully, and starts it again if it dies (the jobs it
 * held are handed out again by the queue's stalled-job check, as after a crash of a worker process).
 */
import { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import type { Config } from '../config/index.js';
import { usableCores } from '../core/cores.js';
import { siblingModule, threadEntry } from '../core/threads.js';
import type { DeliveryObserver } from '../delivery/worker.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics, MetricsSnapshot } from '../observability/metrics.js';
import type { DestinationState } from './deliveries.js';
import type { FromThread, ThreadData, ToThread } from './delivery-thread.js';

const THREAD_URL = siblingModule(import.meta.url, 'delivery-thread');

/**
 * Whether role all delivers on a thread of its own (DELIVERY_THREAD; auto: where the process may keep two cores busy,
 * its CPU affinity and its container's CPU quota both counted: core/cores.ts).
 */
export function deliversOnThread(config: Config, role: Config['role'], cores: () => number = () => usableCores().cores): boolean {
  if (role !== 'all') return false;
  if (config.deliveryThread === 'auto') return cores() >= 2;
  return config.deliveryThread === 'on';
}

export interface DeliveryThreadOptions {
  log: Logger;
  metrics: Metrics;
  /** Told how each job was settled (the console's statistics). */
  observer: DeliveryObserver;
  /** How long a question to the thread may take before it is answered without it (ms). */
  askTimeoutMs?: number;
  /** Wait before a thread that died is started again (ms); doubled after each start that fails, up to 30 s. */
  restartDelayMs?: number;
}

type Answer = Extract<FromThread, { id: number }>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The longest wait between two tries to start the thread again. */
const RESTART_MAX_DELAY_MS = 30_000;
/** A thread that dies sooner than this after its start counts as a failed start (the wait before the next doubles). */
const SHORT_LIFE_MS = 30_000;
/** A thread that has not said its workers run by then is ended, and its start counted as failed (ms). */
const READY_TIMEOUT_MS = 60_000;
/**
 * The thread's young generation (V8's nursery, where short-lived objects are allocated), in MiB. V8 allows 48 MiB per
 * thread (resourceLimits' default), and at 20 readings per request both threads' new space had grown to 32 MiB: 64
 * MiB of the gateway's peak RSS. The delivery thread's garbage dies young (jobs, transactions, responses), so a smaller nursery
 * costs it nothing measurable (bench/path.ts, one reading per request: 245–253 against 247–254 µs of gateway CPU per
 * reading) and takes the peak RSS of `npm run bench` at 20 per request from 246–257 to 232–240 MiB. The gateway
 * thread's nursery stays as V8 sizes it: capped alike (node --max-semi-space-size=8) it cost 5–10 % more CPU per
 * reading at one reading per request.
 */
const THREAD_YOUNG_GENERATION_MB = 16;
/** /metrics reads the thread's state for two gauges: one question serves both (ms). */
const STATE_REUSE_MS = 250;

/** What the thread's log lines are written to: the gateway logger's stream (a pino multistream, say). */
export type LogSink = { write(text: string): unknown; lastLevel?: number | string };

/**
 * Writes the delivery thread's log lines (JSON, a batch of them) to the gateway logger's stream. A stream that asks pino
 * for each line's metadata (a pino multistream: it sends a line to the streams of that line's level, by the level pino
 * noted last) gets the lines one by one, each with its own level noted first: otherwise a thread's error written after
 * the gateway's info line would go where info goes, and not where errors go.
 */
export function writeThreadLines(stream: LogSink, text: string): void {
  if (!(stream as Record<symbol, unknown>)[pino.symbols.needsMetadataGsym]) {
    stream.write(text);
    return;
  }
  for (let at = 0; at < text.length; ) {
    const end = text.indexOf('\n', at);
    const next = end < 0 ? text.length : end + 1;
    const line = text.slice(at, next);
    at = next;
    const level = /^\{"level":(\d+)/.exec(line)?.[1];
    if (level) stream.lastLevel = Number(level);
    stream.write(line);
  }
}

export class DeliveryThread {
  private worker?: Worker;
  /** The current thread has said its workers run. */
  private ready = false;
  private startedAt = 0;
  private seq = 0;
  private readonly asked = new Map<number, (a: Answer | undefined) => void>();
  private stopping = false;
  private restartTimer?: NodeJS.Timeout;
  /** Starts in a row that failed, or threads that died soon after they started: the next wait is doubled that often. */
  private failures = 0;
  private lastState?: { at: number; value: Promise<DestinationState[]> };
  /** Times the thread died and was started again (or tried to be). */
  restarts = 0;
  /** Where the gateway's log lines go: the thread's go there too (they are JSON; pino-pretty takes them as well). */
  private readonly logStream: LogSink;

  constructor(
    private readonly data: ThreadData,
    private readonly options: DeliveryThreadOptions,
  ) {
    // A scrape of /metrics sees one process: the thread's counters are added to this thread's.
    options.metrics.include(() => this.metrics());
    options.metrics.gauge('delivery_thread_up', () => +this.running);
    // A logger without a pino stream (a wrapper) still gets the lines: on standard output, as the gateway's default.
    this.logStream = (options.log as unknown as Record<symbol, LogSink | undefined>)[pino.symbols.streamSym] ?? process.stdout;
  }

  /** Whether the thread runs its workers now (false while it is started again, and after stop). */
  get running(): boolean {
    return !!this.worker && this.ready;
  }

  /** Starts the thread; resolves once its workers run, rejects (and ends the thread) if it could not start them. */
  start(): Promise<void> {
    const { entry, eval: isEval } = threadEntry(THREAD_URL);
    let worker: Worker;
    try {
      worker = new Worker(entry, {
        eval: isEval,
        workerData: this.data,
        resourceLimits: { maxYoungGenerationSizeMb: THREAD_YOUNG_GENERATION_MB },
      });
    } catch (err) {
      // workerData that cannot be copied to a thread (DataCloneError): a rejection, as any other failure to start.
      return Promise.reject(new Error(`the delivery thread could not start: ${(err as Error).message}`));
    }
    this.worker = worker;
    this.ready = false;
    return new Promise<void>((resolve, reject) => {
      let started = false;
      // A start that hangs (Redis that does not answer) must not stop the restarts: it fails, and is tried again.
      const readyTimer = setTimeout(() => {
        reject(new Error(`the delivery thread did not start within ${READY_TIMEOUT_MS / 1000} s`));
        void worker.terminate();
      }, READY_TIMEOUT_MS);
      worker.on('message', (m: FromThread) => {
        if (m.op === 'ready') {
          clearTimeout(readyTimer);
          started = true;
          this.ready = true;
          this.startedAt = Date.now();
          resolve();
        } else if (m.op === 'failed') {
          reject(new Error(`the delivery thread could not start: ${m.message}`));
          // What it opened before it failed (Redis, queues) goes with it.
          void worker.terminate();
        } else if (m.op === 'settled') for (const e of m.events) this.options.observer.settled(e);
        else if (m.op === 'log') writeThreadLines(this.logStream, m.text);
        else if ('id' in m) {
          this.asked.get(m.id)?.(m);
          this.asked.delete(m.id);
        }
      });
      worker.on('error', (err) => {
        if (!started) reject(err);
        else this.options.log.error({ error: err.stack ?? err.message }, 'the delivery thread failed');
      });
      worker.on('exit', (code) => {
        clearTimeout(readyTimer);
        if (this.worker === worker) {
          this.worker = undefined;
          this.ready = false;
        }
        for (const answer of this.asked.values()) answer(undefined);
        this.asked.clear();
        if (!started) reject(new Error(`the delivery thread exited (code ${code}) before it started`));
        else this.died(code);
      });
    });
  }

  /** A thread that ran has ended without being asked to: it is started again, sooner the longer it had run. */
  private died(code: number): void {
    if (this.stopping) return;
    this.restarts++;
    this.options.metrics.inc('delivery_thread_restarts_total');
    if (Date.now() - this.startedAt < SHORT_LIFE_MS) this.failures++;
    else this.failures = 0;
    this.options.log.error(
      { code, restartInMs: this.restartDelay(), restarts: this.restarts },
      'the delivery thread stopped: starting it again (jobs it held are handed out again once their locks expire)',
    );
    this.scheduleRestart();
  }

  private restartDelay(): number {
    return Math.min(RESTART_MAX_DELAY_MS, (this.options.restartDelayMs ?? 1000) * 2 ** Math.min(this.failures, 10));
  }

  private scheduleRestart(): void {
    this.restartTimer = setTimeout(() => {
      if (this.stopping) return;
      this.start().then(
        () => this.options.log.info({ restarts: this.restarts }, 'the delivery thread runs again'),
        (err: Error) => {
          if (this.stopping) return;
          this.failures++;
          this.options.log.error(
            { error: err.message, retryInMs: this.restartDelay() },
            'the delivery thread could not be started again: readings are queued, not delivered; trying again',
          );
          this.scheduleRestart();
        },
      );
    }, this.restartDelay());
  }

  private ask(question: DistributiveOmit<ToThread, 'id'>, timeoutMs = this.options.askTimeoutMs ?? 2000): Promise<Answer | undefined> {
    const worker = this.worker;
    if (!worker || !this.ready) return Promise.resolve(undefined);
    const id = ++this.seq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.asked.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.asked.set(id, (a) => {
        clearTimeout(timer);
        resolve(a);
      });
      worker.postMessage({ ...question, id } as ToThread);
    });
  }

  /**
   * GET /metadata of a destination, by the thread's client (its token and connections: the gateway's thread keeps no
   * second token). Rejects with the reason, or when the thread does not run or answer within `timeoutMs`.
   */
  async ping(destination: string, timeoutMs: number): Promise<void> {
    if (!this.running) throw new Error('the delivery thread is not running');
    const a = await this.ask({ op: 'ping', destination }, timeoutMs);
    if (a?.op !== 'ping') throw new Error(`no answer to /metadata within ${timeoutMs} ms (asked by the delivery thread)`);
    if (a.error) throw new Error(a.error);
  }

  /** Each destination's breaker and write mode; rejects, saying why, while the thread does not run or answer. */
  state(): Promise<DestinationState[]> {
    const now = Date.now();
    if (this.lastState && now - this.lastState.at < STATE_REUSE_MS) return this.lastState.value;
    const value = (async () => {
      if (!this.running) throw new Error('the delivery thread is not running');
      const a = await this.ask({ op: 'state' });
      if (a?.op !== 'state') throw new Error(`the delivery thread did not answer within ${this.options.askTimeoutMs ?? 2000} ms (busy?)`);
      return a.state;
    })();
    value.catch(() => undefined);
    this.lastState = { at: now, value };
    return value;
  }

  /** The thread's counters and histograms (undefined while it does not answer: that scrape goes without them). */
  async metrics(): Promise<MetricsSnapshot | undefined> {
    const a = await this.ask({ op: 'metrics' });
    return a?.op === 'metrics' ? a.metrics : undefined;
  }

  /**
   * Finishes the jobs in flight and closes the thread's queues; the thread is ended after `timeoutMs` regardless.
   * Resolves once the thread has exited.
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const worker = this.worker;
    if (!worker) return;
    const stopped = new Promise<void>((resolve) => {
      worker.on('message', (m: FromThread) => m.op === 'stopped' && resolve());
      worker.once('exit', () => resolve());
    });
    worker.postMessage({ op: 'stop' } satisfies ToThread);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([stopped, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    await worker.terminate();
  }
}
