/**
 * The adapter registration API: vendors register declarative mappings (iomt-fhir format) over HTTP, with sample
 * payloads that must translate into valid resources before the adapter goes live. Registered adapters are stored in
 * Redis (registration-store.ts) so every gateway instance serves them: each instance loads them at start-up and follows
 * changes through Redis pub/sub, with polling of a change counter as a safety net for missed messages.
 *
 *   GET    /api/adapters                 operator, vendor    every adapter: source, vendor, version, enabled
 *   POST   /api/adapters                 vendor (own)        register, or add a version (201 | 422 | 409)
 *   GET    /api/adapters/:id             operator, vendor    one adapter; registered ones with their versions
 *   POST   /api/adapters/:id/$translate  operator, vendor    dry run: the transaction Bundle(s) that would be sent
 *   POST   /api/adapters/:id/enable      vendor (own)
 *   POST   /api/adapters/:id/disable     vendor (own)
 *   DELETE /api/adapters/:id             vendor (own)
 *
 * Admin may do everything. Ownership is checked in one place (`assertMay`): a vendor manages (and sees) only the
 * registered adapters of its own vendor id; built-in, folder and plugin adapters are read-only here.
 */
import express, { type Request, type RequestHandler, type Router } from 'express';
import type { OperationOutcomeIssue, Resource } from 'fhir/r4';
import { clientAddress } from '../http/client.js';
import { duplicateConnection, type RedisClient } from '../queue/connection.js';
import type { AuditTrail } from '../audit/store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { AdapterRegistry } from '../adapters/registry.js';
import { translateBounded } from '../pipeline/pipeline.js';
import {
  type DeviceAdapter,
  type InboundMessage,
  type Principal,
  type Reading,
  type RoleName,
  roleCredential,
  type TranslationContext,
} from '../core/contract.js';
import { badRequest, conflict, forbidden, issue, notFound, GatewayError, outcome, unavailable, unprocessable } from '../core/errors.js';
import { validateReadings } from '../fhir/validate.js';
import { buildTransaction } from '../fhir/transaction.js';
import { requireJson } from '../http/errors.js';
import {
  boundedMapping,
  checkSamplesBounded,
  compileMapping,
  createMappingAdapter,
  MappingError,
  validateMapping,
  type MappingAdapter,
  type MappingIssue,
} from '../adapters/mapping/index.js';
import { BUILT_IN_ADAPTERS } from '../adapters/registry.js';
import { ADAPTERS_CHANNEL, RegistrationStore, type RegisteredAdapter } from './store.js';
import { isPluginAdapter } from '../adapters/plugins.js';

export { RegistrationStore } from './store.js';

const ADAPTER_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** Ids that would be shadowed by other routes under /api/adapters. */
const RESERVED_IDS = new Set(['hl7v2', 'mappings', 'reload', 'registered']);
const DEVICE_FILE = 'deviceMapping';
const FHIR_FILE = 'fhirMapping';

export type AdapterSource = 'built-in' | 'folder' | 'plugin' | 'registered';

export interface RegistrationDeps {
  redis: RedisClient;
  registry: AdapterRegistry;
  /** ADAPTERS_POLL_INTERVAL_MS: how often each instance compares the change counter (missed pub/sub messages). */
  pollIntervalMs: number;
  maxBodyBytes: number;
  context: TranslationContext;
  requireRole(...roles: RoleName[]): RequestHandler;
  /** Adapter changes are recorded here. */
  audit?: Pick<AuditTrail, 'record'>;
  log: Logger;
  metrics: Metrics;
}

export interface Registration {
  router: Router;
  /** The vendor that registered adapter `id` through this API (undefined: not a registered adapter). */
  ownerOf(id: string): string | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
}

type Action = 'read' | 'manage';

/**
 * The one ownership rule: admin may do everything; a vendor may read and manage the registered adapters of its
 * vendor id (others are 404 to it: no probing); an operator may read. Built-in, folder and plugin adapters may be read
 * by anyone allowed on the route and are managed in their own way (code, mappings folder, plugin directory).
 */
