/**
 * What delivery gives up on. Every failure it meets is a GatewayError or not; a GatewayError says whether a retry can
 * help (`retryable`, decided once: the EHR's answers in ehr-client.ts classify, the gateway's own policies here), and
 * the attempt strategy and the worker read only that flag. Anything else (a Redis error while it restarts, say) is
 * retried: only what is known to be permanent skips the retries.
 */
import { GatewayError, issue, outcome } from '../core/errors.js';
import type { EhrError } from './ehr-client.js';

/** A refusal that no retry can fix: the EHR's permanent refusal ('rejected'), or the unknown-patient policy ('policy'). */
export class PermanentError extends GatewayError {
  constructor(
    message: string,
    readonly kind: 'rejected' | 'policy',
    readonly ehr?: EhrError,
  ) {
    super(ehr?.status ?? 422, ehr?.outcome ?? outcome([issue('business-rule', message)]), { retryable: false });
    this.message = message;
    this.name = 'PermanentError';
  }
}

export const isPermanent = (e: Error): boolean => e instanceof GatewayError && !e.retryable;

export const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));
