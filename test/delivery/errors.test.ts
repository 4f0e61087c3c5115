/**
 * Delivery's errors are GatewayErrors, and whether one may be retried is decided once: classify() for the EHR's
 * answers, PermanentError for the gateway's own refusals. The worker reads only `retryable`; these tests pin what
 * each EHR answer becomes.
 */
import { strict as assert } from 'node:assert';
import type { OperationOutcome } from 'fhir/r4';
import { GatewayError } from '../../src/core/errors.js';
import { classify, EhrError } from '../../src/delivery/ehr-client.js';
import { isPermanent, PermanentError } from '../../src/delivery/errors.js';

const refusal: OperationOutcome = {
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code: 'invariant', diagnostics: 'Observation.subject: patient is merged' }],
};
const answered = (status: number, headers: Record<string, string> = {}, data: unknown = refusal) => ({
  response: { status, data },
  config: { headers: new Headers(headers) },
});

describe('delivery errors', () => {
  const retryable: [status: number, retryable: boolean][] = [
    [400, false],
    [401, false],
    [403, false],
    [404, false],
    [422, false],
    [408, true],
    [409, true],
    [412, true],
    [425, true],
    [429, true],
    [500, true],
    [502, true],
    [503, true],
    [504, true],
    [599, true],
  ];
  for (const [status, expected] of retryable) {
    it(`HTTP ${status} from the EHR is ${expected ? 'retryable' : 'permanent'} and keeps the EHR's status and OperationOutcome`, () => {
      const e = classify(answered(status), 'transaction');
      assert.ok(e instanceof EhrError && e instanceof GatewayError);
      assert.equal(e.retryable, expected);
      assert.equal(isPermanent(e), !expected);
      assert.equal(e.status, status);
      assert.equal(e.ehrStatus, status);
      assert.deepEqual(e.outcome, refusal);
      assert.equal(e.message, `transaction: EHR answered HTTP ${status}`);
    });
  }

  it('keeps Retry-After, and gives an OperationOutcome when the EHR answered without one', () => {
    const e = classify(answered(429, { 'retry-after': '3' }, 'busy'), 'search Patient');
    assert.equal(e.retryAfterMs, 3000);
    assert.equal(e.outcome.resourceType, 'OperationOutcome');
    assert.match(e.outcome.issue[0].diagnostics ?? '', /HTTP 429/);
  });

  const noAnswer: [what: string, err: unknown, timedOut: boolean][] = [
    ['a timeout', { name: 'TimeoutError', message: 'timed out' }, true],
    ['an abort', { name: 'AbortError', message: 'aborted' }, true],
    ['a network error', { name: 'Error', message: 'connect ECONNREFUSED' }, false],
  ];
  for (const [what, err, timedOut] of noAnswer) {
    it(`${what} is retryable: 502 with a transient OperationOutcome, and no EHR status`, () => {
      const e = classify(err, 'transaction');
      assert.equal(e.retryable, true);
      assert.equal(e.timedOut, timedOut);
      assert.equal(e.status, 502);
      assert.equal(e.ehrStatus, undefined);
      assert.equal(e.outcome.issue[0].code, 'transient');
    });
  }

  it('classifies an EhrError once: classify hands it back unchanged', () => {
    const e = new EhrError('x', false, 400, refusal);
    assert.equal(classify(e, 'again'), e);
  });

  it('PermanentError is a GatewayError that is never retryable, with its kind and the EHR refusal', () => {
    const ehr = classify(answered(422), 'transaction');
    const rejected = new PermanentError(ehr.message, 'rejected', ehr);
    assert.ok(rejected instanceof GatewayError);
    assert.equal(rejected.retryable, false);
    assert.equal(rejected.kind, 'rejected');
    assert.equal(rejected.ehr, ehr);
    assert.equal(rejected.status, 422);
    assert.deepEqual(rejected.outcome, refusal);
    assert.equal(rejected.message, 'transaction: EHR answered HTTP 422');

    const policy = new PermanentError('the EHR knows no patient with the identifier given', 'policy');
    assert.equal(policy.retryable, false);
    assert.equal(policy.kind, 'policy');
    assert.equal(policy.message, 'the EHR knows no patient with the identifier given');
    assert.equal(policy.outcome.issue[0].diagnostics, policy.message);
  });

  it('anything that is not a GatewayError is retried (a Redis error while it restarts, say)', () => {
    assert.equal(isPermanent(new Error('READONLY You cannot write against a read only replica')), false);
  });
});
