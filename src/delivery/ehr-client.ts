/**
 * A small typed client for the EHR's FHIR server. The writes delivery sends per transaction (transaction, batch, a
 * single write) go over node:http (ehr-http.ts, a quarter of fhir-kit-client's CPU per request); the reads (metadata,
 * search, read) over fhir-kit-client. Every request has a timeout. Every failure is
 * classified once, here (classify): retryable (network, timeout, 5xx, 408, 409, 412, 425, 429 with its Retry-After) or
 * permanent (other 4xx, carrying the server's OperationOutcome). Nothing else reads a status to decide: callers read
 * `retryable` on the EhrError (a GatewayError).
 */
import { Client } from 'fhir-kit-client';
import type { Bundle, CapabilityStatement, OperationOutcome, Resource } from 'fhir/r4';
import { GatewayError, isRetryableStatus, issue, outcome } from '../core/errors.js';
import { ehrRequestOutcome, type Metrics } from '../observability/metrics.js';
import type { CircuitBreaker } from './breaker.js';
import type { AuthHeaders, EhrAuth } from '../ehr-auth/index.js';
import { EhrHttp } from './ehr-http.js';

export interface EhrClientOptions {
  baseUrl: string;
  timeoutMs: number;
  bearerToken?: string;
  /** Authentication per request (a token, renewed once after a 401) and per connection (mutual TLS): ehr-auth/. */
  auth?: EhrAuth;
  /** Where EHR request durations are recorded (ehr_request_duration_seconds), labelled with the breaker's destination. */
  metrics?: Metrics;
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
    // A redirect the writes did not follow (to another origin, where the credential would go along; ehr-http.ts).
    const location = status >= 300 && status < 400 ? e.config?.headers?.get?.('location') : undefined;
    const moved = location ? ` (a redirect to ${location}: the destination's base URL should be where it points)` : '';
    return new EhrError(`${what}: EHR answered HTTP ${status}${moved}`, isRetryableStatus(status), status, oo, retryAfterMs, {
      cause: err,
    });
  }
  const name = e?.name ?? '';
  if (name === 'TimeoutError' || name === 'AbortError') {
    return new EhrError(`${what}: the EHR did not answer in time`, true, undefined, undefined, undefined, { cause: err, timedOut: true });
  }
  const unreachable = `${what}: the EHR is unreachable (${e?.message ?? 'network error'})`;
  return new EhrError(unreachable, true, undefined, undefined, undefined, { cause: err });
}

/**
 * A failure that says the destination cannot serve now, rather than that it refused this request: no answer (timeout,
 * unreachable), 5xx, 429 or 408. These count towards opening the circuit breaker; 4xx refusals (and 409, 412, 425,
 * which are about one resource) are answers.
 */
export function isDestinationDown(e: EhrError): boolean {
  const s = e.ehrStatus;
  return e.retryable && (s === undefined || s >= 500 || s === 429 || s === 408);
}

export class EhrClient {
  private readonly client: Client;
  private readonly http: EhrHttp;

  /**
   * `breaker`: the destination's circuit breaker. Every request but `ping` asks it first (a refused one is not sent:
   * BreakerOpenError) and reports its outcome to it.
   */
  constructor(
    private readonly options: EhrClientOptions,
    readonly breaker?: CircuitBreaker,
  ) {
    const customHeaders: Record<string, string> = { accept: 'application/fhir+json' };
    if (options.bearerToken) customHeaders.authorization = `Bearer ${options.bearerToken}`;
    const requestOptions = options.auth?.dispatcher ? { dispatcher: options.auth.dispatcher } : undefined;
    this.client = new Client({ baseUrl: options.baseUrl, customHeaders, requestOptions });
    this.http = new EhrHttp(options.baseUrl, options.auth?.tls);
    this.writeHeaders = customHeaders;
  }

  /** The headers every write carries (accept, and the static bearer token when there is one). */
  private readonly writeHeaders: Record<string, string>;

  /** Closes the pooled connections of the writes. */
  close(): void {
    this.http.close();
  }

  get baseUrl(): string {
    return this.options.baseUrl;
  }

  private opts() {
    return { signal: AbortSignal.timeout(this.options.timeoutMs) };
  }

