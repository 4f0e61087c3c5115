/**
 * The OpenAPI document at GET /openapi.json is true to the routes: a real gateway is started in each role, the
 * document is fetched over HTTP, and compared both ways with the routes express has actually registered (walked from
 * the app's router stack, mounted routers included): a route added without documentation fails here, and so does a
 * documented route that is gone. The document's structure is checked (OpenAPI 3.1, every $ref resolves, unique
 * operationIds, path parameters declared), its security is checked against the gateway (a secured operation refuses a
 * request without a credential, and the roles it names are the roles the gateway lets in), and real responses of key
 * endpoints are validated with ajv against the schemas the document gives them.
 */
import { strict as assert } from 'node:assert';
import type { Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { Role } from '../../src/config/index.js';
import {
  REPO_ROOT,
  postJson,
  startEhr,
  startGateway,
  startRedis,
  type TestEhr,
  type TestGateway,
  type TestRedis,
} from '../helpers/harness.js';
import { mosquittoBinary, startMosquitto, type TestBroker } from '../mqtt/broker.js';

const ADMIN = 'openapi-test-admin-key-0123456789abcdef';
const VERSION = (JSON.parse(readFileSync(`${REPO_ROOT}/package.json`, 'utf8')) as { version: string }).version;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

type Doc = any;

/** What express serves: a route (method + path), or a handler mounted under a prefix that answers every sub-path. */
interface Registered {
  routes: Set<string>; // "get /api/devices/{id}"
  catchAll: string[]; // prefixes, e.g. "/sandbox/fhir"
}

/** Body parsers, helmet, the 404 and the like: middleware that passes requests on rather than answering them. */
const MIDDLEWARE = new Set([
  'identifyClients',
  'helmetMiddleware',
  'helmetHeadersOnce',
  'jsonParser',
  'rawParser',
  'textParser',
  'urlencodedParser',
  'notFoundHandler',
  'query',
  'expressInit',
]);

/** The mount of the operations console's pages (and bull-board under it). */
const CONSOLE = '/console';

/** express path syntax (path-to-regexp 8) → OpenAPI: ':id' → '{id}'. Anything fancier must be taught here first. */
function toOpenApiPath(p: string): string {
  if (/[*?(){}]/.test(p.replace(/\$translate/, ''))) throw new Error(`route path '${p}' uses syntax this test does not translate yet`);
  return p.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** Walks express 5's router stack (the `router` package): routes, and mounted routers with their path prefixes. */
function registeredRoutes(app: any): Registered {
  const out: Registered = { routes: new Set(), catchAll: [] };
  const walk = (stack: any[], prefix: string) => {
    for (const layer of stack) {
      const raw = layer.rawPath as unknown;
      if (typeof raw !== 'string') throw new Error(`a layer with a non-string path (${String(raw)}): teach the test its syntax`);
      const here = raw === '/' ? prefix : prefix + raw;
      // The operations console (docs/console.md) serves HTML pages to a browser session, not the API: not in the document.
      if (here === CONSOLE || here.startsWith(`${CONSOLE}/`)) continue;
      if (layer.route) {
        for (const [m, on] of Object.entries(layer.route.methods as Record<string, boolean>)) {
          if (on && m !== '_all') out.routes.add(`${m} ${toOpenApiPath(prefix + layer.route.path) || '/'}`);
        }
      } else if (Array.isArray(layer.handle?.stack)) {
        walk(layer.handle.stack, here);
      } else if (layer.handle?.length !== 4 && !MIDDLEWARE.has(layer.name)) {
        out.catchAll.push(here || '/');
      }
    }
  };
  walk(app.router.stack, '');
  return out;
}

/** The express app behind a running gateway: the request listener of its HTTP server. */
function appOf(gw: TestGateway): unknown {
  const server = (gw.gateway as unknown as { server: Server }).server;
  const listener = server.listeners('request')[0] as { app?: unknown };
  return listener.app ?? listener; // the hot-route listener (http/app.ts withHotRoutes) carries the app
}

function documented(doc: Doc): string[] {
  const ops: string[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, unknown>>))
    for (const m of METHODS) if (item[m]) ops.push(`${m} ${path}`);
  return ops;
}

/** Concrete paths the document gives their own description, served by a templated route. */
const INSTANCES: Record<string, string> = { 'post /ingest/measurements': 'post /ingest/{adapter}' };

function operations(doc: Doc): { key: string; path: string; method: string; op: Doc }[] {
  return documented(doc).map((key) => {
    const [method, path] = key.split(' ');
    return { key, method, path, op: doc.paths[path][method] };
  });
}

/** Resolves a JSON pointer (RFC 6901) in `root`. */
function pointer(root: Doc, ptr: string): unknown {
  let node = root;
  for (const part of ptr.split('/').slice(1)) {
    const k = decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !(k in node)) return undefined;
    node = node[k];
  }
  return node;
}

