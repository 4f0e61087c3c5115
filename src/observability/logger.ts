/**
 * The logger (pino): JSON lines by default, for log collectors; LOG_FORMAT=pretty prints one readable line per event
 * for a terminal (pino-pretty, the format pino's authors keep), with the same redaction. Logs never carry PHI: the code logs ids of jobs, adapters and devices, never patient
 * identifiers, names or observation values; the redact list below is a second line of defence for fields that might
 * be passed by mistake.
 */
import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';
import type pretty from 'pino-pretty';

export type { Logger };

export const PHI_REDACT_PATHS = [
  'patient',
  'patientId',
  'mrn',
  'name',
  'birthDate',
  'value',
  'valueQuantity',
  'body',
  'payload',
  'subject',
  '*.patient',
  '*.patientId',
  '*.mrn',
  '*.name',
  '*.birthDate',
  '*.value',
  '*.valueQuantity',
  '*.body',
  '*.payload',
  '*.subject',
  'req.headers.authorization',
  'headers.authorization',
  '*.authorization',
  'token',
  'key',
  '*.token',
  '*.key',
];

const CENSOR = '[redacted]';
/** The keys censored at the top of a log object and one level down (`patient`, `job.patient`): PHI_REDACT_PATHS. */
const PHI_KEYS = new Set(PHI_REDACT_PATHS.filter((p) => !p.includes('.')));
const handled = (p: string) =>
  !p.includes('.') ||
  (p.startsWith('*.') && (PHI_KEYS.has(p.slice(2)) || p === '*.authorization')) ||
  p === 'req.headers.authorization' ||
  p === 'headers.authorization';
for (const p of PHI_REDACT_PATHS) if (!handled(p)) throw new Error(`PHI_REDACT_PATHS: redactPhi does not handle the path '${p}'`);

/** A shallow copy that keeps the prototype and every own property (an Error's message and stack too). */
const copyOf = <T extends object>(o: T): T => Object.create(Object.getPrototypeOf(o), Object.getOwnPropertyDescriptors(o)) as T;

/** One level down: a PHI key or `authorization`; under `req`, `headers.authorization` as well. */
function redactChild(o: Record<string, unknown>, underReq: boolean): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(o)) {
    const v = o[k];
    let r = v;
    if (PHI_KEYS.has(k) || k === 'authorization') r = CENSOR;
    else if (underReq && k === 'headers' && v !== null && typeof v === 'object' && 'authorization' in v)
      r = Object.assign(copyOf(v), { authorization: CENSOR });
    if (r !== v) {
      out ??= copyOf(o);
      out[k] = r;
    }
  }
  return out ?? o;
}

/**
 * PHI_REDACT_PATHS applied to a log object (pino's `formatters.log`): what pino's `redact` option does with those
 * paths, without its cost. Since pino 10 that option parses every path again for each key of each line: about 12 µs
 * for the line the MLLP channel logs per message, against 3 µs for the rest of the line, some 2 % of a message's CPU.
 * test/observability/logger.test.ts checks that both write the same lines. Nothing is changed in place: what holds a
 * censored key is copied (an Error keeps its prototype, message and stack), the rest is shared.
 */
export function redactPhi(obj: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    let r = v;
    if (PHI_KEYS.has(k)) r = CENSOR;
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) r = redactChild(v as Record<string, unknown>, k === 'req');
    if (r !== v) {
      out ??= { ...obj };
      out[k] = r;
    }
  }
  return out ?? obj;
}

export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export function createLogger(level: string, destination?: NodeJS.WritableStream, format: LogFormat = 'json'): Logger {
  const out = destination ?? process.stdout;
  // pino-pretty (CommonJS) is loaded only for LOG_FORMAT=pretty: the default JSON lines need none of it.
  const stream =
    format === 'pretty'
      ? (createRequire(import.meta.url)('pino-pretty') as typeof pretty)({
          destination: out,
          colorize: !destination && !!process.stdout.isTTY,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname,service',
          sync: true,
        })
      : out;
  const logger = pino(
    {
      level,
      base: { service: 'iomt-gateway' },
      formatters: { log: redactPhi },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream as never,
  );
  // A child's bindings are written on each of its lines; pino's redact option covered them, its formatters do not (it
  // resets the bindings formatter for children). Redacted once, when the child is made.
  const child = logger.child;
  logger.child = function (this: Logger, bindings: Record<string, unknown>, options?: unknown) {
    return child.call(this, redactPhi(bindings), options as never);
  } as typeof logger.child;
  return logger;
}
