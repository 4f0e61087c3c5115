/**
 * The body of a change posted to the console: application/x-www-form-urlencoded, or multipart/form-data for a file
 * upload (the bulk-registration CSV). Read whole, within a size limit, so that the CSRF token can be checked first.
 */
import type { Request } from 'express';
import { badRequest, GatewayError, issue, outcome } from '../core/errors.js';

export async function readBody(req: Request, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new GatewayError(413, outcome([issue('too-costly', `the form is larger than ${limit} bytes`)]));
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The fields of a form. A file field's value is the file's text (UTF-8). */
export function parseForm(contentType: string | undefined, body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  const type = (contentType ?? '').toLowerCase();
  if (type.startsWith('multipart/form-data')) {
    const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType ?? '');
    const boundary = m?.[1] ?? m?.[2];
    if (!boundary) throw badRequest('multipart/form-data without a boundary');
    const delimiter = Buffer.from(`--${boundary}`);
    let at = body.indexOf(delimiter);
    while (at >= 0) {
      const start = at + delimiter.length;
      if (body.subarray(start, start + 2).toString() === '--') break;
      const next = body.indexOf(delimiter, start);
      if (next < 0) break;
      const part = body.subarray(start + 2, next - 2); // after CRLF, before CRLF
      const split = part.indexOf('\r\n\r\n');
      if (split >= 0) {
        const head = part.subarray(0, split).toString('utf8');
        const name = /name="([^"]*)"/i.exec(head)?.[1];
        if (name !== undefined) out.set(name, part.subarray(split + 4).toString('utf8'));
      }
      at = next;
    }
    return out;
  }
  for (const [k, v] of new URLSearchParams(body.toString('utf8'))) out.set(k, v);
  return out;
}
