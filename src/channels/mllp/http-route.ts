/**
 * POST /hl7v2: the HL7v2 session over HTTP. One message, several, or a batch as the body (x-application/hl7-v2+er7
 * or text/plain); answers 200 with the ACK message(s) in the body (the ACK code is also in the X-HL7-Ack-Code header),
 * 204 when the message asked for no ACK. Refused messages are in the one refusal API (pipeline/routes.ts).
 * Errors are FHIR OperationOutcome JSON, from the app's one error handler (http/errors.ts).
 */
import express, { type Request, type RequestHandler, type Response, type Router } from 'express';
import { clientAddress } from '../../http/client.js';
import { badRequest, GatewayError, issue, outcome } from '../../core/errors.js';
import { charsetLabel, encodeText } from '../../hl7v2/parse.js';
import type { Hl7Session } from './session.js';

export interface Hl7RouteOptions {
  session: Hl7Session;
  /** Access check in front of POST /hl7v2 (devices, vendors). Without it the route is open (development only). */
  auth?: RequestHandler;
  /** Largest accepted body (default 1 MiB). */
  maxBodyBytes?: number;
}

const HL7_TYPES = [
  'x-application/hl7-v2+er7',
  'application/hl7-v2+er7',
  'application/hl7-v2',
  'text/plain',
  'application/edi-hl7',
  'application/octet-stream',
];

function mimeCharset(hl7Charset: string): string {
  const label = charsetLabel(hl7Charset);
  if (label === 'latin1') return 'iso-8859-1';
  if (label === 'ascii') return 'us-ascii';
  if (label === 'utf-16le') return 'utf-16le';
  return 'utf-8';
}

export function hl7Route(options: Hl7RouteOptions): Router {
  const { session } = options;
  const router = express.Router();
  const open: RequestHandler = (_req, _res, next) => next();

  router.post(
    '/hl7v2',
    options.auth ?? open,
    express.raw({ type: () => true, limit: options.maxBodyBytes ?? 1048576 }),
    async (req: Request, res: Response) => {
      const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      if (!HL7_TYPES.includes(type)) {
        throw new GatewayError(
          415,
          outcome([
            issue('not-supported', `Content-Type '${type || '(none)'}' is not accepted; send x-application/hl7-v2+er7 or text/plain`),
          ]),
        );
      }
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      if (!body.length) throw badRequest('the body is empty; send an HL7v2 message');
      const result = await session.handleBytes(body, {
        channel: 'http',
        peer: clientAddress(req),
        remoteAddress: clientAddress(req),
        principal: req.principal,
      });
      const codes = result.outcomes.flatMap((o) => o.ackCodes);
      if (!result.responses.length) {
        res.status(204).end();
        return;
      }
      res.status(200);
      res.setHeader(
        'Content-Type',
        `${type === 'text/plain' ? 'text/plain' : 'x-application/hl7-v2+er7'}; charset=${mimeCharset(result.charset)}`,
      );
      res.setHeader('X-HL7-Ack-Code', codes.join(','));
      res.send(Buffer.concat(result.responses.map((r) => encodeText(r, result.charset))));
    },
  );
  return router;
}