export function assertMay(
  principal: Principal | undefined,
  action: Action,
  adapter: { id: string; vendor?: string; source: AdapterSource },
): void {
  const p = principal;
  if (!p) throw forbidden('a credential is required');
  if (adapter.source !== 'registered') {
    if (action === 'manage')
      throw conflict(`adapter '${adapter.id}' is a ${adapter.source} adapter: it cannot be changed through the registration API`);
    return;
  }
  if (p.role === 'admin') return;
  if (p.role === 'vendor') {
    if ((p.vendorId ?? p.id) !== adapter.vendor) throw notFound(`no adapter '${adapter.id}'`);
    return;
  }
  if (p.role === 'operator' && action === 'read') return;
  throw forbidden(`${roleCredential(p.role)} may not ${action === 'read' ? 'read' : 'change'} adapter '${adapter.id}'`);
}

/** A mapping issue as an OperationOutcome issue whose expression locates it in the request body. */
function toIssue(i: MappingIssue): OperationOutcomeIssue {
  const file = i.file ?? '';
  const inner = i.path.startsWith('$') ? i.path.slice(1).split(' ')[0] : '';
  const expression = file === DEVICE_FILE || file === FHIR_FILE || /^samples\[\d+\]$/.test(file) ? `$.${file}${inner}` : `$${inner}`;
  const where = [file, i.path].filter(Boolean).join(' ');
  return issue(i.severity === 'warning' ? 'informational' : 'invalid', `${where}: ${i.message}`, [expression], i.severity);
}

interface ParsedRegistration {
  id: string;
  vendor: string;
  description: string;
  deviceMapping: unknown;
  fhirMapping: unknown;
  samples: unknown[];
  enabled: boolean;
}

function parseBody(body: unknown, principal: Principal): ParsedRegistration {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('the body must be a JSON object { id, vendor, description, deviceMapping, fhirMapping, samples }');
  const b = body as Record<string, unknown>;
  const issues: OperationOutcomeIssue[] = [];
  const id = typeof b.id === 'string' ? b.id : '';
  if (!ADAPTER_ID.test(id)) issues.push(issue('required', `id is required and must match ${ADAPTER_ID}`, ['$.id']));
  let vendor = typeof b.vendor === 'string' ? b.vendor.trim() : '';
  if (principal.role === 'vendor') {
    const own = principal.vendorId ?? principal.id;
    if (vendor && vendor !== own) throw forbidden(`a vendor credential of '${own}' may not register adapters for vendor '${vendor}'`);
    vendor = own;
  }
  if (!vendor) issues.push(issue('required', 'vendor is required (the vendor id that owns the adapter)', ['$.vendor']));
  if (b.description !== undefined && typeof b.description !== 'string')
    issues.push(issue('value', 'description must be a string', ['$.description']));
  if (b.deviceMapping === undefined)
    issues.push(issue('required', 'deviceMapping is required (an iomt-fhir CollectionContent template)', ['$.deviceMapping']));
  if (b.fhirMapping === undefined)
    issues.push(issue('required', 'fhirMapping is required (an iomt-fhir CollectionFhir template)', ['$.fhirMapping']));
  if (!Array.isArray(b.samples) || b.samples.length === 0)
    issues.push(
      issue('required', 'samples is required: a non-empty array of sample payloads (each must translate into valid resources)', [
        '$.samples',
      ]),
    );
  if (b.enabled !== undefined && typeof b.enabled !== 'boolean') issues.push(issue('value', 'enabled must be a boolean', ['$.enabled']));
  if (issues.length) throw unprocessable(issues);
  return {
    id,
    vendor,
    description: typeof b.description === 'string' && b.description.trim() ? b.description : `Registered adapter '${id}' (${vendor})`,
    deviceMapping: b.deviceMapping,
    fhirMapping: b.fhirMapping,
    samples: b.samples as unknown[],
    enabled: b.enabled !== false,
  };
}

const who = (p: Principal) => `${p.role}:${p.id}`;

/** Redis failures at the API are 503 (retry later), not 500. */
async function viaRedis<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof GatewayError) throw e;
    throw unavailable('the adapter store (Redis) is not reachable; nothing was changed, retry later', 5);
  }
}

