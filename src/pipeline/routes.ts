/**
 * The refusal API, one for every channel:
 *
 *   GET    /api/refusals                 operator  newest first, without payloads; filters: channel, format, adapter,
 *                                                  deviceId, controlId, reason (substring), since, until; offset, limit
 *   GET    /api/refusals/:id             operator  one entry with its payload (PHI)
 *   POST   /api/refusals/:id/replay      operator  through its original channel, as its original sender
 *   POST   /api/refusals/replay          operator  bulk: the entries matching the filter in the body (at most `limit`,
 *                                                  500), each replayed; a result per entry
 *   DELETE /api/refusals/:id             admin
 *
 * The stores of earlier versions answer as aliases for one release, with `Deprecation: true` and a `Link` to the
 * successor: /api/refused (HTTP JSON payloads), /api/rejected (HL7v2 messages), /api/mqtt/rejected (MQTT). They read
 * and replay the one store, in their old response shapes.
 */
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import type { RoleName } from '../core/contract.js';
import { badRequest, GatewayError, issue, notFound, outcome, unavailable } from '../core/errors.js';
import { withTimeout } from '../queue/queue.js';
import { page } from '../http/paging.js';
import type { Logger } from '../observability/logger.js';
import type { Refusal, RefusalFilter, RefusalStore, RefusalSummary } from './refusals.js';

export interface RefusalRoutesDeps {
  refusals: RefusalStore;
  requireRole(...roles: RoleName[]): RequestHandler;
  /** Redis reachable? (503 otherwise, rather than a hung request) */
  isReady(): boolean;
  log: Logger;
}

const FILTER_KEYS = ['channel', 'format', 'adapter', 'deviceId', 'controlId', 'reason', 'since', 'until'] as const;

function filterOf(source: Record<string, unknown>): RefusalFilter {
  const f: RefusalFilter = {};
  for (const k of FILTER_KEYS) {
    const v = source[k];
    if (v === undefined || v === '') continue;
    if (typeof v !== 'string') throw badRequest(`${k} must be a string`, [k]);
    if ((k === 'since' || k === 'until') && Number.isNaN(Date.parse(v))) throw badRequest(`${k} must be an ISO 8601 date-time`, [k]);
    f[k] = v;
  }
  return f;
}

export function refusalRoutes(deps: RefusalRoutesDeps): Router {
  const { refusals, requireRole, log } = deps;
  const router = express.Router();
  const ops = requireRole('operator');
  const admin = requireRole();
  const ready: RequestHandler = (_req, _res, next) => next(deps.isReady() ? undefined : unavailable('Redis is not reachable', 5));
  const json = express.json({ limit: 65536 });
  /** A body that is there but not JSON is refused: read as no filter, it would replay everything. */
  const jsonIfAny: RequestHandler = (req, _res, next) =>
    next(
      req.is(['application/json', 'application/*+json']) === false
        ? new GatewayError(415, outcome([issue('not-supported', 'the filter must be JSON (Content-Type: application/json)')]))
        : undefined,
    );

  router.get('/api/refusals', ops, ready, async (req, res) => {
    const { offset, limit } = page(req.query);
    res.json(await refusals.list(filterOf(req.query), offset, limit));
  });
  router.get('/api/refusals/:id', ops, ready, async (req, res) => {
    const r = await refusals.get(String(req.params.id));
    if (!r) throw notFound(`no refusal '${req.params.id}'`);
    res.json(r);
  });
  router.post('/api/refusals/replay', ops, ready, jsonIfAny, json, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body !== 'object' || Array.isArray(body)) throw badRequest('the body must be a JSON object: a filter and a limit');
    const filter = filterOf(body);
    const limit = Math.min(500, Math.max(1, typeof body.limit === 'number' ? Math.floor(body.limit) : 100));
    const { total, items } = await withTimeout(
      refusals.list(filter, 0, limit),
      refusals.answerWithinMs,
      'the refusal store (Redis) did not answer',
      'nothing was replayed: replay again later',
    );
    const results: { id: string; accepted: boolean; result: string; status?: number; error?: string }[] = [];
    // Past the first entry answered 503 (Redis did not settle it in time, is not reachable, or the queue is full) the
    // rest are not tried: each would meet the same, and wait out the same bound, and the request with them.
    let stopped: string | undefined;
    for (const item of items) {
      if (stopped) {
        results.push({ id: item.id, accepted: false, result: 'not-tried', status: 503, error: `not tried: ${stopped}` });
        continue;
      }
      try {
        const { result } = await refusals.replay(item.id);
        results.push({
          id: item.id,
          accepted: result.accepted,
          result: result.result,
          ...(result.refusal ? { status: result.refusal.status } : {}),
        });
      } catch (err) {
        const e = err instanceof GatewayError ? err : undefined;
        if (e?.status === 503) stopped = `the replay of ${item.id} was answered 503 (${e.message})`;
        results.push({
          id: item.id,
          accepted: false,
          result: e?.retryable === false ? 'refused' : 'unavailable',
          status: e?.status ?? 500,
          error: e?.message ?? 'internal error',
        });
      }
    }
    const accepted = results.filter((r) => r.accepted).length;
    log.info({ matched: total, replayed: results.length, accepted }, 'refusals replayed in bulk');
    res.json({ matched: total, replayed: results.length, accepted, refused: results.length - accepted, results });
  });
  router.post('/api/refusals/:id/replay', ops, ready, async (req, res) => {
    const id = String(req.params.id);
    const { result } = await refusals.replay(id);
    log.info({ refusal: id, accepted: result.accepted, result: result.result }, 'refusal replayed');
    res.status(result.accepted ? 202 : 422).json({ id, ...result });
  });
  router.delete('/api/refusals/:id', admin, ready, async (req, res) => {
    if (!(await refusals.delete(String(req.params.id)))) throw notFound(`no refusal '${req.params.id}'`);
    res.status(204).end();
  });

  aliases(router, deps, ops, admin, ready);
  return router;
}

