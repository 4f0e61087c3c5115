/**
 * A sandbox EHR that demands SMART Backend Services, over real HTTP (or HTTPS with client certificates), with what the
 * tests need to watch it: every token request and the tokens it issued, every FHIR request, and faults injected in
 * front of the token endpoint or the FHIR routes.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { decodeProtectedHeader } from 'jose';
import type { Bundle, Resource } from 'fhir/r4';
import type { SandboxAuthOptions } from '../../src/sandbox/auth.js';
import { createSandboxEhr, type SandboxEhr } from '../../src/sandbox/sandbox.js';

export interface InjectedAnswer {
  status: number;
  body?: unknown;
  /** Only for FHIR requests that match. */
  match?: (req: express.Request) => boolean;
}

export interface AuthEhr {
  /** The FHIR base URL. */
  url: string;
  tokenUrl: string;
  sandbox: SandboxEhr;
  /** Every POST to the token endpoint (answered by the sandbox or by a fault). */
  tokenRequests: number;
  /** Every access token the sandbox issued. */
  issued: string[];
  /** How each token request authenticated: 'basic', 'post', or the kid of its client assertion. */
  tokenAuth: string[];
  /** The token endpoint's refusals (status and OAuth2 error). */
  tokenRefusals: { status: number; error?: string; description?: string }[];
  /** Answers given instead of the token endpoint's, one per request, in order. */
  tokenFaults: InjectedAnswer[];
  /** Answers given instead of the FHIR engine's, one per matching request. */
  fhirFaults: InjectedAnswer[];
  /** FHIR requests (not discovery nor tokens): method, path, and the bearer token they carried. */
  requests: { at?: number; method: string; path: string; token?: string }[];
  search<T extends Resource>(type: string, params?: Record<string, string>): Promise<T[]>;
  stop(): Promise<void>;
}

export interface TlsServerOptions {
  key: string;
  cert: string;
  ca: string;
}

export async function startAuthEhr(auth: Partial<SandboxAuthOptions> = {}, tls?: TlsServerOptions): Promise<AuthEhr> {
  const sandbox = await createSandboxEhr({ auth: { clients: [], tokenLifetimeS: 300, ...auth } });
  const state = {
    tokenRequests: 0,
    issued: [] as string[],
    tokenAuth: [] as string[],
    tokenRefusals: [] as AuthEhr['tokenRefusals'],
    tokenFaults: [] as InjectedAnswer[],
    fhirFaults: [] as InjectedAnswer[],
    requests: [] as AuthEhr['requests'],
  };
  const app = express();
  app.use('/fhir', express.json({ type: ['application/json', 'application/fhir+json'], limit: '20mb' }));
  app.use('/fhir/auth/token', express.urlencoded({ extended: false }));
  app.use('/fhir', (req, res, next) => {
    if (req.path === '/auth/token') {
      state.tokenRequests++;
      const fault = state.tokenFaults.shift();
      if (fault)
        return void res.status(fault.status).json(fault.body ?? { error: 'invalid_client', error_description: 'injected refusal' });
      const form = req.body as Record<string, string>;
      state.tokenAuth.push(
        form.client_assertion
          ? String(decodeProtectedHeader(form.client_assertion).kid)
          : /^Basic /.test(req.get('authorization') ?? '')
            ? 'basic'
            : 'post',
      );
      const json = res.json.bind(res);
      res.json = (body: { access_token?: string; error?: string; error_description?: string }) => {
        if (body?.access_token) state.issued.push(body.access_token);
        else state.tokenRefusals.push({ status: res.statusCode, error: body?.error, description: body?.error_description });
        return json(body);
      };
      return next();
    }
    if (req.path === '/.well-known/smart-configuration' || req.path === '/metadata') return next();
    state.requests.push({
      at: Date.now(),
      method: req.method,
      path: req.path,
      token: /^Bearer (.+)$/.exec(req.get('authorization') ?? '')?.[1],
    });
    const i = state.fhirFaults.findIndex((f) => !f.match || f.match(req));
    if (i >= 0) {
      const [f] = state.fhirFaults.splice(i, 1);
      return void res
        .status(f.status)
        .type('application/fhir+json')
        .send(JSON.stringify(f.body ?? { resourceType: 'OperationOutcome', issue: [] }));
    }
    next();
  });
  app.use('/fhir', sandbox.router);
  const server: Server = tls
    ? createHttpsServer({ key: tls.key, cert: tls.cert, ca: tls.ca, requestCert: true, rejectUnauthorized: true }, app)
    : (await import('node:http')).createServer(app);
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  const ehr: AuthEhr = {
    url,
    tokenUrl: `${url}/auth/token`,
    sandbox,
    get tokenRequests() {
      return state.tokenRequests;
    },
    set tokenRequests(n: number) {
      state.tokenRequests = n;
    },
    issued: state.issued,
    tokenAuth: state.tokenAuth,
    tokenRefusals: state.tokenRefusals,
    tokenFaults: state.tokenFaults,
    fhirFaults: state.fhirFaults,
    requests: state.requests,
    /** Reads the repository directly (the FHIR routes need a token). */
    async search<T extends Resource>(type: string, params: Record<string, string> = {}): Promise<T[]> {
      const b = (await sandbox.repo.search({ resourceType: type as never, filters: [] })) as Bundle;
      void params;
      return (b.entry ?? []).map((e) => e.resource as T);
    },
    stop: () =>
      new Promise((res) => {
        server.closeAllConnections?.();
        server.close(() => res());
      }),
  };
  return ehr;
}

