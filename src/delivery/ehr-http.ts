/**
 * The EHR's write path on node:http: the transactions, batches and single writes that delivery sends, one per
 * transaction of coalesced readings. fhir-kit-client (which keeps the reads: metadata, search, read) builds a WHATWG
 * Request and Headers for each request and goes through fetch's web streams: 820 µs of CPU per 21-entry transaction
 * against 200 µs here, serialising and parsing included (`npx tsx bench/ehr-write.ts`).
 *
 * A failure has the shape classify() (ehr-client.ts) reads from fhir-kit-client's: an answer other than 2xx, or a 2xx
 * whose body is not JSON, is an Error with `response: { status, data }` and `config.headers.get(name)`; no answer in
 * time is an AbortError (the request's signal); a network failure is the socket's own error. Keep-alive connections
 * are pooled per destination. A request that meets a pooled connection the EHR closed while it sat idle (a reset on a
 * reused connection) is sent once more: the writes the gateway sends are conditional, so even a copy that did reach the
 * EHR cannot create a second resource. A 307 or 308 to the same origin is followed once; to another, it is a refusal
 * that says where it points.
 */
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import type { TlsMaterial } from '../ehr-auth/tls.js';

/** A non-2xx answer (or an unreadable one), in the shape fhir-kit-client gives classify(). */
export class EhrAnswerError extends Error {
  readonly response: { status: number; data: unknown };
  readonly config: { headers: { get(name: string): string | null } };

  constructor(method: string, url: string, status: number, data: unknown, headers: IncomingHttpHeaders) {
    super(`HTTP ${status}: ${method} ${url}`);
    this.name = 'EhrAnswerError';
    this.response = { status, data };
    this.config = {
      headers: {
        get: (name) => {
          const v = headers[name.toLowerCase()];
          return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
        },
      },
    };
  }
}

/** Where a 307 or 308 answer to `url` points, when that is on the same origin. */
function redirectOf(err: unknown, url: string): string | undefined {
  if (!(err instanceof EhrAnswerError) || (err.response.status !== 307 && err.response.status !== 308)) return undefined;
  const location = err.config.headers.get('location');
  if (!location) return undefined;
  try {
    const to = new URL(location, url);
    return to.origin === new URL(url).origin && to.href !== url ? to.href : undefined;
  } catch {
    return undefined;
  }
}

export interface EhrHttpRequest {
  method: 'GET' | 'POST' | 'PUT';
  /** Relative to the base URL ('' for the base itself, `[base]/`: a transaction or batch). */
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export class EhrHttp {
  private readonly agent: http.Agent;
  private readonly base: string;
  private readonly send: typeof http.request;

  constructor(baseUrl: string, tls?: TlsMaterial) {
    this.base = baseUrl.replace(/\/+$/, '');
    const secure = new URL(this.base).protocol === 'https:';
    this.send = secure ? https.request : http.request;
    this.agent = secure ? new https.Agent({ keepAlive: true, ...tls }) : new http.Agent({ keepAlive: true });
  }

  /** The URL of a path; '' is the base with a trailing slash, where fhir-kit-client sent transactions and batches. */
  url(path: string): string {
    return `${this.base}/${path.replace(/^\/+/, '')}`;
  }

  /** Sends the request; resolves with the answer's JSON body ({} when it has none). */
  async request<T>(r: EhrHttpRequest): Promise<T> {
    const url = this.url(r.path);
    const body = r.body === undefined ? undefined : Buffer.from(typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
    const headers: Record<string, string | number> = { accept: 'application/fhir+json', ...r.headers };
    if (body) {
      headers['content-type'] ??= 'application/fhir+json';
      headers['content-length'] = body.length;
    }
    try {
      return await this.sent<T>(url, r, headers, body);
    } catch (err) {
      // A 307 or 308 to the same origin is followed once, with the same method and body, as fetch followed it. To another
      // origin it is not: the credential would go along (classify() says where it points).
      const to = redirectOf(err, url);
      if (!to) throw err;
      return this.sent<T>(to, r, headers, body);
    }
  }

  /** One request, sent once more on a fresh connection if a pooled one turns out to have been closed. */
  private async sent<T>(url: string, r: EhrHttpRequest, headers: Record<string, string | number>, body?: Buffer): Promise<T> {
    try {
      return await this.once<T>(url, r, headers, body);
    } catch (err) {
      if (!(err as { retryOnFreshSocket?: boolean }).retryOnFreshSocket) throw err;
      return this.once<T>(url, r, headers, body);
    }
  }

  private once<T>(url: string, r: EhrHttpRequest, headers: Record<string, string | number>, body?: Buffer): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = this.send(url, { method: r.method, headers, agent: this.agent, signal: r.signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks).toString('utf8');
          let data: unknown = {};
          if (text) {
            try {
              data = JSON.parse(text);
            } catch {
              return reject(new EhrAnswerError(r.method, url, status, text, res.headers));
            }
          }
          if (status < 200 || status > 299) return reject(new EhrAnswerError(r.method, url, status, data, res.headers));
          resolve(data as T);
        });
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        // A pooled connection the EHR closed while it sat idle.
        if (req.reusedSocket && err.code === 'ECONNRESET' && !r.signal?.aborted) Object.assign(err, { retryOnFreshSocket: true });
        reject(err);
      });
      req.end(body);
    });
  }

  /** Closes the pooled connections. */
  close(): void {
    this.agent.destroy();
  }
}
