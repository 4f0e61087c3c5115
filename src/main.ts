#!/usr/bin/env node
/**
 * The command line: `start` runs the gateway; the other commands are tools for integration teams and vendors.
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { ConfigError, ROLES, type Role } from './config/index.js';
import { Gateway, StartupError, VERSION } from './app/gateway.js';
import { RedisNotInstalledError } from './queue/embedded-redis.js';
import { AdapterRegistry } from './adapters/registry.js';
import { Pipeline } from './pipeline/pipeline.js';
import { GatewayError } from './core/errors.js';
import { acceptedCodesMarkdown, MEASUREMENTS_SCHEMA } from './adapters/measurements-format.js';
import { gatewayConfigHelp, gatewayEnvFile, loadGatewayConfig } from './app/features.js';
import { applyToRegistry, loadMappingsDir, validateMappingCommand, translateCommand } from './adapters/mapping/index.js';
import { SHIPPED_MAPPINGS_DIR } from './adapters/mapping/folder.js';
import { main as sendHl7 } from './channels/mllp/client.js';
import { HL7_ADAPTER_ID } from './hl7v2/adapter.js';
import { loadHl7Package } from './hl7v2/parse.js';
import { loadPluginsInto } from './adapters/plugins.js';
import { existsSync, statSync } from 'node:fs';
import { generateKeyFile } from './ehr-auth/index.js';
import { SIGNING_ALGS, type SigningAlg } from './config/ehr-auth.js';

const HELP = `iomt-gateway ${VERSION}: connected medical device data to FHIR R4, through Redis, to the EHR

Usage:
  iomt-gateway start [--role all|ingest|worker]   run the gateway (default role: all)
  iomt-gateway translate ID|DIR FILE [--attr k=v]  translate a payload offline and print the FHIR resources (or errors);
                                                  ID is a built-in adapter, a plugin, a mapping in MAPPINGS_DIR (or
                                                  --mappings DIR), or DIR a mapping folder; --adapter ID also works
  iomt-gateway validate-mapping DIR               check a mapping folder (or a folder of them): every error, with file and path
  iomt-gateway send-hl7 [--host H] [--port P] FILE..  send HL7v2 messages over MLLP (default 127.0.0.1:2575) and
                                                  print the ACKs (--tls, --ca, --help)
  iomt-gateway formats [--codes]                  the measurements format as JSON Schema (--codes: the accepted codes)
  iomt-gateway config [--env]                     print the configuration keys (--env: as an environment file)
  iomt-gateway keys generate --alg RS384|ES384 --out FILE
                                                  write a new private key for SMART Backend Services (FHIR_SMART_KEYS)
                                                  and print its kid; see docs/ehr.md for registration and rotation
  iomt-gateway --help | --version

In a checkout: npx iomt-gateway <command> (or node dist/main.js <command>; npm start and npm run build build it);
npm link puts iomt-gateway on the PATH. With npm: npm start (build + start), npm run dev (start from source).

Roles:
  all     ingest and delivery in one process (delivery on a thread of its own where the process may use
          two cores, a container's CPU quota counted: DELIVERY_THREAD)
  ingest  receive (HTTP, MLLP), translate, validate and enqueue; no delivery
  worker  deliver queued jobs to the EHR (HTTP serves health, status and operations only)

Configuration (environment variables):
${gatewayConfigHelp()}
`;

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i >= 0) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

/**
 * HEAP_GROWTH_PERCENT: V8's --heap-growing-percent, which it reads whenever it sets the heap's next limit after a full
 * collection. V8's own choice on a machine with several GiB is up to 4x the live heap: a worker whose live heap is
 * 40 MiB grew to 190 MiB of heap and 285 MiB of RSS under a steady load (measured, docs/scaling.md). 0 leaves V8 its
 * own choice (and any --heap-growing-percent given to node).
 */
function applyHeapGrowth(percent: number): void {
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}

/** A repeated signal within this time is the same Ctrl-C delivered twice (see shutdown). */
const SIGNAL_ECHO_MS = 1000;

