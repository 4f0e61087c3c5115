/**
 * Command-line tools for vendors, to try a mapping before it goes live. Each returns the process exit code.
 *
 *   translate <mapping-folder | adapter-id> <payload.json> [--mappings <dir>] [--attr key=value ...]
 *       Translates one payload and prints the FHIR resources (JSON) on stdout, or the OperationOutcome on stderr.
 *       Every resource is validated; validation errors are printed and make the exit code 1.
 *   validate-mapping <mapping-folder | mappings-folder>
 *       Checks the templates, their codes and units, and translates and validates every sample. Prints every
 *       problem as "file JSONPath: message"; exit code 1 when there is an error.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { validate } from '../../fhir/validate.js';
import { TranslationError, type DeviceAdapter } from '../../core/contract.js';
import { AdapterRegistry } from '../registry.js';
import { formatIssue, type MappingIssue } from './issues.js';
import { isMappingDir, loadMappingDir, loadMappingsDir } from './loader.js';
import { DRY_RUN_CONTEXT, DRY_RUN_RECEIVED_AT } from './validate-mapping.js';

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const processIo: CliIo = {
  out: (t) => void process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => void process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

export const DEFAULT_MAPPINGS_DIR = 'mappings';

function option(argv: string[], name: string): { value?: string; rest: string[]; all: string[] } {
  const rest: string[] = [];
  const all: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name && i + 1 < argv.length) all.push(argv[++i]);
    else if (argv[i].startsWith(`${name}=`)) all.push(argv[i].slice(name.length + 1));
    else rest.push(argv[i]);
  }
  return { value: all[all.length - 1], rest, all };
}

function contextFromEnv() {
  return {
    deviceIdentifierSystem: process.env.DEVICE_IDENTIFIER_SYSTEM || DRY_RUN_CONTEXT.deviceIdentifierSystem,
    patientIdentifierSystem: process.env.PATIENT_IDENTIFIER_SYSTEM || DRY_RUN_CONTEXT.patientIdentifierSystem,
  };
}

function printIssues(issues: MappingIssue[], io: CliIo): void {
  for (const i of issues) io.err(formatIssue(i));
}

/** `translate <mapping-folder | adapter-id> <payload.json>`: prints the resources, or the errors. */
export async function translateCommand(argv: string[], io: CliIo = processIo): Promise<number> {
  const mappings = option(argv, '--mappings');
  const attrs = option(mappings.rest, '--attr');
  const [target, payloadFile] = attrs.rest;
  if (!target || !payloadFile) {
    io.err('usage: translate <mapping-folder | adapter-id> <payload.json> [--mappings <dir>] [--attr key=value ...]');
    return 2;
  }
  let adapter: DeviceAdapter | undefined;
  const asDir = existsSync(target) && statSync(target).isDirectory() && isMappingDir(target);
  if (asDir) {
    const r = loadMappingDir(target);
    if (!r.adapter) {
      // Show the mapping's own errors: a vendor running translate wants to know why it cannot.
      printIssues(
        r.issues.filter((i) => i.severity === 'error'),
        io,
      );
      io.err(`translate: the mapping in ${target} has errors (above); fix them first`);
      return 1;
    }
    adapter = r.adapter;
  } else {
    adapter = new AdapterRegistry().get(target);
    if (!adapter) {
      const dir = mappings.value ?? DEFAULT_MAPPINGS_DIR;
      const candidate = path.join(dir, target);
      if (existsSync(candidate) && isMappingDir(candidate)) {
        const r = loadMappingDir(candidate);
        if (!r.adapter) {
          printIssues(
            r.issues.filter((i) => i.severity === 'error'),
            io,
          );
          io.err(`translate: the mapping '${target}' has errors (above); fix them first`);
          return 1;
        }
        adapter = r.adapter;
      }
    }
    if (!adapter) {
      io.err(
        `translate: '${target}' is neither a mapping folder nor a known adapter id (looked in ${mappings.value ?? DEFAULT_MAPPINGS_DIR}/ and the built-ins)`,
      );
      return 2;
    }
  }
  let body: unknown;
  try {
    body = JSON.parse(readFileSync(payloadFile, 'utf8').replace(/^\uFEFF/, ''));
  } catch (e) {
    io.err(`translate: cannot read ${payloadFile} as JSON: ${(e as Error).message}`);
    return 2;
  }
  const attributes: Record<string, string> = {};
  for (const a of attrs.all) {
    const eq = a.indexOf('=');
    if (eq > 0) attributes[a.slice(0, eq)] = a.slice(eq + 1);
  }
  try {
    const translations = adapter.translate({ body, channel: 'http', receivedAt: DRY_RUN_RECEIVED_AT, attributes }, contextFromEnv());
    io.out(JSON.stringify(translations, null, 2));
    let invalid = 0;
    translations.forEach((tr, ti) => {
      for (const r of [...tr.devices, ...tr.observations]) {
        for (const i of validate(r)) {
          invalid++;
          io.err(`invalid ${r.resourceType} (translation[${ti}]) ${i.expression?.[0] ?? ''}: ${i.diagnostics ?? i.code}`);
        }
      }
    });
    return invalid ? 1 : 0;
  } catch (e) {
    if (e instanceof TranslationError) {
      io.err(JSON.stringify(e.outcome, null, 2));
      return 1;
    }
    throw e;
  }
}

/** `validate-mapping <folder>`: every problem of a mapping folder (or of every folder in a mappings folder). */
export async function validateMappingCommand(argv: string[], io: CliIo = processIo): Promise<number> {
  const [dir] = argv;
  if (!dir) {
    io.err('usage: validate-mapping <mapping-folder | mappings-folder>');
    return 2;
  }
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    io.err(`validate-mapping: ${dir} is not a folder`);
    return 2;
  }
  if (isMappingDir(dir)) {
    const r = loadMappingDir(dir);
    printIssues(r.issues, io);
    const errors = r.issues.filter((i) => i.severity === 'error').length;
    const warnings = r.issues.length - errors;
    const samples = r.samples.length
      ? `, ${r.samples.filter((s) => !s.issues.length).length}/${r.samples.length} samples translate and validate`
      : ', no samples';
    io.out(`${r.id}: ${errors ? `${errors} error(s)` : 'ok'}${warnings ? `, ${warnings} warning(s)` : ''}${samples}`);
    return errors ? 1 : 0;
  }
  const result = loadMappingsDir(dir);
  for (const w of result.warnings) io.err(formatIssue({ ...w, severity: 'warning' }));
  for (const e of result.errors) io.err(formatIssue({ ...e, severity: 'error' }));
  io.out(
    `${result.adapters.length} mapping(s) loaded: ${result.adapters.map((a) => a.id).join(', ') || 'none'}; ${result.errors.length} error(s), ${result.warnings.length} warning(s)`,
  );
  return result.errors.length ? 1 : 0;
}
