/**
 * One error type for every refusal the gateway makes: it carries a FHIR OperationOutcome (what integration teams
 * read), an HTTP status, and whether a retry can help. Channels turn it into their own answer (HTTP body, HL7 ERR).
 */
import type { OperationOutcome, OperationOutcomeIssue } from 'fhir/r4';

export type IssueSeverity = OperationOutcomeIssue['severity'];
export type IssueCode = OperationOutcomeIssue['code'];

export function outcome(issues: OperationOutcomeIssue[]): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: issues };
}

export function issue(code: IssueCode, diagnostics: string, expression?: string[], severity: IssueSeverity = 'error'): OperationOutcomeIssue {
  const i: OperationOutcomeIssue = { severity, code, diagnostics };
  if (expression?.length) i.expression = expression;
  return i;
}

export class OperationOutcomeError extends Error {
  readonly outcome: OperationOutcome;
  readonly status: number;
  /** Extra response headers (for example Retry-After). */
  readonly headers: Record<string, string>;
  constructor(status: number, oo: OperationOutcome, options?: { cause?: unknown; headers?: Record<string, string> }) {
    super(oo.issue.map((i) => i.diagnostics ?? i.code).join('; '), { cause: options?.cause });
    this.name = 'OperationOutcomeError';
    this.status = status;
    this.outcome = oo;
    this.headers = options?.headers ?? {};
  }
}

export const badRequest = (msg: string, expression?: string[]) =>
  new OperationOutcomeError(400, outcome([issue('invalid', msg, expression)]));
export const unprocessable = (issues: OperationOutcomeIssue[]) => new OperationOutcomeError(422, outcome(issues));
export const notFound = (msg: string) => new OperationOutcomeError(404, outcome([issue('not-found', msg)]));
export const forbidden = (msg: string) => new OperationOutcomeError(403, outcome([issue('forbidden', msg)]));
export const unauthorized = (msg: string) =>
  new OperationOutcomeError(401, outcome([issue('login', msg)]), { headers: { 'WWW-Authenticate': 'Bearer' } });
export const conflict = (msg: string) => new OperationOutcomeError(409, outcome([issue('conflict', msg)]));
export const tooLarge = (msg: string) => new OperationOutcomeError(413, outcome([issue('too-costly', msg)]));
export const unavailable = (msg: string, retryAfterSeconds: number) =>
  new OperationOutcomeError(503, outcome([issue('transient', msg)]), { headers: { 'Retry-After': String(retryAfterSeconds) } });

/** Turns anything thrown into an OperationOutcomeError without leaking internals (stack, messages of libraries). */
export function toOutcomeError(err: unknown): OperationOutcomeError {
  if (err instanceof OperationOutcomeError) return err;
  return new OperationOutcomeError(500, outcome([issue('exception', 'Internal error; see the gateway log')]), { cause: err });
}
