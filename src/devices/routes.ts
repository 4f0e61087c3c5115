/**
 * The route table of device management, vendors, operators' keys and the audit trail: each route names the roles
 * that may call it (admin always may); ownership (a vendor's own devices) is checked by DeviceService.assertMay.
 *
 *   route                                              roles (besides admin)
 *   POST   /api/devices                                vendor (own)
 *   POST   /api/devices/bulk                           vendor (own)
 *   GET    /api/devices                                operator, vendor (own)
 *   GET    /api/devices/me/config                      device
 *   GET    /api/devices/:id                            operator, vendor (own)
 *   POST   /api/devices/:id/(activate|suspend|decommission)  operator, vendor (own)
 *   PUT    /api/devices/:id/assignment                 operator
 *   DELETE /api/devices/:id/assignment                 operator
 *   GET    /api/devices/:id/held                       operator (held readings hold PHI: not for vendors)
 *   GET    /api/devices/:id/decommission-report        operator, vendor (own)
 *   POST   /api/devices/:id/credentials                vendor (own)
 *   POST   /api/devices/:id/credentials/:keyId/rotate  vendor (own)
 *   DELETE /api/devices/:id/credentials/:keyId         vendor (own)
 *   GET    /api/devices/:id/credentials                operator, vendor (own)
 *   PUT    /api/devices/:id/config                     operator, vendor (own)
 *   GET    /api/devices/:id/config                     operator, vendor (own)
 *   POST   /api/vendors                                —
 *   GET    /api/vendors                                operator
 *   POST   /api/vendors/:id/credentials                —
 *   POST   /api/vendors/:id/credentials/:keyId/rotate  —, vendor (own)
 *   DELETE /api/vendors/:id/credentials/:keyId         —
 *   POST   /api/operators/credentials                  —
 *   POST   /api/operators/credentials/:keyId/rotate    —
 *   DELETE /api/operators/credentials/:keyId           —
 *   GET    /api/audit                                  operator
 */
import express, { Router, type Request, type RequestHandler } from 'express';
import { clientAddress } from '../http/client.js';
import type { Principal, RoleName } from '../core/contract.js';
import type { AccessControl } from '../access/auth.js';
import { badRequest, forbidden, notFound, GatewayError, outcome, issue } from '../core/errors.js';
import { requireJson } from '../http/errors.js';
import { page } from '../http/paging.js';
import type { AuditTrail } from '../audit/store.js';
import { DEVICE_ACTIONS, type DeviceAction } from './model.js';
import type { DeviceService } from './service.js';
import { who, type Actor } from './keys.js';
import { parseCsv } from './csv.js';

const OPERATOR_NAME = /^[A-Za-z0-9._@-]{1,64}$/;

type Method = 'get' | 'post' | 'put' | 'delete';
type Handler = (req: Request, actor: Actor) => Promise<{ status?: number; body?: unknown }>;

export interface RouteSpec {
  method: Method;
  path: string;
  roles: RoleName[];
  handler: Handler;
  body?: 'json' | 'json-or-csv';
}

const actorOf = (req: Request): Actor => ({ principal: req.principal as Principal, address: clientAddress(req) });
const param = (req: Request, k: string) => String(req.params[k]);

