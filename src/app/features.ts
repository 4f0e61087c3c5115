/**
 * The feature modules the gateway runs with, in one list (a grep for `standardExtensions` finds how it is assembled):
 * device management first (it supplies access control and the ingest guard), then the adapters (declarative mappings,
 * TypeScript plugins, adapters registered through the API — in that order, the registration API checks ids against the
 * others), then the channels other than HTTP (HL7v2 over MLLP, MQTT).
 */
import type { GatewayOptions } from './gateway.js';
import { createDeviceManagement, mllpSenderAllowed } from '../devices/index.js';
import { mappingsExtension } from '../adapters/mapping/folder.js';
import { hl7Extension } from '../channels/mllp/index.js';
import { pluginsExtension } from '../adapters/plugins.js';
import { registrationExtension } from '../registration/service.js';
import { mqttExtension } from '../channels/mqtt/channel.js';

export function standardExtensions(): NonNullable<GatewayOptions['extensions']> {
  return [
    (ctx) => createDeviceManagement(ctx),
    mappingsExtension(),
    pluginsExtension(),
    registrationExtension(),
    hl7Extension({
      auth: (ctx) => ({ ingest: ctx.requireRole('device', 'vendor'), admin: ctx.requireRole('operator') }),
      senderAllowed: mllpSenderAllowed,
    }),
    mqttExtension(),
  ];
}