async function start(argv: string[]): Promise<number> {
  const flag = arg(argv, '--role') as Role | undefined;
  if (flag !== undefined && !ROLES.includes(flag)) {
    console.error(`unknown role '${flag}': one of ${ROLES.join(', ')}`);
    return 2;
  }
  const config = loadGatewayConfig();
  applyHeapGrowth(config.heapGrowthPercent);
  const gateway = new Gateway(config, flag ?? config.role);
  let firstSignalAt = 0;
  const shutdown = (sig: string) => {
    if (firstSignalAt) {
      // Ctrl-C reaches every process of the terminal's group, and npm (or a wrapper) may pass it on once more: a second
      // signal within a second is that echo, not a person insisting.
      if (Date.now() - firstSignalAt < SIGNAL_ECHO_MS) return;
      gateway.log.warn({ signal: sig }, 'second signal: exiting now');
      process.exit(1);
    }
    firstSignalAt = Date.now();
    gateway.log.info({ signal: sig }, 'shutting down: no new data accepted, finishing in-flight jobs');
    void gateway.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  try {
    await gateway.start();
  } catch (err) {
    await gateway.stop().catch(() => undefined);
    throw err;
  }
  return -1; // keep running
}

/** Values of a repeated option (--attr a=1 --attr b=2). */
function args(argv: string[], name: string): string[] {
  return argv.flatMap((a, i) =>
    a === name && argv[i + 1] !== undefined ? [argv[i + 1]] : a.startsWith(`${name}=`) ? [a.slice(name.length + 1)] : [],
  );
}

const TRANSLATE_USAGE =
  'usage: iomt-gateway translate <mapping-folder | adapter-id> <payload.json> [--mappings DIR] [--attr key=value ...]\n' +
  '       iomt-gateway translate --adapter ID <payload.json> [--mappings DIR] [--attr key=value ...]   (also plugins: PLUGINS_DIR)';

async function translate(argv: string[]): Promise<number> {
  const valued = new Set(['--adapter', '--mappings', '--attr']);
  const positional = argv.filter((a, i) => !a.startsWith('--') && !valued.has(argv[i - 1]));
  const adapterId = arg(argv, '--adapter');
  // Without --adapter: `translate <folder | id> <payload>`, the mapping tool's form (it takes --mappings and --attr).
  if (!adapterId) {
    if (positional.length !== 2) {
      console.error(TRANSLATE_USAGE);
      return 2;
    }
    if (existsSync(positional[0]) && statSync(positional[0]).isDirectory()) return translateCommand(argv);
  }
  const id = adapterId ?? positional[0];
  const file = adapterId ? positional.at(-1) : positional[1];
  if (!id || !file) {
    console.error(TRANSLATE_USAGE);
    return 2;
  }
  if (existsSync(id) && statSync(id).isDirectory())
    return translateCommand([id, file, ...argv.filter((a, i) => a === '--attr' || argv[i - 1] === '--attr')]);
  const attributes: Record<string, string> = {};
  for (const kv of args(argv, '--attr')) {
    const i = kv.indexOf('=');
    if (i < 1) {
      console.error(`--attr needs key=value, not '${kv}'\n${TRANSLATE_USAGE}`);
      return 2;
    }
    attributes[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const config = loadGatewayConfig();
  const registry = new AdapterRegistry();
  const mappingsDir = arg(argv, '--mappings') ?? (config.raw.get('MAPPINGS_DIR') as string | undefined) ?? SHIPPED_MAPPINGS_DIR;
  applyToRegistry(registry, loadMappingsDir(mappingsDir));
  const plugins = await loadPluginsInto(registry, config);
  for (const e of plugins.errors) console.error(`plugin not loaded: ${e.source}: ${e.message}`);
  const pipeline = new Pipeline(
    registry,
    { enqueue: async () => [] },
    { deviceIdentifierSystem: config.deviceIdentifierSystem, patientIdentifierSystem: config.patientIdentifierSystem },
  );
  let body: unknown;
  try {
    body = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    console.error(`cannot read ${file} as JSON: ${(err as Error).message}`);
    return 2;
  }
  // The hl7v2 adapter's synchronous translate needs its fallback parser loaded for some messages (hl7v2/parse.ts).
  if (id === HL7_ADAPTER_ID) await loadHl7Package();
  try {
    const translations = pipeline.translate(id, { body, channel: 'cli', receivedAt: new Date().toISOString(), attributes });
    console.log(JSON.stringify(translations, null, 2));
    return 0;
  } catch (err) {
    if (err instanceof GatewayError) {
      console.log(JSON.stringify(err.outcome, null, 2));
      return 1;
    }
    throw err;
  }
}

async function keys(argv: string[]): Promise<number> {
  const alg = arg(argv, '--alg') ?? 'RS384';
  const out = arg(argv, '--out');
  if (argv[0] !== 'generate' || !out || !SIGNING_ALGS.includes(alg as SigningAlg)) {
    console.error(`usage: iomt-gateway keys generate --alg ${SIGNING_ALGS.join('|')} --out FILE`);
    return 2;
  }
  try {
    const { kid } = await generateKeyFile(alg as SigningAlg, out);
    console.log(`wrote a new ${alg} private key to ${out} (kid ${kid}); add it to FHIR_SMART_KEYS`);
    return 0;
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      console.log(HELP);
      return 0;
    case '--version':
    case '-v':
      console.log(VERSION);
      return 0;
    case 'formats':
      if (rest.includes('--codes')) process.stdout.write(acceptedCodesMarkdown());
      else process.stdout.write(`${JSON.stringify(MEASUREMENTS_SCHEMA, null, 2)}\n`);
      return 0;
    case 'config':
      if (rest.includes('--env')) process.stdout.write(gatewayEnvFile());
      else console.log(gatewayConfigHelp());
      return 0;
    case 'start':
      return start(rest);
    case 'keys':
      return keys(rest);
    case 'translate':
      return translate(rest);
    case 'validate-mapping':
      return validateMappingCommand(rest);
    case 'send-hl7':
      return sendHl7(rest);
    default:
      console.error(`unknown command '${cmd}'\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof RedisNotInstalledError || err instanceof StartupError) console.error(err.message);
    else console.error(err);
    process.exit(1);
  },
);
