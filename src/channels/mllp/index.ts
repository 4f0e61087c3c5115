/**
 * Wiring of the HL7v2 part into the gateway as one extension (see gateway.ts `GatewayOptions.extensions`): registers
 * the 'hl7v2' adapter built from the configuration, mounts POST /hl7v2 and /api/rejected, and runs the MLLP listener
 * (roles that ingest, MLLP_ENABLED=true).
 *
 *   new Gateway(config, role, { extensions: [hl7Extension({ auth: () => ({ ingest, admin }) })] })
 */
import type { RequestHandler, Router } from 'express';
import type { Extension, ExtensionContext } from '../../app/gateway.js';
import { createHl7Adapter } from '../../hl7v2/adapter.js';
import { readHl7Config } from '../../hl7v2/config.js';
import { MllpServer } from './server.js';
import { hl7Routes } from './http-route.js';
import { type Hl7Logger, Hl7Service, type Hl7ServiceDeps } from './session.js';

export interface Hl7ExtensionOptions {
  /** Access checks for the routes (resolved when the extension is built). */
  auth?: (ctx: ExtensionContext) => { ingest?: RequestHandler; admin?: RequestHandler } | undefined;
  /** The MLLP sender allow-list check (MLLP_ALLOWED_SENDERS; see access/mllp.ts). */
  senderAllowed?: Hl7ServiceDeps['senderAllowed'];
}

/** Registries already wired (an extension listed twice must not start a second MLLP listener on the same port). */
const wired = new WeakSet<object>();

export function hl7Extension(options: Hl7ExtensionOptions = {}): (ctx: ExtensionContext) => Promise<Extension> {
  return async (ctx) => {
    if (wired.has(ctx.registry)) return {};
    wired.add(ctx.registry);
    const { config, errors } = readHl7Config(ctx.config.raw);
    if (errors.length) throw new Error(`invalid HL7 configuration:\n  - ${errors.join('\n  - ')}`);
    ctx.registry.register(createHl7Adapter({ ...config, defaultCharset: config.defaultCharset }));
    const logger = ctx.log as unknown as Hl7Logger;
    if (!ctx.pipeline) return {};
    const service = new Hl7Service({ ingestor: ctx.pipeline, redis: ctx.redis, config, logger, metrics: ctx.metrics, senderAllowed: options.senderAllowed });
    const routers: Router[] = [hl7Routes({ ingestor: ctx.pipeline, redis: ctx.redis, config, logger, service, auth: options.auth?.(ctx) })];
    const mllp = config.mllpEnabled ? new MllpServer({ ingestor: ctx.pipeline, redis: ctx.redis, config, logger, service }) : undefined;
    if (mllp) ctx.metrics.gauge('mllp_connections', () => mllp.connections);
    return {
      routers,
      start: async () => {
        await mllp?.start();
      },
      stop: async () => {
        await mllp?.stop();
      },
    };
  };
}