/** Every $ref that does not resolve: local ones against the document, or against the schema resource with an $id. */
function unresolvedRefs(doc: Doc): string[] {
  const bad: string[] = [];
  const visit = (node: unknown, resource: Doc, at: string) => {
    if (Array.isArray(node)) {
      for (const [i, n] of node.entries()) visit(n, resource, `${at}/${i}`);
      return;
    }
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    const base = typeof n.$id === 'string' ? n : resource;
    if (typeof n.$ref === 'string') {
      const ref = n.$ref;
      if (!ref.startsWith('#') || pointer(base, ref.slice(1)) === undefined) bad.push(`${at}: ${ref}`);
    }
    for (const [k, v] of Object.entries(n)) visit(v, base, `${at}/${k}`);
  };
  visit(doc, doc, '#');
  return bad;
}

const concrete = (path: string) => path.replace(/\{type\}/g, 'Patient').replace(/\{[^}]+\}/g, 'x');

async function call(
  url: string,
  method: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Doc; headers: Headers }> {
  const r = await fetch(url, { method: method.toUpperCase(), headers });
  const text = await r.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body, headers: r.headers };
}

/** An ajv validator of the document's schema at a JSON pointer (resolving its $refs within the document). */
function validatorAt(doc: Doc, ptr: string) {
  const ajv = new Ajv2020({ strict: false, validateFormats: false });
  ajv.addSchema({ ...doc, $id: 'https://gateway.invalid/openapi.json' });
  const v = ajv.getSchema(`https://gateway.invalid/openapi.json#${ptr}`);
  assert.ok(v, `no schema at ${ptr}`);
  return (data: unknown, what: string) => assert.ok(v(data), `${what} does not match ${ptr}: ${JSON.stringify(v.errors, null, 1)}`);
}
const responsePtr = (path: string, method: string, status: number, type = 'application/json') =>
  `/paths/${path.replace(/~/g, '~0').replace(/\//g, '~1')}/${method}/responses/${status}/content/${type.replace(/\//g, '~1')}/schema`;

const VARIANTS: { role: Role; sandbox: boolean; mqtt: boolean }[] = [
  { role: 'all', sandbox: true, mqtt: true },
  { role: 'ingest', sandbox: false, mqtt: false },
  { role: 'worker', sandbox: true, mqtt: false },
];

