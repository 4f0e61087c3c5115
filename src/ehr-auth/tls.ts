/**
 * Mutual TLS to the EHR: the gateway's client certificate and a private CA, read once (readTlsMaterial), for the two
 * connection pools that reach the EHR: node:https's for the writes (delivery/ehr-http.ts) and an undici Agent, the
 * dispatcher of node's fetch, for fhir-kit-client's reads and the token requests to the EHR's own host.
 *
 * Node 20 bundles undici but does not export its classes: the Agent class is taken from the global dispatcher, which
 * undici registers under Symbol.for('undici.globalDispatcher.1') (the key undici itself reads so that separate copies
 * of it share one dispatcher). It is the Agent fetch already uses; only its TLS options differ.
 */
import { readFileSync } from 'node:fs';
import type { EhrTlsConfig } from '../config/ehr-auth.js';
import { ConfigError } from '../config/schema.js';

/** The client certificate, its key and a private CA (PEM text), for mutual TLS to the EHR. */
export interface TlsMaterial {
  cert?: string;
  key?: string;
  ca?: string;
}

const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');

type AgentClass = new (options: { connect: Record<string, unknown> }) => object & { close(): Promise<void> };

function agentClass(): AgentClass {
  // Building a Request makes undici create its global dispatcher if it has not yet.
  if (!(globalThis as Record<symbol, unknown>)[GLOBAL_DISPATCHER]) new Request('http://localhost/');
  const dispatcher = (globalThis as Record<symbol, unknown>)[GLOBAL_DISPATCHER] as { constructor?: AgentClass } | undefined;
  if (typeof dispatcher?.constructor !== 'function') throw new Error("this Node.js does not expose fetch's connection pool");
  return dispatcher.constructor;
}

/**
 * The client certificate, its key and the private CA (PEM text), read from their files, or undefined when no TLS setting
 * is given. A ConfigError lists every file that is missing, unreadable or not PEM of the expected kind.
 */
export function readTlsMaterial(
  tls: EhrTlsConfig,
  names = { cert: 'FHIR_TLS_CERT', key: 'FHIR_TLS_KEY', ca: 'FHIR_TLS_CA' },
): TlsMaterial | undefined {
  if (!tls.cert && !tls.ca) return undefined;
  const errors: string[] = [];
  const read = (file: string | undefined, name: string, marker: RegExp): string | undefined => {
    if (!file) return undefined;
    try {
      const text = readFileSync(file, 'utf8');
      if (!marker.test(text)) errors.push(`${name}: ${file} is not a PEM file of the expected kind`);
      return text;
    } catch (err) {
      errors.push(`${name}: ${file}: ${(err as Error).message}`);
      return undefined;
    }
  };
  const cert = read(tls.cert, names.cert, /-----BEGIN CERTIFICATE-----/);
  const key = read(tls.key, names.key, /-----BEGIN [A-Z ]*PRIVATE KEY-----/);
  const ca = read(tls.ca, names.ca, /-----BEGIN CERTIFICATE-----/);
  if (errors.length) throw new ConfigError(errors);
  return { ...(cert ? { cert, key } : {}), ...(ca ? { ca } : {}) };
}

/** An undici dispatcher (fetch's connection pool) with the TLS material, or undefined when there is none. */
export function createTlsDispatcher(material: TlsMaterial | undefined) {
  if (!material) return undefined;
  const Agent = agentClass();
  return new Agent({ connect: { ...material } });
}
