/**
 * The HTTP channel: POST /ingest/:adapter takes a vendor JSON payload, hands it to the pipeline and answers 202 with
 * the job ids once the data is durably queued. A refusal is an OperationOutcome with its status; one that is not
 * retryable is kept in the refusal store (its id in the X-Refused-Id header) for inspection and replay.
 */
import { isUtf8 } from 'node:buffer';
import express, { type RequestHandler } from 'express';
import { clientAddress } from '../http/client.js';
import { firstInvalidUtf8 } from '../core/utf8.js';
import type { InboundMessage, Principal } from '../core/contract.js';
import { GatewayError, issue, notFound, outcome } from '../core/errors.js';
import { requireJson, sendJson } from '../http/errors.js';
import type { IngestResult, Ingestor } from '../pipeline/pipeline.js';
import { withTimeout } from '../queue/queue.js';
import { deviceIdsOf, type Refusal, type RefusalStore, type ReplayResult } from '../pipeline/refusals.js';
import type { Channel } from './channel.js';
import type { HotRoute } from '../http/app.js';
import { HMAC_HEADERS } from '../access/hmac.js';
import { acceptedCodes, MEASUREMENTS_SCHEMA } from '../adapters/measurements-format.js';

export interface HttpChannelDeps {
  ingestor: Ingestor;
  refusals: RefusalStore;
  /** Access check of POST /ingest/:adapter (devices, vendors). */
  auth: RequestHandler;
  maxBodyBytes: number;
  /** The vendor that registered an adapter over the registration API (undefined: built-in, folder or plugin). */
  adapterVendor?: (adapterId: string) => string | undefined;
  /**
   * ENQUEUE_TIMEOUT_MS: how long the ingest and keeping a refused body may wait on Redis. With Redis down the sender is
   * answered then (503 "retry later", or its 422 without X-Refused-Id), not after the Redis client's retries. The
   * credential check's reads are bounded by the same setting in access/access.ts.
   */
  answerWithinMs?: number;
}

/** The 202 body: what was queued, and what was held for review (said, not hidden behind readings: 0). */
const accepted = (r: IngestResult) => ({
  jobIds: r.jobIds,
  readings: r.translations.length,
  observations: r.observations,
  ...(r.held
    ? {
        held: r.held,
        status: 'held',
        detail: 'the device is not active yet: its readings are held for review and delivered when it is activated',
      }
    : {}),
});

/**
 * A UTF-8 body that is not valid UTF-8 is refused before it is decoded: the decoder would replace the bytes with U+FFFD
 * silently, and two device or patient ids that differ only there would become one. (Bodies declared in another charset
 * are decoded as declared.)
 */
function refuseInvalidUtf8(_req: unknown, _res: unknown, buf: Buffer, encoding: string): void {
  if (encoding.toLowerCase().replace('_', '-') !== 'utf-8' || isUtf8(buf)) return;
  throw new GatewayError(
    400,
    outcome([
      issue('structure', `the body is not valid UTF-8 (first invalid byte at offset ${firstInvalidUtf8(buf)}); JSON must be UTF-8`),
    ]),
  );
}

export function httpChannel(deps: HttpChannelDeps): Channel {
  const { ingestor, refusals } = deps;
  /**
   * A vendor credential sends through its own vendor's registered adapters and the shared ones (built-in, folder,
   * plugin), never through another vendor's: that is answered as an unknown adapter (404), as the registration API
   * answers another vendor's adapter, so ids cannot be probed. Device credentials are bound to their device instead.
   */
  const assertMayUse = (adapterId: string, p: Principal | undefined): void => {
    if (p?.role !== 'vendor') return;
    const owner = deps.adapterVendor?.(adapterId);
    if (owner !== undefined && owner !== (p.vendorId ?? p.id)) throw notFound(`no adapter '${adapterId}' is registered`);
  };
  const json = express.json({
    limit: deps.maxBodyBytes,
    type: ['application/json', 'application/fhir+json', 'application/*+json'],
    verify: refuseInvalidUtf8,
  });
  const router = express.Router();

  // The format of the measurements adapter, for the people who send it (no credential: it holds no data).
  router.get(
    '/formats/measurements/schema.json',
    (_req, res) => void res.type('application/schema+json').send(JSON.stringify(MEASUREMENTS_SCHEMA, null, 2)),
  );
  router.get('/formats/measurements/codes', (_req, res) => void res.json(acceptedCodes()));

  const ingest: RequestHandler = async (req, res) => {
    if (req.body === undefined) throw new GatewayError(400, outcome([issue('required', 'the body is empty')]));
    const message: InboundMessage = {
      body: req.body as unknown,
      channel: 'http',
      receivedAt: new Date().toISOString(),
      attributes: { remoteAddress: clientAddress(req) },
      principal: req.principal,
    };
    const adapterId = String(req.params.adapter);
    try {
      assertMayUse(adapterId, message.principal);
      const ingested = ingestor.ingest(adapterId, message);
      // Its own bound, counted from here: the body's upload, however slow, is not the gateway's wait on Redis. A message
      // queued after its 503 and resent is not written twice (content job ids, conditional writes to the EHR).
      const result = await withTimeout(ingested, deps.answerWithinMs, 'the message could not be queued');
      sendJson(res, 202, accepted(result));
    } catch (err) {
      if (err instanceof GatewayError && !err.retryable) {
        const deviceIds = deviceIdsOf(message.body);
        const keeping = refusals.add({
          channel: 'http',
          format: 'json',
          adapterId,
          receivedAt: message.receivedAt,
          status: err.status,
          reason: err.message,
          outcome: err.outcome,
          body: message.body,
          ...(deviceIds ? { deviceIds } : {}),
          ...(message.attributes ? { attributes: message.attributes } : {}),
          ...(message.principal ? { principal: message.principal } : {}),
        });
        const id = await withTimeout(keeping, deps.answerWithinMs, 'the refusal store did not answer').catch(() => undefined);
        if (id) res.setHeader('X-Refused-Id', id);
      }
      throw err;
    }
  };
  const ingestHandlers = [deps.auth, requireJson, json, ingest];
  router.post('/ingest/:adapter', ...ingestHandlers);
  // Every device message: dispatched before express's router, with the same handlers (http/app.ts).
  // A signed request (HMAC) goes through express: its check reads the raw body (access/hmac.ts).
  const hotRoutes: HotRoute[] = [
    {
      method: 'POST',
      path: /^\/ingest\/([^/]+)\/?$/i,
      params: ['adapter'],
      handlers: ingestHandlers,
      when: (req) => req.headers[HMAC_HEADERS.signature] === undefined,
    },
  ];

  // Replayed as its original sender sent it (same adapter, same credential's rights), through the whole pipeline.
  const replay = async (entry: Refusal): Promise<ReplayResult> => {
    const attributes = { ...entry.attributes, replayOf: entry.id };
    const message: InboundMessage = {
      body: entry.body,
      channel: entry.channel,
      receivedAt: entry.receivedAt,
      attributes,
      principal: entry.principal,
    };
    try {
      assertMayUse(entry.adapterId ?? '', entry.principal);
      return { accepted: true, result: 'accepted', detail: accepted(await ingestor.ingest(entry.adapterId ?? '', message)) };
    } catch (err) {
      if (err instanceof GatewayError && !err.retryable) {
        return { accepted: false, result: 'refused', refusal: { status: err.status, reason: err.message, outcome: err.outcome } };
      }
      throw err;
    }
  };
  refusals.replayWith('http', replay);

  return { name: 'http', router, hotRoutes, start: async () => undefined, stop: async () => undefined };
}
