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
  return pino(
    {
      level,
      base: { service: 'iomt-gateway' },
      redact: { paths: PHI_REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream as never,
  );
}