  /**
   * One request through the breaker: refused unsent while it is open, its outcome reported to it. A failure to get a
   * token (the auth's own retryable GatewayError) counts as the destination being down: nothing can be delivered.
   */
  protected async request<T>(
    what: string,
    request: (options: { signal: AbortSignal; headers?: AuthHeaders }) => Promise<unknown>,
  ): Promise<T> {
    this.breaker?.admit();
    const timed = this.options.metrics?.startTimer('ehr_request_duration_seconds');
    try {
      const answer = await this.send<T>(what, request);
      timed?.({ destination: this.breaker?.destination ?? 'ehr', outcome: 'success' });
      this.breaker?.succeeded();
      return answer;
    } catch (err) {
      if (!(err instanceof EhrError)) {
        // No token (the auth's own retryable GatewayError): no EHR request was made, nothing to time.
        if (err instanceof GatewayError && err.retryable) this.breaker?.failed(err.message);
        throw err;
      }
      timed?.({ destination: this.breaker?.destination ?? 'ehr', outcome: ehrRequestOutcome(err) });
      if (isDestinationDown(err)) this.breaker?.failed(err.message);
      else this.breaker?.succeeded();
      throw err;
    }
  }

  /**
   * Sends a request with the auth's credential; on a 401, once more with a renewed one. A failure to get a token is
   * the auth's own retryable GatewayError, not classified as an EHR answer.
   */
  private async send<T>(what: string, request: (options: { signal: AbortSignal; headers?: AuthHeaders }) => Promise<unknown>): Promise<T> {
    const auth = this.options.auth;
    const headers = await auth?.headers();
    try {
      return (await request({ ...this.opts(), headers })) as T;
    } catch (err) {
      const retry = auth && headers && (err as FkcError)?.response?.status === 401 ? await auth.renew(headers) : undefined;
      if (!retry) throw classify(err, what);
      try {
        return (await request({ ...this.opts(), headers: retry })) as T;
      } catch (again) {
        const e = classify(again, what);
        // Refused with a fresh token too: it may have expired in flight, or the client's access be pending at the EHR.
        if (e.ehrStatus !== 401) throw e;
        throw new EhrError(`${e.message} with a fresh access token`, true, 401, e.outcome, undefined, { cause: again });
      }
    }
  }

  async transaction(bundle: Bundle): Promise<Bundle> {
    return this.request('transaction', ({ signal, headers }) =>
      this.http.request({ method: 'POST', path: '', body: bundle, signal, headers: { ...this.writeHeaders, ...headers } }),
    );
  }

  batch(bundle: Bundle): Promise<Bundle> {
    return this.request('batch', ({ signal, headers }) =>
      this.http.request({ method: 'POST', path: '', body: bundle, signal, headers: { ...this.writeHeaders, ...headers } }),
    );
  }

  /**
   * One request of an entry written on its own (write mode 'individual'): `url` relative to the base (`Observation`,
   * `Device?identifier=…`), with extra headers (If-None-Exist, If-Match). Asks for the resource back.
   */
  write<T extends Resource>(
    what: string,
    method: 'POST' | 'PUT',
    url: string,
    body: Resource,
    headers: Record<string, string> = {},
  ): Promise<T> {
    return this.request<T>(what, (options) =>
      this.http.request({
        method,
        path: url,
        body,
        signal: options.signal,
        headers: { ...this.writeHeaders, prefer: 'return=representation', ...headers, ...options.headers },
      }),
    );
  }

  /** GET /metadata: the server's CapabilityStatement (not through the breaker). */
  async capabilities(): Promise<CapabilityStatement> {
    try {
      return (await this.client.capabilityStatement(this.opts())) as unknown as CapabilityStatement;
    } catch (err) {
      throw classify(err, 'metadata');
    }
  }

  async search<T extends Resource>(resourceType: string, searchParams: Record<string, string>): Promise<T[]> {
    const b = await this.request<Bundle>(`search ${resourceType}`, (options) =>
      this.client.search({ resourceType, searchParams, options }),
    );
    return (b.entry ?? []).map((e) => e.resource).filter((r): r is T => r?.resourceType === resourceType);
  }

  async read<T extends Resource>(resourceType: string, id: string): Promise<T> {
    return this.request(`read ${resourceType}`, (options) => this.client.read({ resourceType, id, options }));
  }

  /** GET /metadata: is the EHR reachable and speaking FHIR? (Readiness; not through the breaker.) */
  async ping(): Promise<void> {
    await this.send('metadata', (options) => this.client.capabilityStatement(options));
  }
}
