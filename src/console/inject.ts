/**
 * The console's one way to read and change anything: an in-process request to the gateway's own API, made as the
 * signed-in principal. The request goes through the same express app, the same route table, the same role and
 * ownership checks, the same rate limit and the same audit as a request with the user's key: the console has no
 * access rules of its own to drift from the API's. Nothing leaves the process (no socket, no key kept anywhere).
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Principal } from '../core/contract.js';

export type AppHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface ApiAnswer<T = any> {
  status: number;
  headers: Record<string, string>;
  /** Parsed JSON when the answer is JSON; the text otherwise. */
  body: T;
  ok: boolean;
}

export interface ApiRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  principal: Principal;
  /** The browser's address, recorded by the audit trail as the caller's. */
  address?: string;
  body?: unknown;
  contentType?: string;
}

export function callApi<T = any>(app: AppHandler, r: ApiRequest): Promise<ApiAnswer<T>> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    Object.defineProperty(socket, 'remoteAddress', { value: r.address ?? '127.0.0.1' });
    const req = new IncomingMessage(socket);
    req.method = r.method;
    req.url = r.path;
    const headers: Record<string, string> = { host: 'console.internal', accept: 'application/json' };
    let payload: Buffer | undefined;
    if (r.body !== undefined) {
      payload = Buffer.from(typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
      headers['content-type'] = r.contentType ?? 'application/json';
      headers['content-length'] = String(payload.length);
    }
    req.headers = headers;
    (req as IncomingMessage & { principal?: Principal }).principal = r.principal;
    if (payload) req.push(payload);
    req.push(null);

    const res = new ServerResponse(req);
    const chunks: Buffer[] = [];
    const add = (chunk: unknown, encoding?: unknown) => {
      if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
      chunks.push(
        Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), (typeof encoding === 'string' ? encoding : 'utf8') as BufferEncoding),
      );
    };
    res.write = ((chunk: unknown, encoding?: unknown) => {
      add(chunk, encoding);
      return true;
    }) as typeof res.write;
    res.end = ((chunk?: unknown, encoding?: unknown) => {
      add(chunk, encoding);
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.getHeaders())) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : String(v);
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      if (/json/.test(out['content-type'] ?? '') && text) {
        try {
          body = JSON.parse(text);
        } catch {
          /* left as text */
        }
      }
      resolve({ status: res.statusCode, headers: out, body: body as T, ok: res.statusCode < 400 });
      res.emit('finish');
      return res;
    }) as typeof res.end;
    try {
      app(req, res);
    } catch (err) {
      reject(err);
    }
  });
}

/** The one-line reason of a refusal (the OperationOutcome's diagnostics), for showing to the user. */
export function reasonOf(a: ApiAnswer): string {
  const issues = (a.body as { issue?: { diagnostics?: string; details?: { text?: string } }[] } | undefined)?.issue;
  if (Array.isArray(issues) && issues.length)
    return issues
      .map((i) => i.diagnostics ?? i.details?.text ?? '')
      .filter(Boolean)
      .join('; ');
  return `HTTP ${a.status}`;
}
