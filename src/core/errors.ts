/**
 * One error type for every refusal and failure: a FHIR OperationOutcome (what integration teams read), an HTTP status,
 * extra headers (Retry-After) and `retryable`, whether sending the same thing again later can succeed. Every channel
 * reads `retryable` the same way (HTTP: the status; MLLP: AE/CE "resend", nothing kept, versus AE/AR kept for replay;
 * MQTT: no PUBACK so the broker redelivers, versus a PUBACK with a reason code), and so does the delivery worker
 * (retry with backoff versus dead letter).
 */
import type { OperationOutcome, OperationOutcomeIssue } from 'fhir/r4';

export type IssueSeverity = OperationOutcomeIssue['severity'];
export type IssueCode = OperationOutcomeIssue['code'];

export function outcome(issues: OperationOutcomeIssue[]): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: issues };
}

export function issue(
  code: IssueCode,
  diagnostics: string,
  expression?: string[],
  severity: IssueSeverity = 'error',
): OperationOutcomeIssue {
  const i: OperationOutcomeIssue = { severity, code, diagnostics };
  if (expression?.length) i.expression = expression;
  return i;
}

/** Statuses below 500 that a later attempt can succeed on (timeout, conflict in flight, too early, throttled). */
export const RETRYABLE_STATUS: ReadonlySet<number> = new Set([408, 409, 412, 425, 429]);

/** Whether a status means "try again later" when nothing more is known: 5xx and the statuses above. */
export const isRetryableStatus = (status: number): boolean => status >= 500 || RETRYABLE_STATUS.has(status);

export interface GatewayErrorOptions {
  cause?: unknown;
  /** Extra response headers (for example Retry-After). */
  headers?: Record<string, string>;
  /** Overrides the default from the status (isRetryableStatus). */
  retryable?: boolean;
}

export class GatewayError extends Error {
  readonly outcome: OperationOutcome;
  readonly status: number;
  readonly headers: Record<string, string>;
  /** Can the same input succeed later? false: refused for good (keep it for inspection and replay after a fix). */
  readonly retryable: boolean;
  constructor(status: number, oo: OperationOutcome, options: GatewayErrorOptions = {}) {
    super(oo.issue.map((i) => i.diagnostics ?? i.code).join('; '), { cause: options.cause });
    this.name = 'GatewayError';
    this.status = status;
    this.outcome = oo;
    this.headers = options.headers ?? {};
    this.retryable = options.retryable ?? isRetryableStatus(status);
  }
}

export const badRequest = (msg: string, expression?: string[]) => new GatewayError(400, outcome([issue('invalid', msg, expression)]));
export const unprocessable = (issues: OperationOutcomeIssue[]) => new GatewayError(422, outcome(issues));
export const notFound = (msg: string) => new GatewayError(404, outcome([issue('not-found', msg)]));
export const forbidden = (msg: string) => new GatewayError(403, outcome([issue('forbidden', msg)]));
export const unauthorized = (msg: string) =>
  new GatewayError(401, outcome([issue('login', msg)]), { headers: { 'WWW-Authenticate': 'Bearer' } });
/** A request that conflicts with the gateway's state (an id taken, a change not allowed): sending it again will not help. */
export const conflict = (msg: string) => new GatewayError(409, outcome([issue('conflict', msg)]), { retryable: false });
export const tooLarge = (msg: string) => new GatewayError(413, outcome([issue('too-costly', msg)]));
export const unavailable = (msg: string, retryAfterSeconds: number) =>
  new GatewayError(503, outcome([issue('transient', msg)]), { headers: { 'Retry-After': String(retryAfterSeconds) } });

/**
 * Turns anything thrown into a GatewayError without leaking internals (stack, messages of libraries). An unexpected
 * error is retryable: nothing says the input was stored, so the sender must not drop it.
 */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError(500, outcome([issue('exception', 'Internal error; see the gateway log')]), { cause: err, retryable: true });
}

/** An adapter's refusal of input it cannot map (422, never retryable: the same input fails the same way). */
export class TranslationError extends GatewayError {
  constructor(issues: OperationOutcomeIssue[]) {
    super(422, outcome(issues), { retryable: false });
    this.name = 'TranslationError';
  }
  static of(msg: string, expression?: string): TranslationError {
    return new TranslationError([issue('invalid', msg, expression ? [expression] : undefined)]);
  }
}