/** The earlier paths, reading the one store in their old shapes (one release). */
function aliases(router: Router, deps: RefusalRoutesDeps, ops: RequestHandler, admin: RequestHandler, ready: RequestHandler): void {
  const { refusals } = deps;
  const deprecated: RequestHandler = (_req, res, next) => {
    res.setHeader('Deprecation', 'true');
    res.setHeader('Link', '</api/refusals>; rel="successor-version"');
    next();
  };
  const one = async (req: Request, test: (r: RefusalSummary) => boolean, what: string): Promise<Refusal> => {
    const r = await refusals.get(String(req.params.id));
    if (!r || !test(r)) throw notFound(`no ${what} '${req.params.id}'`);
    return r;
  };
  const del = (test: (r: RefusalSummary) => boolean, what: string) => async (req: Request, res: Response) => {
    await one(req, test, what);
    await refusals.delete(String(req.params.id));
    res.status(204).end();
  };

  // /api/refused: HTTP JSON payloads.
  const isHttp = (r: RefusalSummary) => r.format === 'json';
  const httpShape = (r: RefusalSummary) => ({
    id: r.id,
    adapterId: r.adapterId,
    channel: r.channel,
    receivedAt: r.receivedAt,
    status: r.status,
    outcome: r.outcome,
    ...(r.attributes ? { attributes: r.attributes } : {}),
    ...(r.principal ? { principal: r.principal } : {}),
  });
  router.get('/api/refused', deprecated, ops, ready, async (req, res) => {
    const { offset, limit } = page(req.query);
    const { total, items } = await refusals.list({ format: 'json' }, offset, limit);
    res.json({ total, items: items.map(httpShape) });
  });
  router.get('/api/refused/:id', deprecated, ops, ready, async (req, res) => {
    const r = await one(req, isHttp, 'refused payload');
    res.json({ ...httpShape(r), body: r.body });
  });
  router.post('/api/refused/:id/replay', deprecated, ops, ready, async (req, res) => {
    await one(req, isHttp, 'refused payload');
    const { result } = await refusals.replay(String(req.params.id));
    if (!result.accepted)
      throw new GatewayError(result.refusal?.status ?? 422, result.refusal?.outcome ?? outcome([issue('invalid', 'refused again')]), {
        retryable: false,
      });
    res.status(202).json(result.detail ?? {});
  });
  router.delete('/api/refused/:id', deprecated, admin, ready, del(isHttp, 'refused payload'));

  // /api/rejected: HL7v2 messages.
  const isHl7 = (r: RefusalSummary) => r.format === 'hl7v2';
  const hl7Shape = (r: RefusalSummary) => ({
    id: r.id,
    receivedAt: r.receivedAt,
    channel: r.channel,
    peer: r.hl7?.peer,
    sender: r.hl7?.sender,
    controlId: r.hl7?.controlId,
    messageType: r.hl7?.messageType,
    ackCode: r.hl7?.ackCode ?? '',
    reason: r.reason,
    errors: r.hl7?.errors ?? [],
    ...(r.replays ? { replays: r.replays, lastReplayAt: r.lastReplayAt } : {}),
    ...(r.principal ? { principal: r.principal } : {}),
  });
  router.get('/api/rejected', deprecated, ops, ready, async (req, res) => {
    const { offset, limit } = page(req.query, 50);
    const { total, items } = await refusals.list({ format: 'hl7v2' }, offset, limit);
    res.json({ total, items: items.map(hl7Shape) });
  });
  router.get('/api/rejected/:id', deprecated, ops, ready, async (req, res) => {
    const r = await one(req, isHl7, 'rejected message');
    res.json({ ...hl7Shape(r), raw: r.raw, charset: r.charset });
  });
  router.post('/api/rejected/:id/replay', deprecated, ops, ready, async (req, res) => {
    await one(req, isHl7, 'rejected message');
    const { result } = await refusals.replay(String(req.params.id));
    res.json({ id: req.params.id, accepted: result.accepted, result: result.result, ...result.detail });
  });
  router.delete('/api/rejected/:id', deprecated, admin, ready, del(isHl7, 'rejected message'));

  // /api/mqtt/rejected: MQTT messages (admin only, as before: raw payloads).
  router.get('/api/mqtt/rejected', deprecated, admin, ready, async (req, res) => {
    const { limit } = page(req.query);
    const { items } = await refusals.list({ channel: 'mqtt' }, 0, limit);
    const full = await Promise.all(items.map((i) => refusals.get(i.id)));
    res.json(
      full
        .filter((r): r is Refusal => !!r)
        .map((r) => ({
          topic: r.mqtt?.topic,
          adapter: r.adapterId,
          deviceId: r.mqtt?.deviceId,
          receivedAt: r.receivedAt,
          status: r.status,
          outcome: r.outcome,
          payload: r.raw,
          payloadBase64: r.rawBase64,
        })),
    );
  });
}