describe('OpenAPI document: GET /openapi.json describes every route the gateway serves, and nothing else', () => {
  let redis: TestRedis;
  let ehr: TestEhr;
  let broker: TestBroker | undefined;
  before(async () => {
    redis = await startRedis();
    ehr = await startEhr();
    const bin = mosquittoBinary();
    broker = bin ? await startMosquitto(bin) : undefined;
  });
  after(async () => {
    await broker?.stop();
    await ehr?.stop();
    await redis?.stop();
  });

  for (const variant of VARIANTS) {
    describe(`role ${variant.role}${variant.sandbox ? ', sandbox EHR' : ''}${variant.mqtt ? ', MQTT' : ''}`, () => {
      let gw: TestGateway;
      let doc: Doc;
      before(async () => {
        gw = await startGateway(
          {
            REDIS_URL: redis.url,
            ADMIN_API_KEY: ADMIN,
            FHIR_BASE_URL: variant.sandbox ? undefined : ehr.url,
            // Without a broker the channel still runs (and serves its status route); it keeps trying to connect.
            ...(variant.mqtt ? { MQTT_URL: broker?.url ?? 'mqtt://127.0.0.1:1', MQTT_TOPICS: 'devices/+/measurements=measurements' } : {}),
            RATE_LIMIT_PER_MINUTE: '0',
            // Every secured operation is called without a credential on purpose: more failures than the limit allows.
            AUTH_FAILURE_LIMIT: '0',
          },
          variant.role,
        );
        const r = await fetch(`${gw.url}/openapi.json`);
        assert.equal(r.status, 200, 'served without a credential');
        assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
        doc = await r.json();
      });
      after(() => gw?.stop());

      it('is OpenAPI 3.1 with the gateway version, every $ref resolving, unique operationIds, responses and declared parameters', () => {
        assert.match(doc.openapi, /^3\.1\.\d+$/);
        assert.equal(doc.info.version, VERSION);
        assert.deepEqual(unresolvedRefs(doc), []);
        const ops = operations(doc);
        assert.ok(ops.length > 10, 'the document lists operations');
        const ids = ops.map((o) => o.op.operationId);
        assert.ok(
          ids.every((id) => typeof id === 'string' && id),
          'every operation has an operationId',
        );
        assert.deepEqual(
          ids.filter((id, i) => ids.indexOf(id) !== i),
          [],
          'operationIds are unique',
        );
        const tags = new Set((doc.tags as { name: string }[]).map((t) => t.name));
        const schemes = new Set(Object.keys(doc.components.securitySchemes));
        for (const { key, path, op } of ops) {
          assert.ok(op.summary, `${key}: a summary`);
          assert.ok(Object.keys(op.responses ?? {}).length, `${key}: responses`);
          for (const t of op.tags ?? []) assert.ok(tags.has(t), `${key}: tag '${t}' is declared`);
          const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
          const declared = (op.parameters ?? [])
            .filter((p: Doc) => p.in === 'path')
            .map((p: Doc) => {
              assert.equal(p.required, true, `${key}: path parameter ${p.name} is required`);
              return p.name;
            })
            .sort();
          assert.deepEqual(declared, inPath, `${key}: path parameters`);
          for (const req of op.security ?? []) for (const s of Object.keys(req)) assert.ok(schemes.has(s), `${key}: scheme ${s}`);
          // Refusals are OperationOutcomes: every operation says so for the answers it does not list.
          assert.equal(op.responses.default?.$ref, '#/components/responses/Error', `${key}: default response`);
        }
        assert.deepEqual(
          Object.values(doc.components.responses as Record<string, Doc>)
            .map((r) => Object.values(r.content ?? {})[0] as Doc)
            .filter((c) => c && !String(c.schema?.$ref).endsWith('/OperationOutcome')),
          [],
          'every shared error response is an OperationOutcome',
        );
      });

      it('lists every registered route, and every documented operation is registered (both directions)', () => {
        const reg = registeredRoutes(appOf(gw));
        assert.ok(reg.routes.size > 20, `the walk found the routes (${reg.routes.size})`);
        assert.ok(reg.routes.has('get /healthz') && reg.routes.has('get /openapi.json'));
        const docOps = documented(doc);
        const undocumented = [...reg.routes].filter((r) => !docOps.includes(r));
        assert.deepEqual(undocumented, [], 'registered routes missing from the document');
        const underCatchAll = (key: string) => reg.catchAll.some((p) => key.split(' ')[1].startsWith(`${p}/`) || key.split(' ')[1] === p);
        const missing = docOps.filter((k) => !reg.routes.has(k) && !(INSTANCES[k] && reg.routes.has(INSTANCES[k])) && !underCatchAll(k));
        assert.deepEqual(missing, [], 'documented operations this process does not serve');
        // A handler answering every sub-path (the sandbox EHR) is described by at least one operation beyond its routes.
        for (const p of reg.catchAll)
          assert.ok(
            docOps.some((k) => !reg.routes.has(k) && (k.split(' ')[1] === p || k.split(' ')[1].startsWith(`${p}/`))),
            `the handler mounted at ${p} is described`,
          );
        assert.equal(reg.catchAll.includes('/sandbox/fhir'), variant.sandbox);
        assert.equal(reg.routes.has('get /api/mqtt/status'), variant.mqtt);
        assert.equal(reg.routes.has('post /ingest/{adapter}'), variant.role !== 'worker');
      });

      it('a secured operation refuses a request without a credential (401 OperationOutcome); an open one does not ask for one', async () => {
        for (const { key, method, path, op } of operations(doc)) {
          const secured = (op.security ?? []).length > 0;
          if (!secured && method !== 'get') continue; // open writes are the sandbox EHR's: nothing to learn, data to change
          const r = await call(gw.url + concrete(path), method);
          if (secured) {
            assert.equal(r.status, 401, `${key} without a credential: ${r.status} ${JSON.stringify(r.body)}`);
            assert.equal(r.body.resourceType, 'OperationOutcome', key);
            assert.equal(r.headers.get('www-authenticate'), 'Bearer', key);
          } else assert.notEqual(r.status, 401, `${key} is open`);
        }
      });

      if (variant.role === 'all') {
        it('the roles each operation names are the roles the gateway lets in (operator, vendor, device keys)', async () => {
          const admin = { authorization: `Bearer ${ADMIN}` };
          const op = await postJson(`${gw.url}/api/operators/credentials`, { name: 'openapi-ops' }, admin);
          assert.equal(op.status, 201, JSON.stringify(op.body));
          const vendor = await postJson(`${gw.url}/api/vendors`, { id: 'openapi-vendor' }, admin);
          assert.equal(vendor.status, 201, JSON.stringify(vendor.body));
          const vkey = await postJson(`${gw.url}/api/vendors/openapi-vendor/credentials`, undefined, admin);
          assert.equal(vkey.status, 201, JSON.stringify(vkey.body));
          const dev = await postJson(`${gw.url}/api/devices`, { id: 'openapi-dev-1', vendor: 'openapi-vendor' }, admin);
          assert.equal(dev.status, 201, JSON.stringify(dev.body));
          const dkey = await postJson(`${gw.url}/api/devices/openapi-dev-1/credentials`, undefined, admin);
          assert.equal(dkey.status, 201, JSON.stringify(dkey.body));
          const keys = { operator: op.body.key, vendor: vkey.body.key, device: dkey.body.key } as Record<string, string>;
          let checked = 0;
          for (const { key, method, path, op: o } of operations(doc)) {
            const security = (o.security ?? []) as Record<string, string[]>[];
            if (!security.length) continue;
            const roles = security[0].apiKey;
            assert.ok(roles?.includes('admin'), `${key}: admin may always`);
            assert.equal(
              security.some((s) => 'hmacSignature' in s),
              roles.includes('vendor'),
              `${key}: HMAC-signed requests (vendor keys) are listed where vendors may call`,
            );
            for (const [role, k] of Object.entries(keys)) {
              const r = await call(gw.url + concrete(path), method, { authorization: `Bearer ${k}` });
              const routeRefusal = r.status === 403 && /may not use this route/.test(JSON.stringify(r.body));
              if (roles.includes(role))
                assert.ok(r.status !== 401 && !routeRefusal, `${key} lets ${role} in: ${r.status} ${JSON.stringify(r.body)}`);
              else assert.ok(routeRefusal, `${key} refuses ${role}: ${r.status} ${JSON.stringify(r.body)}`);
              checked++;
            }
          }
          assert.ok(checked > 100, `checked ${checked} (operation, role) pairs`);
        });

        it('real answers match the documented schemas (health, status, ingest accepted and refused, device registration)', async () => {
          const admin = { authorization: `Bearer ${ADMIN}` };
          validatorAt(doc, responsePtr('/healthz', 'get', 200))((await call(`${gw.url}/healthz`, 'get')).body, 'GET /healthz');
          const status = await call(`${gw.url}/api/status`, 'get', admin);
          assert.equal(status.status, 200);
          validatorAt(doc, responsePtr('/api/status', 'get', 200))(status.body, 'GET /api/status');

          const reading = {
            deviceId: 'openapi-dev-2',
            patientId: 'MRN-OPENAPI',
            timestamp: '2026-11-23T10:00:00Z',
            measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }],
          };
          const body = validatorAt(doc, '/paths/~1ingest~1measurements/post/requestBody/content/application~1json/schema');
          body(reading, 'the README-style reading');
          assert.throws(() => body({ ...reading, measurements: [] }, 'a reading without measurements'));
          const accepted = await postJson(`${gw.url}/ingest/measurements`, reading, admin);
          assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
          validatorAt(doc, responsePtr('/ingest/measurements', 'post', 202))(accepted.body, 'POST /ingest/measurements 202');

          const refused = await postJson(
            `${gw.url}/ingest/measurements`,
            { ...reading, measurements: [{ code: 'NOT_A_CODE', value: 1, unit: '%' }] },
            admin,
          );
          assert.equal(refused.status, 422, JSON.stringify(refused.body));
          assert.ok(refused.headers.get('x-refused-id'), 'the refusal is kept');
          validatorAt(doc, '/components/schemas/OperationOutcome')(refused.body, 'the 422 refusal');

          const registered = await postJson(`${gw.url}/api/devices`, { id: 'openapi-dev-3', identifiers: { serialNumber: 'S-3' } }, admin);
          assert.equal(registered.status, 201, JSON.stringify(registered.body));
          validatorAt(doc, responsePtr('/api/devices', 'post', 201))(registered.body, 'POST /api/devices 201');

          const page = await call(`${gw.url}/api/refusals`, 'get', admin);
          validatorAt(doc, responsePtr('/api/refusals', 'get', 200))(page.body, 'GET /api/refusals');
          assert.ok(page.body.total >= 1);

          // The validators are not vacuous: a wrong shape fails them.
          assert.throws(() => validatorAt(doc, responsePtr('/api/status', 'get', 200))({ version: 1 }, 'a wrong status'));
          assert.throws(() => validatorAt(doc, '/components/schemas/OperationOutcome')({ resourceType: 'Patient' }, 'a wrong outcome'));
        });
      }
    });
  }
});
