/**
 * The HTTP boundary speaks FHIR OperationOutcome for every refusal, and never leaks stack traces or library messages.
 */
import type { ServerResponse } from 'node:http';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';
import { badRequest, notFound, GatewayError, toGatewayError, tooLarge, outcome, issue, unavailable } from '../core/errors.js';
import { isRedisUnavailable } from '../queue/connection.js';
import type { Logger } from '../observability/logger.js';

/**
 * Answers with a JSON body, as express's res.status(status).type(type).json(body) does (without an ETag: these are
 * answers to POSTs and refusals), using node's response alone, so that it serves the hot routes too (http/app.ts).
 */
export function sendJson(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', `${type}; charset=utf-8`);
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(text);
}

export function sendOutcome(res: ServerResponse, err: GatewayError): void {
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  sendJson(res, err.status, err.outcome, 'application/fhir+json');
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
    // Redis not reachable or not answering in time: a request sent again later can succeed, so 503, not 500. Only for
    // errors of the Redis client: the gateway's own refusals (whose text may quote a device id such as READONLY-1)
    // keep their status.
    else if (!(err instanceof GatewayError) && isRedisUnavailable(err))
      oe = unavailable('Redis is not reachable or did not answer in time; retry later (a change asked for may still be applied)', 5);
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
const JSON_TYPES = ['application/json', 'application/fhir+json', 'application/*+json'];
/** express's req.is, which reads the request's headers only: usable on a request that is not express's (hot routes). */
const is = express.request.is;

export const requireJson: RequestHandler = (req, _res, next) => {
  if (!is.call(req, JSON_TYPES)) {
    return next(new GatewayError(415, outcome([issue('not-supported', 'the body must be JSON (Content-Type: application/json)')])));
  }
  next();
};