export function deviceRoutes(svc: DeviceService, audit: AuditTrail): RouteSpec[] {
  const { keys, vendors } = svc;
  const routes: RouteSpec[] = [
    // ---- devices ---------------------------------------------------------------------------------------------------
    {
      method: 'post',
      path: '/api/devices',
      roles: ['vendor'],
      body: 'json',
      handler: async (req, a) => ({ status: 201, body: svc.view(await svc.register(req.body, a), undefined, a.principal) }),
    },
    {
      method: 'post',
      path: '/api/devices/bulk',
      roles: ['vendor'],
      body: 'json-or-csv',
      handler: async (req, a) => {
        let rows: unknown[];
        if (Buffer.isBuffer(req.body)) req.body = req.body.toString('utf8');
        if (typeof req.body === 'string') {
          const parsed = parseCsv(req.body);
          if (parsed.error) throw badRequest(parsed.error);
          rows = parsed.rows.map(csvRowToDevice);
        } else if (Array.isArray(req.body)) {
          rows = req.body;
        } else if (req.body && Array.isArray((req.body as { devices?: unknown }).devices)) {
          rows = (req.body as { devices: unknown[] }).devices;
        } else {
          throw badRequest('send a JSON array of devices, { "devices": [...] }, or text/csv with a header row');
        }
        if (rows.length === 0) throw badRequest('the batch is empty');
        if (rows.length > 10_000) throw badRequest('at most 10000 devices per batch');
        const results = await svc.registerBulk(rows, a);
        const created = results.filter((r) => r.status === 201).length;
        return { status: 200, body: { created, failed: results.length - created, results } };
      },
    },
    {
      method: 'get',
      path: '/api/devices',
      roles: ['operator', 'vendor'],
      handler: async (req, a) => ({ body: await svc.list(req.query as Record<string, unknown>, a.principal) }),
    },
    {
      method: 'get',
      path: '/api/devices/me/config',
      roles: ['device'],
      handler: async (_req, a) => {
        if (a.principal.role !== 'device') throw forbidden('only a device credential has a "me"');
        const r = await svc.mustGet(a.principal.id, a.principal);
        const doc = await svc.registry.fetchedConfig(r.id, who(a.principal));
        if (!doc) throw notFound(`device '${r.id}' has no configuration`);
        return { body: { deviceId: r.id, ...doc } };
      },
    },
    {
      method: 'get',
      path: '/api/devices/:id',
      roles: ['operator', 'vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        const tel = await svc.registry.telemetry([r.id]);
        return { body: { ...svc.view(r, tel.get(r.id), a.principal), heldReadings: await svc.registry.heldCount(r.id) } };
      },
    },
    ...DEVICE_ACTIONS.map(
      (action): RouteSpec => ({
        method: 'post',
        path: `/api/devices/:id/${action}`,
        roles: ['operator', 'vendor'],
        handler: async (req, a) => {
          const res = await svc.transition(param(req, 'id'), action as DeviceAction, a);
          // The device's real telemetry (the view would otherwise show 0 messages for a device that has sent data).
          const tel = await svc.registry.telemetry([res.record.id]);
          return {
            body: {
              ...svc.view(res.record, tel.get(res.record.id), a.principal),
              fhirJobId: res.jobId ?? null,
              ...(res.released !== undefined ? { releasedReadings: res.released } : {}),
              ...(res.report ? { decommissionReport: res.report } : {}),
            },
          };
        },
      }),
    ),
    {
      method: 'put',
      path: '/api/devices/:id/assignment',
      roles: ['operator'],
      body: 'json',
      handler: async (req, a) => {
        const r = await svc.assign(param(req, 'id'), (req.body ?? {}) as Record<string, unknown>, a);
        return { body: { ...r.record, fhirJobId: r.jobId ?? null } };
      },
    },
    {
      method: 'delete',
      path: '/api/devices/:id/assignment',
      roles: ['operator'],
      handler: async (req, a) => {
        const r = await svc.assign(param(req, 'id'), null, a);
        return { body: { ...r.record, fhirJobId: r.jobId ?? null } };
      },
    },
    {
      method: 'get',
      path: '/api/devices/:id/held',
      roles: ['operator'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        const { offset, limit } = page(req.query as Record<string, unknown>);
        const total = await svc.registry.heldCount(r.id);
        return { body: { deviceId: r.id, state: r.state, total, readings: await svc.registry.listHeld(r.id, offset, limit) } };
      },
    },
    {
      method: 'get',
      path: '/api/devices/:id/decommission-report',
      roles: ['operator', 'vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        const rep = await svc.registry.getReport(r.id);
        if (!rep) throw notFound(`device '${r.id}' has not been decommissioned`);
        return { body: rep };
      },
    },
    // ---- device credentials ------------------------------------------------------------------------------------------
    {
      method: 'post',
      path: '/api/devices/:id/credentials',
      roles: ['vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        const { credential, key } = await keys.issueDeviceKey(r, a);
        const note = 'the key is shown only now; the gateway keeps only a hash of it';
        return { status: 201, body: { keyId: credential.keyId, key, role: 'device', deviceId: credential.owner, note } };
      },
    },
    {
      method: 'get',
      path: '/api/devices/:id/credentials',
      roles: ['operator', 'vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        return { body: await keys.list('device', r.id) };
      },
    },
    {
      method: 'post',
      path: '/api/devices/:id/credentials/:keyId/rotate',
      roles: ['vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        return { status: 201, body: await keys.rotateKey(param(req, 'keyId'), 'device', r.id, a) };
      },
    },
    {
      method: 'delete',
      path: '/api/devices/:id/credentials/:keyId',
      roles: ['vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        await keys.revokeKey(param(req, 'keyId'), 'device', r.id, a);
        return { status: 204 };
      },
    },
    // ---- device configuration ----------------------------------------------------------------------------------------
    {
      method: 'put',
      path: '/api/devices/:id/config',
      roles: ['operator', 'vendor'],
      body: 'json',
      handler: async (req, a) => ({ body: await svc.setConfig(param(req, 'id'), req.body, a) }),
    },
    {
      method: 'get',
      path: '/api/devices/:id/config',
      roles: ['operator', 'vendor'],
      handler: async (req, a) => {
        const r = await svc.mustGet(param(req, 'id'), a.principal);
        const doc = await svc.registry.getConfig(r.id);
        if (!doc) throw notFound(`device '${r.id}' has no configuration`);
        return { body: { deviceId: r.id, ...doc } };
      },
    },
    // ---- vendors -----------------------------------------------------------------------------------------------------
    {
      method: 'post',
      path: '/api/vendors',
      roles: [],
      body: 'json',
      handler: async (req, a) => ({ status: 201, body: await vendors.registerVendor(req.body, a) }),
    },
    {
      method: 'get',
      path: '/api/vendors',
      roles: ['operator'],
      handler: async () => ({ body: await vendors.listVendors() }),
    },
    {
      method: 'post',
      path: '/api/vendors/:id/credentials',
      roles: [],
      handler: async (req, a) => {
        const { credential, key, signingSecret } = await keys.issueKey('vendor', param(req, 'id'), a);
        return {
          status: 201,
          body: { keyId: credential.keyId, key, ...(signingSecret ? { signingSecret } : {}), role: 'vendor', vendorId: credential.owner },
        };
      },
    },
    {
      method: 'post',
      path: '/api/vendors/:id/credentials/:keyId/rotate',
      roles: ['vendor'],
      handler: async (req, a) => {
        if (a.principal.role === 'vendor' && a.principal.vendorId !== param(req, 'id')) {
          throw forbidden('a vendor may rotate its own keys only');
        }
        return { status: 201, body: await keys.rotateKey(param(req, 'keyId'), 'vendor', param(req, 'id'), a) };
      },
    },
    {
      method: 'delete',
      path: '/api/vendors/:id/credentials/:keyId',
      roles: [],
      handler: async (req, a) => {
        await keys.revokeKey(param(req, 'keyId'), 'vendor', param(req, 'id'), a);
        return { status: 204 };
      },
    },
    // ---- operators' keys ---------------------------------------------------------------------------------------------
    {
      method: 'post',
      path: '/api/operators/credentials',
      roles: [],
      body: 'json',
      handler: async (req, a) => {
        const label = (req.body as { name?: unknown } | undefined)?.name;
        if (label !== undefined && !(typeof label === 'string' && OPERATOR_NAME.test(label))) {
          throw badRequest(`name must be 1 to 64 letters, digits, '.', '_', '@' or '-' (it names the operator in the audit trail)`, [
            'name',
          ]);
        }
        const owner = label ?? 'operator';
        const { credential, key } = await keys.issueKey('operator', owner, a);
        return { status: 201, body: { keyId: credential.keyId, key, role: 'operator', name: owner } };
      },
    },
    {
      method: 'post',
      path: '/api/operators/credentials/:keyId/rotate',
      roles: [],
      handler: async (req, a) => {
        const c = await keys.operatorCredential(param(req, 'keyId'));
        return { status: 201, body: await keys.rotateKey(c.keyId, 'operator', c.owner, a) };
      },
    },
    {
      method: 'delete',
      path: '/api/operators/credentials/:keyId',
      roles: [],
      handler: async (req, a) => {
        const c = await keys.operatorCredential(param(req, 'keyId'));
        await keys.revokeKey(c.keyId, 'operator', c.owner, a);
        return { status: 204 };
      },
    },
    // ---- audit trail -------------------------------------------------------------------------------------------------
    {
      method: 'get',
      path: '/api/audit',
      roles: ['operator'],
      handler: async (req) => {
        const q = req.query as Record<string, string | undefined>;
        for (const k of ['since', 'until'] as const) {
          if (q[k] && Number.isNaN(Date.parse(q[k]!))) throw badRequest(`${k} must be an ISO 8601 date-time`);
        }
        if (q.limit !== undefined && !/^\d+$/.test(q.limit)) throw badRequest('limit must be a whole number', ['limit']);
        const events = await audit.query({
          action: q.action,
          kind: q.kind ?? q.subtype,
          agent: q.agent,
          entity: q.entity,
          outcome: q.outcome,
          since: q.since ?? q.date,
          until: q.until,
          limit: q.limit ? Number(q.limit) : undefined,
        });
        const entry = events.map((resource) => ({ resource }));
        return { body: { resourceType: 'Bundle', type: 'searchset', total: events.length, entry } };
      },
    },
  ];
  return routes;
}

