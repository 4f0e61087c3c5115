/**
 * The dead-letter API: jobs the EHR refused for good or that ran out of attempts, with the EHR's OperationOutcome.
 *
 *   GET    /api/dead-letters             operator  newest first (?offset&limit)
 *   GET    /api/dead-letters/:id         operator
 *   POST   /api/dead-letters/:id/retry   operator  queues the job again (after the cause is fixed)
 *   DELETE /api/dead-letters/:id         admin
 *
 * Each destination has its own dead letters: `?destination=<name>` on every route (default: the first destination,
 * `ehr` without a destinations file). A retry queues the job again for that destination only.
 */
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import type { RoleName } from '../core/contract.js';
import { badRequest, notFound, unavailable } from '../core/errors.js';
import { page } from '../http/paging.js';
import type { Logger } from '../observability/logger.js';
import type { DeliveryQueue } from '../queue/queue.js';
import type { DeadLetterStore } from './dead-letters.js';

/** One destination's dead letters and the queue a retry goes back to. */
export interface DestinationDeadLetters {
  name: string;
  deadLetters: DeadLetterStore;
  queue: DeliveryQueue;
}

export interface DeadLetterRoutesDeps {
  /** Every destination, the default one first. */
  destinations: DestinationDeadLetters[];
  requireRole(...roles: RoleName[]): RequestHandler;
  log: Logger;
}

export function deadLetterRoutes(deps: DeadLetterRoutesDeps): Router {
  const { destinations, log } = deps;
  const router = express.Router();
  const ops = deps.requireRole('operator');
  const pick = (req: Request): DestinationDeadLetters => {
    const name = req.query.destination;
    if (name === undefined) return destinations[0];
    const d = typeof name === 'string' ? destinations.find((x) => x.name === name) : undefined;
    if (!d) throw badRequest(`no destination '${String(name)}' (destinations: ${destinations.map((x) => x.name).join(', ')})`);
    return d;
  };
  const ready: RequestHandler = (req, res, next) => {
    const d = pick(req);
    res.locals.destination = d;
    next(d.queue.isReady() ? undefined : unavailable('Redis is not reachable', 5));
  };
  const of = (res: Response): DestinationDeadLetters => res.locals.destination as DestinationDeadLetters;

  router.get('/api/dead-letters', ops, ready, async (req, res) => {
    const { offset, limit } = page(req.query);
    const { name, deadLetters } = of(res);
    res.json({ destination: name, ...(await deadLetters.list(offset, limit)) });
  });
  router.get('/api/dead-letters/:id', ops, ready, async (req, res) => {
    const d = await of(res).deadLetters.get(String(req.params.id));
    if (!d) throw notFound(`no dead letter '${req.params.id}'`);
    res.json(d);
  });
  router.post('/api/dead-letters/:id/retry', ops, ready, async (req, res) => {
    const id = String(req.params.id);
    const { name, deadLetters, queue } = of(res);
    const d = await deadLetters.get(id);
    if (!d) throw notFound(`no dead letter '${id}'`);
    // Removed before the job is queued again: a replay that fails at once writes the same id back (worker.ts), and must
    // not be deleted after that. If queueing fails, the dead letter is put back.
    await deadLetters.delete(id);
    let jobId: string;
    try {
      jobId = await queue.requeue({ ...d.job, replayOf: id });
    } catch (err) {
      await deadLetters.put(d);
      throw err;
    }
    log.info({ destination: name, deadLetter: id, jobId }, 'dead letter replayed');
    res.status(202).json({ jobId, destination: name });
  });
  router.delete('/api/dead-letters/:id', deps.requireRole(), ready, async (req, res) => {
    if (!(await of(res).deadLetters.delete(String(req.params.id)))) throw notFound(`no dead letter '${req.params.id}'`);
    res.status(204).end();
  });
  return router;
}
