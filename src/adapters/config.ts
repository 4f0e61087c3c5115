/**
 * Config keys of adapter plugins and the adapter registration API (a fragment of the one schema; see config/schema.ts,
 * listed with the others in app/features.ts).
 */
import type { ConfigKey } from '../config/schema.js';

/**
 * Limits on vendor templates and on what one message may yield (src/adapters/limits.ts; docs/security.md, "Vendor
 * templates"). The defaults are those of DEFAULT_TEMPLATE_LIMITS.
 */
export const TEMPLATE_LIMIT_KEYS: readonly ConfigKey[] = [
  {
    env: 'MAPPING_MAX_TEMPLATES',
    type: 'int',
    default: '100',
    min: 1,
    description:
      'Most templates in one template file of a declarative mapping (device mapping; FHIR mapping), from the mappings folder or the registration API',
  },
  {
    env: 'MAPPING_MAX_BYTES',
    type: 'int',
    default: '262144',
    min: 1024,
    description: 'Largest declarative mapping: both template files together, as JSON (bytes)',
  },
  {
    env: 'MESSAGE_MAX_READINGS',
    type: 'int',
    default: '1000',
    min: 1,
    description: 'Most readings one message may yield (every adapter); a message that yields more is refused (422 / AE)',
  },
  {
    env: 'MESSAGE_MAX_OBSERVATIONS',
    type: 'int',
    default: '5000',
    min: 1,
    description: 'Most Observations one message may yield (every adapter); a message that yields more is refused (422 / AE)',
  },
  {
    env: 'TEMPLATE_BUDGET_MS',
    type: 'int',
    default: '1000',
    min: 10,
    max: 60000,
    description:
      'Time the declarative templates of one message may take; beyond it the message is refused (422 / AE, kept with the refusals) and its worker thread is replaced',
  },
  {
    env: 'TEMPLATE_WORKERS',
    type: 'int',
    default: '2',
    min: 0,
    max: 64,
    description:
      'Worker threads that evaluate declarative templates off the event loop. 0: in the event loop, with the budget checked between templates only (no hard bound; for tools and tests)',
  },
];

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
  ...TEMPLATE_LIMIT_KEYS,
];