/** CSV columns (header names) mapped onto a registration body. */
function csvRowToDevice(row: Record<string, string>): Record<string, unknown> {
  const b: Record<string, unknown> = {};
  const identifiers: Record<string, string> = {};
  for (const [k, v] of Object.entries(row)) {
    if (v === '') continue;
    if (['serialNumber', 'eui64', 'udi'].includes(k)) identifiers[k] = v;
    else b[k] = v;
  }
  b.identifiers = identifiers;
  return b;
}

export function buildRouter(routes: RouteSpec[], access: AccessControl, maxBodyBytes: number): Router {
  const router = Router();
  const json = express.json({ limit: maxBodyBytes, type: ['application/json', 'application/*+json'] });
  const csv = express.text({ limit: maxBodyBytes, type: ['text/csv', 'text/plain'] });
  // requireJson, except that an empty body (or one without a Content-Type) passes: these routes accept "no body"
  // (POST /api/operators/credentials without a name, PUT .../assignment without fields), where requireJson says 415.
  const needJson: RequestHandler = (req, res, next) => {
    if (req.headers['content-length'] === '0' || !req.headers['content-type']) return next();
    requireJson(req, res, next);
  };
  const needJsonOrCsv: RequestHandler = (req, _res, next) => {
    if (!req.is(['application/json', 'application/*+json', 'text/csv', 'text/plain'])) {
      return next(new GatewayError(415, outcome([issue('not-supported', 'the body must be JSON or text/csv')])));
    }
    next();
  };
  for (const r of routes) {
    const parsers = r.body === 'json' ? [needJson, json] : r.body === 'json-or-csv' ? [needJsonOrCsv, json, csv] : [];
    router[r.method](r.path, access.require(...r.roles), ...parsers, async (req, res) => {
      const out = await r.handler(req, actorOf(req));
      res.status(out.status ?? 200);
      if (out.body === undefined) return void res.end();
      res.json(out.body);
    });
  }
  return router;
}
