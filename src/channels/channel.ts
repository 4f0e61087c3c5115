/**
 * The one interface of an ingest channel (HTTP, MLLP, MQTT): bytes in, acknowledgement out. A channel authenticates
 * what it can, hands each message to the pipeline (`Ingestor`), and acknowledges only after the pipeline resolved (the
 * data is durably queued). It reads a refusal's `retryable` flag (core/errors.ts) the same way as every other channel:
 * retryable → the sender must send again and nothing is kept; not retryable → refused for good, kept in the one refusal
 * store (pipeline/refusals.ts) for inspection and replay.
 */
import type { Router } from 'express';
import type { HotRoute } from '../http/app.js';

export const CHANNEL_NAMES = ['http', 'mllp', 'mqtt'] as const;
export type ChannelName = (typeof CHANNEL_NAMES)[number];

export interface Channel {
  readonly name: ChannelName;
  /** Routes the channel serves over HTTP (POST /ingest/:adapter, POST /hl7v2, /api/mqtt/status), mounted by the app. */
  readonly router?: Router;
  /** Routes of `router` busy enough to be dispatched before express's router (http/app.ts withHotRoutes). */
  readonly hotRoutes?: HotRoute[];
  /** Starts listening (after the HTTP server is up). Safe to call twice. */
  start(): Promise<void>;
  /** Stops accepting, lets in-flight messages finish. Safe to call twice. */
  stop(): Promise<void>;
}