/** Loads the registered adapters (when Redis answers) and returns the API; `start` follows other instances' changes. */
export async function createRegistration(ctx: RegistrationDeps): Promise<Registration> {
  {
    const store = new RegistrationStore(ctx.redis);
    const pollMs = ctx.pollIntervalMs;
    const builtIn = new Set(BUILT_IN_ADAPTERS.map((a) => a.id).concat(['hl7v2']));
    /** Compiled adapters by id (enabled or not): what this instance knows of each registered adapter. */
    const known = new Map<string, { record: RegisteredAdapter; adapter?: MappingAdapter; error?: string }>();
    const compiled = new Map<string, MappingAdapter>();

    const sourceOf = (id: string, a?: DeviceAdapter): AdapterSource => {
      if (known.has(id)) return 'registered';
      if (builtIn.has(id)) return 'built-in';
      if (a && isPluginAdapter(a)) return 'plugin';
      return 'folder';
    };
    /** An id another source holds (built-in, hl7v2, folder mapping, plugin). */
    const takenByOther = (id: string) => RESERVED_IDS.has(id) || builtIn.has(id) || (!known.has(id) && ctx.registry.get(id) !== undefined);

    const compile = (
      id: string,
      vendor: string,
      version: number,
      v: { description: string; deviceMapping: unknown; fhirMapping: unknown; registeredAt?: string },
    ): MappingAdapter => {
      // Keyed by the stored version's identity, not its number alone: an id deleted and registered again restarts at
      // version 1, and must not get the old mapping back from this cache.
      const key = `${id}@${version}@${vendor}@${v.registeredAt ?? ''}`;
      let a = compiled.get(key);
      if (!a) {
        a = createMappingAdapter({
          id,
          description: v.description,
          vendor,
          deviceMapping: v.deviceMapping,
          fhirMapping: v.fhirMapping,
          files: { deviceFile: DEVICE_FILE, fhirFile: FHIR_FILE },
        });
        for (const k of compiled.keys()) if (k.startsWith(`${id}@`)) compiled.delete(k);
        compiled.set(key, a);
      }
      return a;
    };

    /** Brings this instance's registry in line with Redis for one id. */
    const reload = async (id: string): Promise<void> => {
      const record = await store.get(id);
      const had = known.get(id);
      if (!record) {
        for (const k of compiled.keys()) if (k.startsWith(`${id}@`)) compiled.delete(k);
        if (had) {
          known.delete(id);
          if (ctx.registry.get(id) === had.adapter || ctx.registry.inactiveReason(id)) ctx.registry.unregister(id);
          ctx.log.info({ adapter: id }, 'registered adapter removed');
        }
        return;
      }
      if (!had && ctx.registry.get(id)) {
        ctx.log.error({ adapter: id }, 'registered adapter not loaded: its id is taken by a built-in, folder or plugin adapter');
        return;
      }
      let adapter: MappingAdapter | undefined;
      let error: string | undefined;
      try {
        const v = await store.version(id, record.current);
        if (!v) throw new Error(`version ${record.current} is missing`);
        adapter = compile(id, record.vendor, record.current, v);
      } catch (e) {
        error = e instanceof MappingError ? e.message : (e as Error).message;
        ctx.log.error({ adapter: id, version: record.current, error }, 'registered adapter could not be compiled; it is disabled');
      }
      known.set(id, { record, adapter, error });
      if (adapter && record.enabled) ctx.registry.register(adapter);
      else {
        const why = adapter
          ? `adapter '${id}' is disabled: enable it (POST /api/adapters/${id}/enable) before it takes data`
          : `adapter '${id}' is registered but its mapping does not compile (GET /api/adapters/${id}); it takes no data`;
        ctx.registry.unregister(id, why);
      }
    };

    /** Reloads every id; false when any failed (the change counter is then not advanced, so the poll tries again). */
    const reloadAll = async (): Promise<boolean> => {
      const ids = new Set(await store.ids());
      for (const id of known.keys()) ids.add(id);
      let ok = true;
      for (const id of ids) {
        await reload(id).catch((e: Error) => {
          ok = false;
          ctx.log.warn({ adapter: id, error: e.message }, 'could not reload a registered adapter');
        });
      }
      return ok;
    };

    // The counter is read before loading: a change made meanwhile is seen by the first poll.
    let lastCounter = await store.changeCounter().catch(() => '');
    if (
      !(await reloadAll().catch(
        (e: Error) => (
          ctx.log.error({ error: e.message }, 'could not load registered adapters from Redis; they are loaded when Redis answers'), false
        ),
      ))
    )
      lastCounter = '';

    const router = express.Router();
    const json = express.json({ limit: ctx.maxBodyBytes, type: ['application/json', 'application/fhir+json', 'application/*+json'] });
    const principal = (req: express.Request) => req.principal as Principal;

    const view = (a: DeviceAdapter | undefined, id: string) => {
      const reg = known.get(id);
      if (reg) {
        const r = reg.record;
        return {
          id,
          description: reg.adapter?.description ?? a?.description ?? '',
          source: 'registered' as const,
          vendor: r.vendor,
          version: r.current,
          enabled: r.enabled && !!reg.adapter,
          ...(reg.error ? { error: reg.error } : {}),
        };
      }
      const vendor = (a as { vendor?: string } | undefined)?.vendor;
      return {
        id,
        description: a?.description ?? '',
        source: sourceOf(id, a),
        ...(vendor ? { vendor } : {}),
        version: null,
        enabled: true,
      };
    };

    /** The adapter `id` as the caller may see it (404 when absent or not visible). */
    const resolve = (req: express.Request, action: Action) => {
      const id = String(req.params.id);
      const reg = known.get(id);
      const a = ctx.registry.get(id);
      if (!reg && !a) throw notFound(`no adapter '${id}'`);
      const v = view(a, id);
      assertMay(principal(req), action, { id, vendor: reg?.record.vendor, source: v.source });
      return { id, reg, adapter: reg?.adapter ?? a, view: v };
    };

    router.get('/api/adapters', ctx.requireRole('operator', 'vendor'), (req, res) => {
      const p = principal(req);
      const ids = new Set([...ctx.registry.list().map((a) => a.id), ...known.keys()]);
      const out = [...ids]
        .sort()
        .map((id) => view(ctx.registry.get(id), id))
        .filter((v) => {
          if (v.source !== 'registered') return true;
          try {
            assertMay(p, 'read', { id: v.id, vendor: v.vendor, source: v.source });
            return true;
          } catch {
            return false;
          }
        });
      res.json(out);
    });

    /** Adapter changes are administrative actions: recorded in the audit trail (best effort: the change is made). */
    const auditAdapter = async (
      kind: 'adapter-registered' | 'adapter-enable' | 'adapter-disable' | 'adapter-deleted',
      req: Request,
      id: string,
      description: string,
    ) => {
      await ctx.audit
        ?.record({ kind, principal: req.principal, address: clientAddress(req), entities: [{ kind: 'Adapter', id }], description })
        .catch((err: Error) => ctx.log.warn({ adapter: id, error: err.message }, 'could not record the adapter change in the audit trail'));
    };

    router.post('/api/adapters', ctx.requireRole('vendor'), requireJson, json, async (req, res) => {
      const p = principal(req);
      const reg = parseBody(req.body, p);
      if (takenByOther(reg.id))
        throw conflict(
          `adapter id '${reg.id}' is taken by a ${RESERVED_IDS.has(reg.id) ? 'reserved name' : sourceOf(reg.id, ctx.registry.get(reg.id)) + ' adapter'}; choose another id`,
        );
      const existing = known.get(reg.id)?.record ?? (await viaRedis(store.get(reg.id)));
      if (existing && p.role === 'vendor' && existing.vendor !== (p.vendorId ?? p.id))
        throw conflict(`adapter id '${reg.id}' is registered by another vendor; choose another id`);
      if (existing && p.role === 'admin' && existing.vendor !== reg.vendor)
        throw conflict(`adapter '${reg.id}' belongs to vendor '${existing.vendor}', not '${reg.vendor}'`);

      // 1. the templates (structure, expressions, terminology), every issue with its location
      const issues = validateMapping(reg.deviceMapping, reg.fhirMapping, { deviceFile: DEVICE_FILE, fhirFile: FHIR_FILE });
      const errors = issues.filter((i) => i.severity === 'error');
      let results: { sample: number; resources: Resource[]; patient?: Reading['patient'] }[] = [];
      // 2. every sample through the mapping and the validator (also when the codes are wrong: the vendor gets the whole list)
      // Samples come from the vendor with the templates: each is evaluated as a message at ingest would be (off the
      // event loop, within the time budget per message).
      const files = { deviceFile: DEVICE_FILE, fhirFile: FHIR_FILE };
      const { mapping } = compileMapping(reg.deviceMapping, reg.fhirMapping, files);
      if (mapping) {
        const samples = await checkSamplesBounded(
          reg.id,
          boundedMapping(mapping, { deviceMapping: reg.deviceMapping, fhirMapping: reg.fhirMapping, files, vendor: reg.vendor }),
          reg.samples.map((body, i) => ({ file: `samples[${i}]`, body })),
          { ...files, vendor: reg.vendor, ctx: ctx.context },
        );
        for (const s of samples) {
          errors.push(...s.issues.filter((i) => i.severity === 'error'));
          issues.push(...s.issues.filter((i) => i.severity === 'warning'));
        }
        results = samples.map((s, i) => ({
          sample: i,
          resources: (s.translations ?? []).flatMap((t) => [...t.devices, ...t.observations]),
          patient: s.translations?.find((t) => t.patient)?.patient,
        }));
      }
      if (errors.length) {
        ctx.metrics.inc('adapter_registrations_refused_total');
        throw new GatewayError(422, outcome([...errors, ...issues.filter((i) => i.severity === 'warning')].map(toIssue)));
      }
      const added = await viaRedis(
        store.addVersion(
          reg.id,
          reg.vendor,
          {
            description: reg.description,
            deviceMapping: reg.deviceMapping,
            fhirMapping: reg.fhirMapping,
            samples: reg.samples,
            registeredAt: new Date().toISOString(),
            registeredBy: who(p),
          },
          reg.enabled,
        ),
      );
      if ('owner' in added) throw conflict(`adapter id '${reg.id}' is registered by another vendor; choose another id`);
      await reload(reg.id).catch(() => undefined);
      ctx.metrics.inc('adapter_registrations_total');
      ctx.log.info({ adapter: reg.id, vendor: reg.vendor, version: added.version, by: who(p) }, 'adapter registered');
      await auditAdapter('adapter-registered', req, reg.id, `version ${added.version} of adapter '${reg.id}' (vendor ${reg.vendor})`);
      const record = known.get(reg.id)?.record;
      res.status(201).setHeader('Location', `/api/adapters/${reg.id}`);
      res.json({
        id: reg.id,
        vendor: reg.vendor,
        version: added.version,
        enabled: record?.enabled ?? reg.enabled,
        samples: results,
        outcome: outcome(issues.filter((i) => i.severity === 'warning').map(toIssue)),
      });
    });

    router.get('/api/adapters/:id', ctx.requireRole('operator', 'vendor'), async (req, res) => {
      const r = resolve(req, 'read');
      if (!r.reg) return void res.json(r.view);
      const versions = [];
      for (const n of r.reg.record.versions) {
        const v = await viaRedis(store.version(r.id, n));
        if (v)
          versions.push({
            version: v.version,
            description: v.description,
            registeredAt: v.registeredAt,
            registeredBy: v.registeredBy,
            current: n === r.reg.record.current,
            deviceMapping: v.deviceMapping,
            fhirMapping: v.fhirMapping,
            samples: v.samples,
          });
      }
      res.json({ ...r.view, createdAt: r.reg.record.createdAt, updatedAt: r.reg.record.updatedAt, versions });
    });

    router.post('/api/adapters/:id/$translate', ctx.requireRole('operator', 'vendor'), requireJson, json, async (req, res) => {
      const r = resolve(req, 'read');
      if (!r.adapter)
        throw new GatewayError(
          409,
          outcome([issue('conflict', `adapter '${r.id}' could not be compiled: ${r.reg?.error ?? 'unknown error'}`)]),
        );
      if (req.body === undefined) throw badRequest('the body is empty: send a device payload');
      const attributes: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.query)) if (typeof v === 'string') attributes[k] = v;
      const message: InboundMessage = {
        body: req.body,
        channel: 'http',
        receivedAt: new Date().toISOString(),
        attributes,
        principal: principal(req),
      };
      // The pipeline's own translate and validate steps; without a patient in the payload the subject is filled in at
      // the door (the device's assigned patient), so its absence is a warning here, not an error.
      const translations = await translateBounded(r.adapter, message, ctx.context);
      const problems = validateReadings(translations, { patientFromDevice: true });
      if (problems.length) throw unprocessable(problems);
      const warnings: OperationOutcomeIssue[] = [];
      const bundles = translations.map((t, i) => {
        if (!t.patient && t.observations.length) {
          warnings.push(
            issue(
              'incomplete',
              `reading[${i}] names no patient: the gateway would fill in the patient assigned to the device, or hold or refuse the data by device policy`,
              undefined,
              'warning',
            ),
          );
        }
        const target = t.patient
          ? { kind: 'create' as const, system: t.patient.system, value: t.patient.value }
          : { kind: 'none' as const };
        return buildTransaction('dry-run', t, target);
      });
      if (!translations.length) warnings.push(issue('informational', 'the payload yields no resources', undefined, 'warning'));
      res.json({
        adapter: r.id,
        version: r.reg?.record.current ?? null,
        bundles,
        outcome: outcome(
          warnings.length
            ? warnings
            : [issue('informational', 'translated and valid; nothing was queued (dry run)', undefined, 'information')],
        ),
      });
    });

    for (const action of ['enable', 'disable'] as const) {
      router.post(`/api/adapters/:id/${action}`, ctx.requireRole('vendor'), async (req, res) => {
        const r = resolve(req, 'manage');
        await viaRedis(store.setEnabled(r.id, action === 'enable'));
        await viaRedis(reload(r.id));
        ctx.log.info({ adapter: r.id, by: who(principal(req)) }, `adapter ${action}d`);
        await auditAdapter(action === 'enable' ? 'adapter-enable' : 'adapter-disable', req, r.id, `adapter '${r.id}' ${action}d`);
        res.json(view(ctx.registry.get(r.id), r.id));
      });
    }

    router.delete('/api/adapters/:id', ctx.requireRole('vendor'), async (req, res) => {
      const r = resolve(req, 'manage');
      await viaRedis(store.delete(r.id));
      await viaRedis(reload(r.id));
      ctx.log.info({ adapter: r.id, by: who(principal(req)) }, 'adapter deleted');
      await auditAdapter('adapter-deleted', req, r.id, `adapter '${r.id}' deleted`);
      res.status(204).end();
    });

    // Other instances' changes: pub/sub for promptness, the change counter for anything missed.
    const sub = duplicateConnection(ctx.redis, { enableAutoPipelining: false });
    sub.on('message', (_channel: string, id: string) => {
      void reload(id).catch((e: Error) => ctx.log.warn({ adapter: id, error: e.message }, 'could not reload a registered adapter'));
    });
    let timer: NodeJS.Timeout | undefined;
    const poll = async () => {
      const c = await store.changeCounter().catch(() => undefined);
      if (c !== undefined && c !== lastCounter) {
        if (await reloadAll().catch(() => false)) lastCounter = c;
      }
    };
    return {
      router,
      ownerOf: (id) => known.get(id)?.record.vendor,
      start: async () => {
        await sub
          .subscribe(ADAPTERS_CHANNEL)
          .catch((e: Error) => ctx.log.warn({ error: e.message }, 'could not subscribe to adapter changes; polling only'));
        timer = setInterval(() => void poll(), pollMs);
        timer.unref();
      },
      stop: async () => {
        if (timer) clearInterval(timer);
        sub.disconnect();
      },
    };
  }
}
