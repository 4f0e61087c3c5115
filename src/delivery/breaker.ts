/**
 * A circuit breaker for one delivery destination (today the EHR; each destination gets its own). After
 * `failureThreshold` failures of the destination in a row (no answer, a timeout, 5xx, 429, 408: see
 * ehr-client.ts `isDestinationDown`; a 4xx refusal of one reading is an answer, not a failure) it opens: no request
 * is sent, and jobs wait for it (`permit`) instead of spending their attempts. After `probeIntervalMs` it is
 * half-open: one job is let through as the probe (its requests, and only its, are sent). The probe's success closes
 * the breaker and every waiting job goes on; its failure opens it again for twice as long, up to `probeMaxIntervalMs`
 * (with jitter, so that several worker processes do not probe in step).
 *
 * State is per process: each worker process guards its own requests (see docs/operations.md for why).
 *
 * The probe is told apart from other jobs by an AsyncLocalStorage context (`runAs`): the EHR client asks `admit()`
 * before each request, which lets through requests made while closed and those of the probe, and refuses the others
 * with a BreakerOpenError without sending anything.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { GatewayError, issue, outcome } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

export const BREAKER_STATES = ['closed', 'open', 'half-open'] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

export interface BreakerSettings {
  /** Failures in a row that open the breaker; 0: no breaker (always closed). */
  failureThreshold: number;
  /** Time from opening to the first probe. */
  probeIntervalMs: number;
  /** Cap of the time between probes (it doubles after each failed probe). */
  probeMaxIntervalMs: number;
}

/** What /readyz, /api/status and /metrics say about a destination's breaker. */
export interface BreakerSnapshot {
  destination: string;
  state: BreakerState;
  /** When the breaker entered its current state. */
  since: string;
  /** Open or half-open: when this outage began (the first opening). */
  openSince: string | null;
  consecutiveFailures: number;
  lastError: string | null;
  lastErrorAt: string | null;
  /** Open: when the next probe may go. */
  nextProbeAt: string | null;
  /** Times the breaker opened, probes sent and their outcomes, requests refused without being sent. */
  opened: number;
  probes: { success: number; failure: number };
  refused: number;
}

/** A request the breaker did not let through: nothing was sent. Retryable; the worker does not count it as an attempt. */
export class BreakerOpenError extends GatewayError {
  constructor(readonly destination: string) {
    super(503, outcome([issue('transient', `the circuit breaker of destination '${destination}' is open: nothing was sent`)]), {
      retryable: true,
    });
    this.message = `the circuit breaker of destination '${destination}' is open: not sent`;
    this.name = 'BreakerOpenError';
  }
}

/** `permit` gave up waiting (the worker is stopping). */
export class PermitAbortedError extends Error {
  constructor() {
    super('stopped waiting for the circuit breaker');
    this.name = 'PermitAbortedError';
  }
}

/** Leave to send: `probe` when this job is the half-open breaker's one probe (its outcome decides the state). */
export interface Permit {
  readonly probe: boolean;
  /** The probe's requests: at least one answered, and the first failure. */
  answered?: boolean;
  failure?: string;
}

const GO: Permit = Object.freeze({ probe: false });

interface Waiter {
  resolve(p: Permit): void;
  reject(e: Error): void;
}

export interface BreakerHooks {
  log?: Logger;
  metrics?: Metrics;
  /** For tests: the jitter factor in [0, 1) (default Math.random). */
  random?: () => number;
}

export class CircuitBreaker {
  private current: BreakerState = 'closed';
  private sinceMs = Date.now();
  private openSinceMs?: number;
  private failures = 0;
  private lastError?: { message: string; at: number };
  private nextProbeMs?: number;
  private intervalMs: number;
  private timer?: NodeJS.Timeout;
  private probeOut?: Permit;
  private waiters: Waiter[] = [];
  private readonly probeContext = new AsyncLocalStorage<Permit>();
  private counts = { opened: 0, success: 0, failure: 0, refused: 0 };

  constructor(
    readonly destination: string,
    readonly settings: BreakerSettings,
    private readonly hooks: BreakerHooks = {},
  ) {
    this.intervalMs = settings.probeIntervalMs;
  }

  get enabled(): boolean {
    return this.settings.failureThreshold > 0;
  }

  get state(): BreakerState {
    return this.current;
  }

  /** Jobs waiting for the breaker (held by the worker, their attempts untouched). */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Milliseconds until the next probe may go (0 when closed or half-open). */
  msUntilProbe(now = Date.now()): number {
    return this.current === 'open' && this.nextProbeMs ? Math.max(0, this.nextProbeMs - now) : 0;
  }

  snapshot(): BreakerSnapshot {
    const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
    return {
      destination: this.destination,
      state: this.current,
      since: new Date(this.sinceMs).toISOString(),
      openSince: this.current === 'closed' ? null : iso(this.openSinceMs),
      consecutiveFailures: this.failures,
      lastError: this.lastError?.message ?? null,
      lastErrorAt: iso(this.lastError?.at),
      nextProbeAt: this.current === 'open' ? iso(this.nextProbeMs) : null,
      opened: this.counts.opened,
      probes: { success: this.counts.success, failure: this.counts.failure },
      refused: this.counts.refused,
    };
  }

