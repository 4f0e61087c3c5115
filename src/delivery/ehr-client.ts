/**
 * A small typed client for the EHR's FHIR server, on fhir-kit-client. Every request has a timeout. Every failure is
 * classified once, here (classify): retryable (network, timeout, 5xx, 408, 409, 412, 425, 429 with its Retry-After) or
 * permanent (other 4xx, carrying the server's OperationOutcome). Nothing else reads a status to decide: callers read
 * `retryable` on the EhrError (a GatewayError).
 */
import { Client } from 'fhir-kit-client';
import type { Bundle, OperationOutcome, Resource } from 'fhir/r4';
import { GatewayError, isRetryableStatus, issue, outcome } from '../core/errors.js';

export interface EhrClientOptions {
  baseUrl: string;
  timeoutMs: number;
  bearerToken?: string;
}

/**
 * An EHR failure: a GatewayError whose `retryable` is what classify decided. When the EHR gave no answer (timeout,
 * unreachable), `status` is 502 with a transient OperationOutcome and `ehrStatus` is undefined.
 */
export class EhrError extends GatewayError {
  /** The HTTP status the EHR answered with; undefined when it did not answer. */
  readonly ehrStatus?: number;
  /** No answer in time: the EHR may still be working on the request. */
  readonly timedOut: boolean;

  constructor(
    message: string,
    retryable: boolean,
    status?: number,
    oo?: OperationOutcome,
    readonly retryAfterMs?: number,
    options?: { cause?: unknown; timedOut?: boolean },
  ) {
    super(status ?? 502, oo ?? outcome([issue(retryable ? 'transient' : 'exception', message)]), { cause: options?.cause, retryable });
    this.message = message;
    this.name = 'EhrError';
    this.ehrStatus = status;
    this.timedOut = options?.timedOut ?? false;
  }
}

/** Retry-After is seconds or an HTTP date. */
export function parseRetryAfter(v: string | null | undefined, now = Date.now()): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

interface FkcError {
  response?: { status?: number; data?: unknown };
  config?: { headers?: Headers };
  name?: string;
  message?: string;
}

export function classify(err: unknown, what: string): EhrError {
  if (err instanceof EhrError) return err;
  const e = err as FkcError;
  const status = e?.response?.status;
  if (typeof status === 'number') {
    const data = e.response?.data as { resourceType?: string } | undefined;
    const oo =
      data?.resourceType === 'OperationOutcome' ? (data as OperationOutcome) : outcome([issue('exception', `EHR answered HTTP ${status}`)]);
    const retryAfterMs = parseRetryAfter(e.config?.headers?.get?.('retry-after'));
    return new EhrError(`${what}: EHR answered HTTP ${status}`, isRetryableStatus(status), status, oo, retryAfterMs, { cause: err });
  }
  const name = e?.name ?? '';
  if (name === 'TimeoutError' || name === 'AbortError') {
    return new EhrError(`${what}: the EHR did not answer in time`, true, undefined, undefined, undefined, { cause: err, timedOut: true });
  }
  const unreachable = `${what}: the EHR is unreachable (${e?.message ?? 'network error'})`;
  return new EhrError(unreachable, true, undefined, undefined, undefined, { cause: err });
}

export class EhrClient {
  private readonly client: Client;

  constructor(private readonly options: EhrClientOptions) {
    const customHeaders: Record<string, string> = { accept: 'application/fhir+json' };
    if (options.bearerToken) customHeaders.authorization = `Bearer ${options.bearerToken}`;
    this.client = new Client({ baseUrl: options.baseUrl, customHeaders });
  }

  get baseUrl(): string {
    return this.options.baseUrl;
  }

  private opts() {
    return { signal: AbortSignal.timeout(this.options.timeoutMs) };
  }

  async transaction(bundle: Bundle): Promise<Bundle> {
    try {
      return (await this.client.transaction({ body: bundle as never, options: this.opts() })) as unknown as Bundle;
    } catch (err) {
      throw classify(err, 'transaction');
    }
  }

  async search<T extends Resource>(resourceType: string, searchParams: Record<string, string>): Promise<T[]> {
    try {
      const b = (await this.client.search({ resourceType, searchParams, options: this.opts() })) as unknown as Bundle;
      return (b.entry ?? []).map((e) => e.resource).filter((r): r is T => r?.resourceType === resourceType);
    } catch (err) {
      throw classify(err, `search ${resourceType}`);
    }
  }

  async read<T extends Resource>(resourceType: string, id: string): Promise<T> {
    try {
      return (await this.client.read({ resourceType, id, options: this.opts() })) as unknown as T;
    } catch (err) {
      throw classify(err, `read ${resourceType}`);
    }
  }

  /** GET /metadata: is the EHR reachable and speaking FHIR? */
  async ping(): Promise<void> {
    try {
      await this.client.capabilityStatement(this.opts());
    } catch (err) {
      throw classify(err, 'metadata');
    }
  }
}