/** A TCP port that was free a moment ago (for a gateway restarted on the same JWKS URL). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => res(port));
    });
  });
}

/** A folder for a test's files. */
export const tempDir = (prefix = 'gw-ehr-'): string => mkdtempSync(join(tmpdir(), prefix));

/** Writes a new private key (PKCS#8 PEM) and returns its path. */
export function writeKey(dir: string, name: string, kind: 'rsa' | 'ec' = 'rsa'): string {
  const { privateKey } =
    kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const file = join(dir, name);
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  return file;
}

export interface Pki {
  dir: string;
  ca: string;
  serverKey: string;
  serverCert: string;
  clientKey: string;
  clientCert: string;
  /** A client certificate signed by another CA (refused by the server). */
  strangerKey: string;
  strangerCert: string;
}

/** A private CA, a server certificate for 127.0.0.1 and client certificates, made with the openssl command line. */
export function makePki(): Pki {
  const dir = tempDir('gw-pki-');
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ca = (name: string) => {
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
    );
  };
  const leaf = (name: string, issuer: string, ext?: string) => {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    if (ext) writeFileSync(join(dir, `${name}.ext`), ext);
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${issuer}.crt`,
      '-CAkey',
      `${issuer}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      ...(ext ? ['-extfile', `${name}.ext`] : []),
    );
  };
  ca('test-ca');
  ca('other-ca');
  leaf('server', 'test-ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'test-ca', 'extendedKeyUsage=clientAuth\n');
  leaf('stranger', 'other-ca', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string) => join(dir, f);
  return {
    dir,
    ca: p('test-ca.crt'),
    serverKey: p('server.key'),
    serverCert: p('server.crt'),
    clientKey: p('client.key'),
    clientCert: p('client.crt'),
    strangerKey: p('stranger.key'),
    strangerCert: p('stranger.crt'),
  };
}

/** A measurements payload of one reading. */
export const reading = (deviceId: string, value = 96, patientId = 'MRN-AUTH') => ({
  deviceId,
  patientId,
  timestamp: '2026-11-23T11:00:00Z',
  measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value, unit: '%' }],
});

/** The scopes delivery needs (SMART v2): patients looked up and created, devices and observations written. */
export const DELIVERY_SCOPES_V2 = 'system/Patient.crus system/Device.crus system/Observation.crus system/AuditEvent.c';
/** The same in SMART v1. */
export const DELIVERY_SCOPES_V1 =
  'system/Patient.read system/Patient.write system/Device.read system/Device.write system/Observation.read system/Observation.write system/AuditEvent.write';
