/**
 * Config keys of adapter plugins and the adapter registration API (a fragment of the one schema; see config/schema.ts,
 * listed with the others in app/features.ts).
 */
import type { ConfigKey } from '../config/schema.js';

/** Config keys of plugins and the registration API (a fragment of the one schema; see config/schema.ts). */
export const PLUGIN_KEYS: readonly ConfigKey[] = [
  {
    env: 'PLUGINS_DIR',
    type: 'string',
    description:
      'Folder of adapter plugins (each a .js/.mjs module, or a folder with a package.json "main" or index.js, exporting definePlugin(...) adapters). Unset: no plugins from a folder',
  },
  {
    env: 'PLUGIN_PACKAGES',
    type: 'list',
    description: 'Installed npm packages that export adapter plugins, comma-separated (e.g. @acme/iomt-ble-bp)',
  },
  {
    env: 'ADAPTERS_POLL_INTERVAL_MS',
    type: 'int',
    default: '5000',
    min: 100,
    description:
      'How often each instance checks the registered-adapter change counter in Redis (changes normally arrive at once by pub/sub; this catches missed ones)',
  },
];
