/**
 * The dead-letter API: jobs the EHR refused for good or that ran out of attempts, with the EHR's OperationOutcome.
 *
 *   GET    /api/dead-letters             operator  newest first (?offset&limit)
 *   GET    /api/dead-letters/:id         operator
 *   POST   /api/dead-letters/:id/retry   operator  queues the job again (after the cause is fixed)
 *   DELETE /api/dead-letters/:id         admin
 */
import express, { type RequestHandler, type Router } from 'express';
import type { RoleName } from '../core/contract.js';
import { notFound, unavailable } from '../core/errors.js';
import { page } from '../http/paging.js';
import type { Logger } from '../observability/logger.js';
import type { DeliveryQueue } from '../queue/queue.js';
import type { DeadLetterStore } from './dead-letters.js';

export interface DeadLetterRoutesDeps {
  deadLetters: DeadLetterStore;
  queue: DeliveryQueue;
  requireRole(...roles: RoleName[]): RequestHandler;
  log: Logger;
}

export function deadLetterRoutes(deps: DeadLetterRoutesDeps): Router {
  const { deadLetters, queue, log } = deps;
  const router = express.Router();
  const ops = deps.requireRole('operator');
  const ready: RequestHandler = (_req, _res, next) => next(queue.isReady() ? undefined : unavailable('Redis is not reachable', 5));

  router.get('/api/dead-letters', ops, ready, async (req, res) => {
    const { offset, limit } = page(req.query);
    res.json(await deadLetters.list(offset, limit));
  });
  router.get('/api/dead-letters/:id', ops, ready, async (req, res) => {
    const d = await deadLetters.get(String(req.params.id));
    if (!d) throw notFound(`no dead letter '${req.params.id}'`);
    res.json(d);
  });
  router.post('/api/dead-letters/:id/retry', ops, ready, async (req, res) => {
    const id = String(req.params.id);
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
    log.info({ deadLetter: id, jobId }, 'dead letter replayed');
    res.status(202).json({ jobId });
  });
  router.delete('/api/dead-letters/:id', deps.requireRole(), ready, async (req, res) => {
    if (!(await deadLetters.delete(String(req.params.id)))) throw notFound(`no dead letter '${req.params.id}'`);
    res.status(204).end();
  });
  return router;
}