  /**
   * Waits until a job may try the destination: at once while closed; while open, until a probe has closed it again,
   * or until this job is chosen as the probe. Rejects with PermitAbortedError when `signal` aborts.
   */
  permit(signal?: AbortSignal): Promise<Permit> {
    if (signal?.aborted) return Promise.reject(new PermitAbortedError());
    if (this.current === 'closed') return Promise.resolve(GO);
    if (this.current === 'half-open' && !this.probeOut) return Promise.resolve(this.takeProbe());
    return new Promise<Permit>((resolve, reject) => {
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new PermitAbortedError());
      };
      const waiter: Waiter = {
        resolve: (p) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(p);
        },
        reject,
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Runs one attempt under the permit: the probe's requests are let through while the breaker is not closed. */
  runAs<T>(permit: Permit, fn: () => Promise<T>): Promise<T> {
    return permit.probe ? this.probeContext.run(permit, fn) : fn();
  }

  /**
   * The end of an attempt made under `permit`. A probe that met a failure opens the breaker again; one that was
   * answered closes it; one that sent nothing (its reading needed no request) hands the probe to the next job.
   */
  settle(permit: Permit): void {
    if (!permit.probe || this.probeOut !== permit) return;
    this.probeOut = undefined;
    if (permit.failure !== undefined) {
      this.counts.failure++;
      this.hooks.metrics?.inc('destination_breaker_probes_total', { destination: this.destination, outcome: 'failure' });
      this.intervalMs = Math.min(this.intervalMs * 2, this.settings.probeMaxIntervalMs);
      this.open(permit.failure);
    } else if (permit.answered) {
      this.counts.success++;
      this.hooks.metrics?.inc('destination_breaker_probes_total', { destination: this.destination, outcome: 'success' });
      this.close();
    } else if (this.current === 'half-open') {
      const next = this.waiters.shift();
      if (next) next.resolve(this.takeProbe());
    }
  }

  /** Before each request: throws BreakerOpenError unless the breaker is closed or the request is the probe's. */
  admit(): void {
    if (this.current === 'closed') return;
    const probe = this.probeContext.getStore();
    if (probe && probe === this.probeOut) return;
    this.counts.refused++;
    this.hooks.metrics?.inc('destination_breaker_refused_total', { destination: this.destination });
    throw new BreakerOpenError(this.destination);
  }

  /** The destination answered (any answer, a refusal too). */
  succeeded(): void {
    const probe = this.probeContext.getStore();
    if (probe && probe === this.probeOut) {
      probe.answered = true;
      return;
    }
    if (this.current === 'closed') this.failures = 0;
  }

  /** The destination did not answer, or answered that it cannot serve now (5xx, 429, 408). */
  failed(message: string): void {
    this.lastError = { message, at: Date.now() };
    const probe = this.probeContext.getStore();
    if (probe && probe === this.probeOut) {
      probe.failure ??= message;
      return;
    }
    if (this.current !== 'closed' || !this.enabled) return;
    this.failures++;
    if (this.failures >= this.settings.failureThreshold) this.open(message);
  }

  /** Clears the probe timer (the process is stopping); jobs still waiting are released by their abort signal. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private takeProbe(): Permit {
    const p: Permit = { probe: true };
    this.probeOut = p;
    this.hooks.log?.debug({ destination: this.destination }, 'circuit breaker: sending a probe');
    return p;
  }

  private setState(s: BreakerState): void {
    if (s !== this.current) this.sinceMs = Date.now();
    this.current = s;
  }

  private open(reason: string): void {
    const first = this.current === 'closed';
    this.setState('open');
    if (first) {
      this.openSinceMs = this.sinceMs;
      this.counts.opened++;
      this.hooks.metrics?.inc('destination_breaker_opened_total', { destination: this.destination });
    }
    const random = this.hooks.random ?? Math.random;
    // Jitter of ±20 %: several worker processes, each with its breaker, do not probe at the same moment.
    const delay = Math.max(1, Math.round(this.intervalMs * (0.8 + 0.4 * random())));
    this.nextProbeMs = Date.now() + delay;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.halfOpen(), delay);
    this.timer.unref();
    const log = { destination: this.destination, reason, nextProbeInMs: delay, waiting: this.waiters.length };
    if (first)
      this.hooks.log?.warn(
        { ...log, failures: this.failures },
        'circuit breaker open: the destination keeps failing; deliveries wait in the queue (their attempts kept) and one probe is sent at a time',
      );
    else this.hooks.log?.info(log, 'circuit breaker: the probe failed; open again');
  }

  private halfOpen(): void {
    this.timer = undefined;
    if (this.current !== 'open') return;
    this.setState('half-open');
    this.nextProbeMs = undefined;
    const next = this.waiters.shift();
    if (next) next.resolve(this.takeProbe());
  }

  private close(): void {
    const downMs = this.openSinceMs === undefined ? 0 : Date.now() - this.openSinceMs;
    this.setState('closed');
    this.failures = 0;
    this.intervalMs = this.settings.probeIntervalMs;
    this.nextProbeMs = undefined;
    this.openSinceMs = undefined;
    clearTimeout(this.timer);
    this.timer = undefined;
    const waiting = this.waiters;
    this.waiters = [];
    this.hooks.log?.info(
      { destination: this.destination, downMs, waiting: waiting.length },
      'circuit breaker closed: the destination answers again',
    );
    for (const w of waiting) w.resolve(GO);
  }
}
