/**
 * The feature modules the gateway runs with, in one list (a grep for `standardExtensions` finds how it is assembled):
 * device management first (it supplies access control and the ingest guard), then declarative mappings, then HL7v2.
 */
import type { GatewayOptions } from './gateway.js';
import { createDeviceManagement, mllpSenderAllowed } from './devices/index.js';
import { mappingsExtension } from './adapters/extension.js';
import { hl7Extension } from './hl7v2/extension.js';

export function standardExtensions(): NonNullable<GatewayOptions['extensions']> {
  return [
    (ctx) => createDeviceManagement(ctx),
    mappingsExtension(),
    hl7Extension({
      auth: (ctx) => ({ ingest: ctx.requireRole('device', 'vendor'), admin: ctx.requireRole('operator') }),
      senderAllowed: mllpSenderAllowed,
    }),
  ];
}
