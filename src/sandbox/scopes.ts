/**
 * SMART scopes, as the sandbox EHR enforces them on its FHIR routes. Both syntaxes (SMART App Launch):
 *
 *   v1  system/Observation.write, system/Patient.read, system/*.*   (read = search and read; write = create, update, delete)
 *   v2  system/Observation.c, system/Patient.rs, system/*.cruds      (c create, r read, u update, d delete, s search)
 *
 * Only `system/` scopes (backend services) grant anything; a v2 scope narrowed by a query (`?category=…`) is not
 * supported and grants nothing, so that the sandbox never allows more than was asked.
 */

export type Permission = 'c' | 'r' | 'u' | 'd' | 's';
const ALL: readonly Permission[] = ['c', 'r', 'u', 'd', 's'];

export interface Scope {
  /** A resource type, or '*'. */
  type: string;
  perms: ReadonlySet<Permission>;
}

const SCOPE = /^system\/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|[cruds]+)$/;

/** The scope's grant, or undefined when it grants nothing here (another context, a query, a malformed scope). */
export function parseScope(text: string): Scope | undefined {
  const m = SCOPE.exec(text);
  if (!m) return undefined;
  const [, type, p] = m;
  if (p === 'read') return { type, perms: new Set<Permission>(['r', 's']) };
  if (p === 'write') return { type, perms: new Set<Permission>(['c', 'u', 'd']) };
  if (p === '*') return { type, perms: new Set(ALL) };
  const letters = [...p] as Permission[];
  if (new Set(letters).size !== letters.length) return undefined;
  return { type, perms: new Set(letters) };
}

/** Does `granted` allow `perm` on `type`? */
export const allows = (granted: Scope, type: string, perm: Permission): boolean =>
  (granted.type === '*' || granted.type === type) && granted.perms.has(perm);

/** Is the requested scope within an allowed one (its type and every permission)? */
export function within(requested: string, allowed: readonly string[]): boolean {
  const r = parseScope(requested);
  if (!r) return allowed.includes(requested);
  return allowed.some((a) => {
    const g = parseScope(a);
    return !!g && [...r.perms].every((p) => allows(g, r.type, p)) && (g.type === '*' || r.type !== '*');
  });
}

export const PERMISSION_NAMES: Record<Permission, string> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };

/** What one request does: the resource type ('*' for the whole server) and the interaction. */
export interface Access {
  type: string;
  perm: Permission;
  /** Where in a Bundle (entry index), for the message. */
  entry?: number;
}

/** The access a request needs: one for a plain interaction, one per entry for a transaction or batch Bundle. */
export function accessOf(method: string, path: string, body: unknown): Access[] {
  const [pathname] = path.split('?');
  const parts = pathname.split('/').filter(Boolean);
  if (parts.length === 0) {
    const bundle = body as { resourceType?: string; type?: string; entry?: { request?: { method?: string; url?: string } }[] } | undefined;
    if (method === 'POST' && bundle?.resourceType === 'Bundle' && (bundle.type === 'transaction' || bundle.type === 'batch'))
      return (bundle.entry ?? []).flatMap((e, i) => {
        const url = e.request?.url ?? '';
        return accessOf(e.request?.method ?? 'POST', url.startsWith('/') ? url : `/${url}`, undefined).map((a) => ({ ...a, entry: i }));
      });
    return [{ type: '*', perm: method === 'GET' ? 's' : 'c' }];
  }
  const [type, id] = parts;
  const conditional = path.includes('?');
  switch (method) {
    case 'GET':
    case 'HEAD':
      return [{ type, perm: id && id !== '_search' ? 'r' : 's' }];
    case 'POST':
      return [{ type, perm: id === '_search' ? 's' : 'c' }];
    case 'PUT':
    case 'PATCH':
      return [{ type, perm: id || conditional ? 'u' : 'c' }];
    case 'DELETE':
      return [{ type, perm: 'd' }];
    default:
      return [{ type, perm: 'r' }];
  }
}
