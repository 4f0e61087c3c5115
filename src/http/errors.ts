/**
 * The HTTP boundary speaks FHIR OperationOutcome for every refusal, and never leaks stack traces or library messages.
 */
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { badRequest, notFound, GatewayError, toGatewayError, tooLarge, outcome, issue } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';

export function sendOutcome(res: Parameters<RequestHandler>[1], err: GatewayError): void {
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  res.status(err.status).type('application/fhir+json').json(err.outcome);
}

/** Express 5 forwards rejected promises here. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const e = err as { type?: string; status?: number; limit?: number };
    let oe: GatewayError;
    if (e?.type === 'entity.parse.failed') oe = badRequest('the body is not well-formed JSON');
    else if (e?.type === 'entity.too.large') oe = tooLarge(`the body is larger than the limit of ${e.limit} bytes`);
    else if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported')
      oe = new GatewayError(415, outcome([issue('not-supported', 'unsupported body encoding')]));
    else if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500 && !(err instanceof GatewayError))
      oe = badRequest('the request could not be read');
    else oe = toGatewayError(err);
    // The error's name and stack frames, not its message: a message may quote the payload (PHI).
    if (oe.status >= 500 && oe.status !== 503)
      log.error(
        {
          err: err instanceof Error ? { name: err.name, frames: err.stack?.split('\n').slice(1, 8).join('\n') } : typeof err,
          path: req.route?.path ?? req.baseUrl,
        },
        'request failed',
      );
    if (res.headersSent) return;
    sendOutcome(res, oe);
  };
}

export const notFoundHandler: RequestHandler = (req, _res, next) => next(notFound(`no route ${req.method} ${req.path}`));

/** Refuses bodies that are not JSON with 415 instead of reading them as empty. */
export const requireJson: RequestHandler = (req, _res, next) => {
  if (!req.is(['application/json', 'application/fhir+json', 'application/*+json'])) {
    return next(new GatewayError(415, outcome([issue('not-supported', 'the body must be JSON (Content-Type: application/json)')])));
  }
  next();
};
