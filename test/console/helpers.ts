/** Shared steps of the console tests: keys made through the API, sign-in over HTTP, the CSRF token of a page. */
import assert from 'node:assert/strict';
import { postJson } from '../helpers/harness.js';

export const ADMIN = 'console-test-admin-key-0123456789';

export async function vendorKey(url: string, id: string): Promise<string> {
  const v = await postJson(`${url}/api/vendors`, { id }, { authorization: `Bearer ${ADMIN}` });
  assert.ok(v.status === 201 || v.status === 409, JSON.stringify(v.body));
  const k = await postJson(`${url}/api/vendors/${id}/credentials`, {}, { authorization: `Bearer ${ADMIN}` });
  assert.equal(k.status, 201, JSON.stringify(k.body));
  return k.body.key as string;
}

export async function operatorKey(url: string, name = 'ops'): Promise<{ key: string; keyId: string }> {
  const k = await postJson(`${url}/api/operators/credentials`, { name }, { authorization: `Bearer ${ADMIN}` });
  assert.equal(k.status, 201, JSON.stringify(k.body));
  return { key: k.body.key, keyId: k.body.keyId };
}

/** Signs in over HTTP; returns the raw Set-Cookie header and the "name=value" pair to send back. */
export async function signIn(url: string, key: string): Promise<{ status: number; setCookie: string; cookie: string }> {
  const r = await fetch(`${url}/console/login`, { method: 'POST', body: new URLSearchParams({ key }), redirect: 'manual' });
  const setCookie = r.headers.get('set-cookie') ?? '';
  return { status: r.status, setCookie, cookie: setCookie.split(';')[0] };
}

export async function get(url: string, cookie: string): Promise<{ status: number; text: string; location: string | null }> {
  const r = await fetch(url, { headers: { cookie }, redirect: 'manual' });
  return { status: r.status, text: await r.text(), location: r.headers.get('location') };
}

export const csrfOf = (html: string): string => {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  assert.ok(m, 'the page carries a CSRF token');
  return m[1];
};

export async function post(
  url: string,
  cookie: string,
  form: Record<string, string>,
): Promise<{ status: number; text: string; location: string | null }> {
  const r = await fetch(url, { method: 'POST', headers: { cookie }, body: new URLSearchParams(form), redirect: 'manual' });
  return { status: r.status, text: await r.text(), location: r.headers.get('location') };
}
