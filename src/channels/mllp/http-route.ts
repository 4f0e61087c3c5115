/**
 * HTTP routes of the HL7v2 channel (express 5):
 *
 *   POST   /hl7v2                      one message, several, or a batch as the body (x-application/hl7-v2+er7 or
 *                                      text/plain); answers 200 with the ACK message(s) in the body (the ACK code is
 *                                      also in the X-HL7-Ack-Code header), 204 when the message asked for no ACK.
 *   GET    /api/rejected               refused messages, newest first (?limit=&offset=), without the raw message
 *   GET    /api/rejected/:id           one refused message with its raw text
 *   POST   /api/rejected/:id/replay    run it through the channel again (after fixing the cause)
 *   DELETE /api/rejected/:id           drop it
 *
 * Errors are FHIR OperationOutcome JSON. /api/rejected holds PHI: pass the gateway's access checks as `auth`.
 */
import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import type { Redis } from 'ioredis';
import { badRequest, notFound, GatewayError, outcome, issue, toGatewayError, tooLarge } from '../../core/errors.js';
import type { Ingestor } from '../../pipeline/pipeline.js';
import type { Hl7Config } from '../../hl7v2/config.js';
import { charsetLabel, encodeText } from '../../hl7v2/parse.js';
import { type Hl7Logger, Hl7Service } from './session.js';

export interface Hl7RoutesOptions {
  ingestor: Ingestor;
  redis?: Redis;
  config: Hl7Config;
  logger?: Hl7Logger;
  /** Share one service with the MLLP server. */
  service?: Hl7Service;
  /**
   * Access checks: `ingest` in front of POST /hl7v2 (devices, vendors), `admin` in front of /api/rejected (operators;
   * the entries hold PHI). Without them the routes are open (development only).
   */
  auth?: { ingest?: RequestHandler; admin?: RequestHandler };
  /** Largest accepted body (default 1 MiB). */
  maxBodyBytes?: number;
}

const HL7_TYPES = ['x-application/hl7-v2+er7', 'application/hl7-v2+er7', 'application/hl7-v2', 'text/plain', 'application/edi-hl7', 'application/octet-stream'];

function mimeCharset(hl7Charset: string): string {
  const label = charsetLabel(hl7Charset);
  if (label === 'latin1') return 'iso-8859-1';
  if (label === 'ascii') return 'us-ascii';
  if (label === 'utf-16le') return 'utf-16le';
  return 'utf-8';
}

export function hl7Routes(options: Hl7RoutesOptions): Router {
  const service = options.service ?? new Hl7Service({ ingestor: options.ingestor, redis: options.redis, config: options.config, logger: options.logger });
  const router = express.Router();
  const open: RequestHandler = (_req, _res, next) => next();
  const auth = options.auth?.admin ?? open;
  const ingestAuth = options.auth?.ingest ?? open;

  router.post('/hl7v2', ingestAuth, express.raw({ type: () => true, limit: options.maxBodyBytes ?? 1048576 }), async (req: Request, res: Response) => {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (!HL7_TYPES.includes(type)) {
      throw new GatewayError(415, outcome([issue('not-supported', `Content-Type '${type || '(none)'}' is not accepted; send x-application/hl7-v2+er7 or text/plain`)]));
    }
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (!body.length) throw badRequest('the body is empty; send an HL7v2 message');
    const result = await service.handleBytes(body, { channel: 'http', peer: req.ip, remoteAddress: req.socket.remoteAddress, principal: req.principal });
    const codes = result.outcomes.flatMap((o) => o.ackCodes);
    if (!result.responses.length) {
      res.status(204).end();
      return;
    }
    res.status(200);
    res.setHeader('Content-Type', `${type === 'text/plain' ? 'text/plain' : 'x-application/hl7-v2+er7'}; charset=${mimeCharset(result.charset)}`);
    res.setHeader('X-HL7-Ack-Code', codes.join(','));
    res.send(Buffer.concat(result.responses.map((r) => encodeText(r, result.charset))));
  });

  const store = () => {
    if (!service.rejected) throw new GatewayError(503, outcome([issue('transient', 'the rejected-message store needs Redis, which is not configured')]));
    return service.rejected;
  };

  router.get('/api/rejected', auth, async (req: Request, res: Response) => {
    const num = (v: unknown) => (typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined);
    const limit = num(req.query.limit);
    const offset = num(req.query.offset);
    if ((req.query.limit !== undefined && limit === undefined) || (req.query.offset !== undefined && offset === undefined)) throw badRequest('limit and offset must be whole numbers');
    res.json(await store().list({ limit, offset }));
  });

  router.get('/api/rejected/:id', auth, async (req: Request, res: Response) => {
    const entry = await store().get(String(req.params.id));
    if (!entry) throw notFound(`no rejected message '${req.params.id}'`);
    res.json(entry);
  });

  router.post('/api/rejected/:id/replay', auth, async (req: Request, res: Response) => {
    store();
    const r = await service.replay(String(req.params.id));
    if (!r) throw notFound(`no rejected message '${req.params.id}'`);
    const { outcome: o } = r;
    if (o.result === 'unavailable') throw new GatewayError(503, outcome([issue('transient', o.errors.map((e) => e.text).join('; '))]), { headers: { 'Retry-After': '5' } });
    res.json({
      id: req.params.id,
      accepted: o.result === 'accepted' || o.result === 'duplicate',
      result: o.result,
      ackCodes: o.ackCodes,
      errors: o.errors,
      ack: o.acks.join(''),
    });
  });

  router.delete('/api/rejected/:id', auth, async (req: Request, res: Response) => {
    if (!(await store().delete(String(req.params.id)))) throw notFound(`no rejected message '${req.params.id}'`);
    res.status(204).end();
  });

  router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    const { type, status } = (err ?? {}) as { type?: string; status?: number };
    // Body-parser refusals (size, encoding, a corrupt compressed body) are the sender's: 4xx, not 500.
    const e =
      type === 'entity.too.large'
        ? tooLarge('the HL7 message is larger than the accepted maximum')
        : !(err instanceof GatewayError) && typeof status === 'number' && status >= 400 && status < 500
          ? new GatewayError(status, outcome([issue('invalid', 'the request body could not be read')]))
          : toGatewayError(err);
    if (e.status === 500) options.logger?.error({ err: (err as Error)?.name ?? typeof err }, 'hl7 route failed');
    for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
    res.status(e.status).type('application/fhir+json').send(JSON.stringify(e.outcome));
  });

  return router;
}
