/**
 * What a console page handler gets: the signed-in principal, the session's CSRF token, the parsed form of a change,
 * and `api`, which calls the gateway's own API as that principal (inject.ts).
 */
import type { Request, Response } from 'express';
import { clientAddress } from '../http/client.js';
import type { Principal } from '../core/contract.js';
import { type ApiAnswer, type AppHandler, callApi } from './inject.js';
import { type Html, layout } from './html.js';

export interface Ctx {
  req: Request;
  res: Response;
  principal: Principal;
  csrf: string;
  /** Fields of a form posted to the console (url-encoded or multipart). */
  form: Map<string, string>;
  /** Is this an htmx request (a fragment is wanted, not a whole page)? */
  partial: boolean;
  api<T = any>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, contentType?: string): Promise<ApiAnswer<T>>;
  page(title: string, current: string, body: Html, status?: number): void;
  fragment(body: Html, status?: number): void;
}

export function makeCtx(req: Request, res: Response, principal: Principal, csrf: string, form: Map<string, string>, app: AppHandler): Ctx {
  return {
    req,
    res,
    principal,
    csrf,
    form,
    partial: req.headers['hx-request'] === 'true',
    api: (method, path, body, contentType) => callApi(app, { method, path, principal, address: clientAddress(req), body, contentType }),
    page(title, current, body, status = 200) {
      res.status(status).type('html').send(layout({ title, principal, csrf, current, body }));
    },
    fragment(body, status = 200) {
      res.status(status).type('html').send(body.text);
    },
  };
}

export type PageHandler = (c: Ctx) => Promise<void>;

/** A query parameter as one trimmed string ('' when absent). */
export const q = (req: Request, k: string): string => {
  const v = req.query[k];
  return typeof v === 'string' ? v.trim() : '';
};

/** A query string of the non-empty entries. */
export const qs = (params: Record<string, string | undefined>): string => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
};

export const enc = encodeURIComponent;
