/**
 * Mutual TLS to the EHR: a connection pool (an undici Agent, the dispatcher of node's fetch, which fhir-kit-client
 * uses) that presents the gateway's client certificate and checks the server against a private CA when one is given.
 *
 * Node 20 bundles undici but does not export its classes: the Agent class is taken from the global dispatcher, which
 * undici registers under Symbol.for('undici.globalDispatcher.1') (the key undici itself reads so that separate copies
 * of it share one dispatcher). It is the Agent fetch already uses; only its TLS options differ.
 */
import { readFileSync } from 'node:fs';
import type { EhrTlsConfig } from '../config/ehr-auth.js';
import { ConfigError } from '../config/schema.js';

const GLOBAL_DISPATCHER = Symbol.for('undici.globalDispatcher.1');

type AgentClass = new (options: { connect: Record<string, unknown> }) => object & { close(): Promise<void> };

function agentClass(): AgentClass {
  // Building a Request makes undici create its global dispatcher if it has not yet.
  if (!(globalThis as Record<symbol, unknown>)[GLOBAL_DISPATCHER]) new Request('http://localhost/');
  const dispatcher = (globalThis as Record<symbol, unknown>)[GLOBAL_DISPATCHER] as { constructor?: AgentClass } | undefined;
  if (typeof dispatcher?.constructor !== 'function') throw new Error("this Node.js does not expose fetch's connection pool");
  return dispatcher.constructor;
}

/** An undici dispatcher with the client certificate and CA, or undefined when no TLS setting is given. */
export function createTlsDispatcher(tls: EhrTlsConfig, names = { cert: 'FHIR_TLS_CERT', key: 'FHIR_TLS_KEY', ca: 'FHIR_TLS_CA' }) {
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
  const Agent = agentClass();
  return new Agent({ connect: { ...(cert ? { cert, key } : {}), ...(ca ? { ca } : {}) } });
}
