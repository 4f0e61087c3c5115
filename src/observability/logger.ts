/**
 * JSON-lines logger (pino). Logs never carry PHI: the code logs ids of jobs, adapters and devices, never patient
 * identifiers, names or observation values; the redact list below is a second line of defence for fields that might
 * be passed by mistake.
 */
import { pino, type Logger } from 'pino';

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

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'iomt-gateway' },
      redact: { paths: PHI_REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    (destination ?? process.stdout) as never,
  );
}
