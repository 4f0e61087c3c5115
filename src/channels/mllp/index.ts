/**
 * The HL7v2 channel: the MLLP listener (MLLP_ENABLED, roles that ingest) and POST /hl7v2, sharing one session (ACK
 * rules, ACK cache, refusals). Built once by app/features.ts.
 */
import type { RequestHandler } from 'express';
import type { MllpAllowList } from '../../access/mllp-senders.js';
import type { Hl7Config } from '../../hl7v2/config.js';
import type { Metrics } from '../../observability/metrics.js';
import type { Ingestor } from '../../pipeline/pipeline.js';
import type { RefusalStore } from '../../pipeline/refusals.js';
import type { RedisClient } from '../../queue/connection.js';
import type { Channel } from '../channel.js';
import { hl7Route } from './http-route.js';
import { MllpServer } from './server.js';
import { type Hl7Logger, Hl7Session } from './session.js';

export interface MllpChannelDeps {
  ingestor: Ingestor;
  redis: RedisClient;
  refusals: RefusalStore;
  config: Hl7Config;
  log: Hl7Logger;
  metrics: Metrics;
  /** MLLP_ALLOWED_SENDERS. */
  senders: MllpAllowList;
  /** Access check of POST /hl7v2. */
  auth: RequestHandler;
  /** Every message answered within this time (ENQUEUE_TIMEOUT_MS). */
  answerWithinMs?: number;
  maxBodyBytes: number;
}

export interface MllpChannel extends Channel {
  readonly session: Hl7Session;
  readonly server?: MllpServer;
}

export function mllpChannel(deps: MllpChannelDeps): MllpChannel {
  const { config, metrics } = deps;
  const session = new Hl7Session({
    ingestor: deps.ingestor,
    redis: deps.redis,
    refusals: deps.refusals,
    config,
    logger: deps.log,
    metrics,
    senderAllowed: (facility, address, cert) => deps.senders.check(facility, address, cert),
    answerWithinMs: deps.answerWithinMs,
  });
  deps.refusals.replayWith('hl7v2', (entry) => session.replay(entry));
  const server = config.mllpEnabled
    ? new MllpServer({ config, logger: deps.log, session, metrics, isKnownPeer: (address) => deps.senders.knowsAddress(address) })
    : undefined;
  if (server) metrics.gauge('mllp_connections', () => server.connections);
  return {
    name: 'mllp',
    session,
    server,
    router: hl7Route({ session, auth: deps.auth, maxBodyBytes: deps.maxBodyBytes }),
    start: async () => {
      await server?.start();
    },
    stop: async () => {
      await server?.stop();
    },
  };
}
