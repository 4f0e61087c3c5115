/**
 * The OpenAPI 3.1 description of the gateway's HTTP API, served without a credential at GET /openapi.json.
 *
 * Written here as data (a table of operations) rather than as a file shipped beside the build: the document carries
 * the running version, embeds the measurements format's own JSON Schema (passed in by the composition root, so it is
 * the object the gateway serves at /formats/measurements/schema.json, not a copy), and lists only the operations this
 * process serves (an ingest process has /ingest and /hl7v2, a worker has not; the sandbox EHR and the MQTT status exist
 * only when they run). It compiles into dist with the rest of the gateway; nothing else has to be packaged.
 *
 * test/http/openapi.test.ts walks the routes express has registered in each role and compares them with this
 * document both ways: a route added without a description here, or a description of a route that is gone, fails it.
 *
 * Security: every route but the open ones (health, formats, this document) takes an API key as
 * `Authorization: Bearer <key>`. The roles that may call an operation are the scopes of its security requirement
 * (OpenAPI 3.1 allows role names there for schemes other than OAuth); admin may always. Operations open to vendors
 * also accept an HMAC-signed request (three headers, one requirement).
 */
import express, { type Router } from 'express';
import type { RoleName } from '../core/contract.js';

/** What the process serving the document runs, so that the document lists what it serves and no more. */
export interface OpenApiOptions {
  /** The gateway's version (info.version). */
  version: string;
  /** The process ingests (roles all and ingest): /ingest, /hl7v2 and the format routes. */
  ingest: boolean;
  /** The sandbox EHR is mounted at /sandbox/fhir (FHIR_BASE_URL unset). */
  sandbox: boolean;
  /** The MQTT channel runs (MQTT_URL set, a role that ingests): GET /api/mqtt/status. */
  mqtt: boolean;
  /** The gateway has keys for SMART Backend Services (FHIR_AUTH=smart): GET /.well-known/jwks.json. */
  jwks?: boolean;
  /** The JSON Schema of the measurements format (the request body of POST /ingest/measurements). */
  measurementsSchema: object;
}

type Method = 'get' | 'post' | 'put' | 'delete';
type Json = Record<string, unknown>;

/** Who serves an operation: every process (default), processes that ingest, or only with the sandbox or MQTT. */
type ServedBy = 'any' | 'ingest' | 'sandbox' | 'mqtt' | 'jwks';

interface Op {
  method: Method;
  path: string;
  operationId: string;
  tag: string;
  summary: string;
  description?: string;
  /** The roles besides admin that may call it ([]: admin only); absent: no credential. */
  roles?: RoleName[];
  servedBy?: ServedBy;
  query?: Json[];
  requestBody?: Json;
  responses: Record<string, Json>;
  deprecated?: true;
}

// ---- building blocks ---------------------------------------------------------------------------------------------

const schema = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const response = (name: string) => ({ $ref: `#/components/responses/${name}` });
const json = (description: string, s: Json, headers?: Json): Json => ({
  description,
  ...(headers ? { headers } : {}),
  content: { 'application/json': { schema: s } },
});
const fhir = (description: string, s: Json = schema('Resource')): Json => ({
  description,
  content: { 'application/fhir+json': { schema: s } },
});
const noContent = (description: string): Json => ({ description });
const jsonBody = (s: Json, description?: string, required = true): Json => ({
  required,
  ...(description ? { description } : {}),
  content: { 'application/json': { schema: s } },
});
const q = (name: string, description: string, s: Json = { type: 'string' }): Json => ({
  name,
  in: 'query',
  required: false,
  description,
  schema: s,
});
const str = { type: 'string' };
const dateTime = { type: 'string', format: 'date-time' };
const int = { type: 'integer', minimum: 0 };
const arrayOf = (s: Json) => ({ type: 'array', items: s });
const obj = (properties: Record<string, Json>, required: string[] = [], extra: Json = {}): Json => ({
  type: 'object',
  ...(required.length ? { required } : {}),
  properties,
  ...extra,
});

const PAGING = [
  q('offset', 'Entries to skip (a whole number; default 0).', { type: 'integer', minimum: 0, default: 0 }),
  q('limit', 'Entries to return (a whole number, 1 to 500; default 100).', { type: 'integer', minimum: 1, maximum: 500, default: 100 }),
];
/** Every dead-letter route: which destination's dead letters (default: the first destination, ehr). */
const DESTINATION = [q('destination', "The destination's name (see docs/destinations.md; default: the first destination, ehr).")];
const REFUSAL_FILTERS = [
  q('channel', 'The channel it arrived on: http, mllp, mqtt.'),
  q('format', 'How the payload is kept: json, hl7v2, text.', { type: 'string', enum: ['json', 'hl7v2', 'text'] }),
  q('adapter', 'The adapter id.'),
  q('deviceId', 'A device id the payload names.'),
  q('controlId', 'HL7v2: the message control id (MSH-10).'),
  q('reason', 'A case-insensitive substring of the reason.'),
  q('since', 'Received at or after (ISO 8601).', dateTime),
  q('until', 'Received at or before (ISO 8601).', dateTime),
];

/** The path parameters, by the path they appear in (the same name means different things under different paths). */
function pathParameter(path: string, name: string): Json {
  const p = (description: string, s: Json = str) => ({ name, in: 'path', required: true, description, schema: s });
  if (name === 'keyId') return p('The key id of the credential (not the key).');
  if (name === 'adapter')
    return p('The adapter id (GET /api/adapters lists them).', { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' });
  if (name === 'type')
    return p('A FHIR R4 resource type (Patient, Device, Observation, ...).', { type: 'string', pattern: '^[A-Z][A-Za-z]+$' });
  if (path.startsWith('/sandbox/fhir/')) return p('The logical id of the resource.');
  if (path.startsWith('/api/devices/'))
    return p('The device id its payloads carry.', { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });
  if (path.startsWith('/api/vendors/')) return p('The vendor id.');
  if (path.startsWith('/api/adapters/')) return p('The adapter id.');
  if (path.startsWith('/api/dead-letters/')) return p('The dead letter id (`<job id>` or `<job id>.<reading index>`).');
  if (/^\/api\/(refusals|refused|rejected)\//.test(path)) return p('The refusal id (in the X-Refused-Id header of the refusal).');
  return p(name);
}

// ---- the operations ------------------------------------------------------------------------------------------------

const DEPRECATED_ALIAS =
  'Deprecated alias of the one refusal store, kept for one release in its old response shape; answers with `Deprecation: true` and `Link: </api/refusals>; rel="successor-version"`. Use /api/refusals.';
const deprecationHeaders = {
  Deprecation: { description: 'Always `true`.', schema: { type: 'string', const: 'true' } },
  Link: { description: 'The successor: `</api/refusals>; rel="successor-version"`.', schema: str },
};

const OPERATIONS: Op[] = [
  // ---- health and discovery ----
  {
    method: 'get',
    path: '/healthz',
    operationId: 'getHealth',
    tag: 'health',
    summary: 'Liveness: the process answers',
    responses: { 200: json('Alive.', schema('Health')) },
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'getReadiness',
    tag: 'health',
    summary: 'Readiness: Redis is reachable and, in roles that deliver, the EHR answers',
    responses: {
      200: json('Ready.', schema('Ready')),
      503: {
        description: 'Not ready: an issue per problem.',
        headers: { 'Retry-After': { $ref: '#/components/headers/RetryAfter' } },
        content: { 'application/fhir+json': { schema: schema('OperationOutcome') } },
      },
    },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'getOpenApi',
    tag: 'health',
    summary: 'This document: the operations this process serves',
    responses: { 200: json('The OpenAPI 3.1 document.', { type: 'object' }) },
  },
  {
    method: 'get',
    path: '/.well-known/jwks.json',
    operationId: 'getJwks',
    tag: 'health',
    summary: "The gateway's public keys (JWK Set) for SMART Backend Services: the JWKS URL to register with the EHR",
    servedBy: 'jwks',
    responses: { 200: json('The JWK Set: public keys only, the signing key first.', { type: 'object' }) },
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'getMetrics',
    tag: 'status',
    summary: 'Prometheus metrics (text exposition format 0.0.4); no PHI in labels',
    roles: ['operator'],
    responses: { 200: { description: 'The metrics.', content: { 'text/plain': { schema: str } } } },
  },
  {
    method: 'get',
    path: '/api/status',
    operationId: 'getStatus',
    tag: 'status',
    summary: 'Version, role, effective FHIR base URL, Redis, queue counts, dead letters and adapters',
    roles: ['operator'],
    responses: { 200: json('The status.', schema('Status')) },
  },

  // ---- ingest ----
  {
    method: 'post',
    path: '/ingest/measurements',
    operationId: 'ingestMeasurements',
    tag: 'ingest',
    summary: "Send readings in the gateway's own format (the measurements adapter)",
    description:
      'The same route as POST /ingest/{adapter}, for the built-in `measurements` adapter, whose format is the JSON Schema served at /formats/measurements/schema.json (embedded here as the `Measurements` schema). The codes it accepts are listed at /formats/measurements/codes.',
    roles: ['device', 'vendor'],
    servedBy: 'ingest',
    requestBody: {
      required: true,
      content: { 'application/json': { schema: schema('Measurements') }, 'application/fhir+json': { schema: schema('Measurements') } },
    },
    responses: {}, // the responses of POST /ingest/{adapter}, added below
  },
  {
    method: 'post',
    path: '/ingest/{adapter}',
    operationId: 'ingest',
    tag: 'ingest',
    summary: 'Send a device payload to an adapter: translated, validated and queued for the EHR',
    description:
      'Answers 202 only once the jobs are durably queued in Redis. A refusal for good (unknown adapter, untranslatable, invalid, device policy) is an OperationOutcome and is kept in the refusal store, its id in `X-Refused-Id`; a refusal that can succeed later (503 queue full or Redis down, 429 held-reading cap) carries `Retry-After` and is not kept: send it again.',
    roles: ['device', 'vendor'],
    servedBy: 'ingest',
    requestBody: {
      required: true,
      description: "The adapter's payload: a JSON object or array (the format of each adapter; see GET /api/adapters).",
      content: { 'application/json': { schema: schema('JsonPayload') }, 'application/fhir+json': { schema: schema('JsonPayload') } },
    },
    responses: {
      202: json('Queued (or held for review: `status: held`).', schema('IngestAccepted')),
      400: response('BadRequest'),
      403: response('RefusedForGood'),
      404: response('RefusedForGood'),
      413: response('PayloadTooLarge'),
      415: response('UnsupportedMediaType'),
      422: response('RefusedForGood'),
      429: response('TooManyRequests'),
    },
  },
  {
    method: 'post',
    path: '/hl7v2',
    operationId: 'ingestHl7v2',
    tag: 'hl7v2',
    summary: 'Send HL7v2 messages (one, several, or a batch) over HTTP; answered with the ACKs',
    description:
      'The HL7v2 session of the MLLP listener over HTTP: the same ACK rules, duplicate detection and refusal store. Errors of the HL7 content are in the ACK (AE/AR with ERR segments), not in the HTTP status.',
    roles: ['device', 'vendor'],
    servedBy: 'ingest',
    requestBody: {
      required: true,
      content: Object.fromEntries(
        [
          'x-application/hl7-v2+er7',
          'application/hl7-v2+er7',
          'application/hl7-v2',
          'text/plain',
          'application/edi-hl7',
          'application/octet-stream',
        ].map((t) => [
          t,
          { schema: { type: 'string', description: 'ER7-encoded message(s), segments separated by CR (LF and CRLF are accepted)' } },
        ]),
      ),
    },
    responses: {
      200: {
        description: 'The ACK message(s), in the character set of the message (text/plain when sent as text/plain).',
        headers: { 'X-HL7-Ack-Code': { description: 'The ACK codes (MSA-1), comma-separated: AA, AE, AR, CA, CE, CR.', schema: str } },
        content: { 'x-application/hl7-v2+er7': { schema: str }, 'text/plain': { schema: str } },
      },
      204: noContent('The message asked for no acknowledgement.'),
      400: response('BadRequest'),
      413: response('PayloadTooLarge'),
      415: response('UnsupportedMediaType'),
    },
  },
  {
    method: 'get',
    path: '/formats/measurements/schema.json',
    operationId: 'getMeasurementsSchema',
    tag: 'formats',
    summary: 'The JSON Schema (2020-12) of the measurements format',
    servedBy: 'ingest',
    responses: { 200: { description: 'The schema.', content: { 'application/schema+json': { schema: { type: 'object' } } } } },
  },
  {
    method: 'get',
    path: '/formats/measurements/codes',
    operationId: 'getMeasurementsCodes',
    tag: 'formats',
    summary: 'Every code the measurements format accepts, with its LOINC, MDC and UCUM unit',
    servedBy: 'ingest',
    responses: { 200: json('The codes.', arrayOf(schema('AcceptedCode'))) },
  },

  // ---- devices ----
  {
    method: 'post',
    path: '/api/devices',
    operationId: 'registerDevice',
    tag: 'devices',
    summary: 'Register a device (state registered)',
    roles: ['vendor'],
    requestBody: jsonBody(schema('DeviceRegistration')),
    responses: {
      201: json('Registered.', schema('DeviceView')),
      409: response('Conflict'),
      415: response('UnsupportedMediaType'),
      422: response('Unprocessable'),
    },
  },
  {
    method: 'post',
    path: '/api/devices/bulk',
    operationId: 'registerDevices',
    tag: 'devices',
    summary: 'Register many devices: a JSON array, { devices: [...] }, or CSV with a header row; a result per row',
    roles: ['vendor'],
    requestBody: {
      required: true,
      content: {
        'application/json': {
          schema: {
            anyOf: [arrayOf(schema('DeviceRegistration')), obj({ devices: arrayOf(schema('DeviceRegistration')) }, ['devices'])],
          },
        },
        'text/csv': {
          schema: {
            type: 'string',
            description: 'A header row (id, serialNumber, eui64, udi, manufacturer, model, type, adapter, ...) and a row per device',
          },
        },
      },
    },
    responses: {
      200: json('One result per row (at most 10000 rows).', schema('BulkRegistration')),
      400: response('BadRequest'),
      415: response('UnsupportedMediaType'),
    },
  },
  {
    method: 'get',
    path: '/api/devices',
    operationId: 'listDevices',
    tag: 'devices',
    summary: 'List devices (a vendor sees its own)',
    roles: ['operator', 'vendor'],
    query: [
      q('state', 'Lifecycle state.', { type: 'string', enum: ['registered', 'active', 'suspended', 'decommissioned'] }),
      q('status', 'Connectivity.', { type: 'string', enum: ['online', 'offline', 'unknown'] }),
      q('type', 'Device type.'),
      q('vendor', 'Vendor id.'),
      q('adapter', 'Adapter id.'),
      q('lastSeenBefore', 'Last seen before (ISO 8601), or never.', dateTime),
      q('lastSeenAfter', 'Last seen after (ISO 8601).', dateTime),
    ],
    responses: { 200: json('The devices.', arrayOf(schema('DeviceView'))), 400: response('BadRequest') },
  },
  {
    method: 'get',
    path: '/api/devices/me/config',
    operationId: 'getOwnDeviceConfig',
    tag: 'devices',
    summary: "A device's own configuration (device credential); the fetch is recorded",
    roles: ['device'],
    responses: { 200: json('The configuration.', schema('DeviceConfigFetched')), 404: response('NotFound') },
  },
  {
    method: 'get',
    path: '/api/devices/{id}',
    operationId: 'getDevice',
    tag: 'devices',
    summary: 'One device with its telemetry and the count of held readings',
    roles: ['operator', 'vendor'],
    responses: { 200: json('The device.', schema('DeviceView')), 404: response('NotFound') },
  },
  ...(['activate', 'suspend', 'decommission'] as const).map(
    (action): Op => ({
      method: 'post',
      path: `/api/devices/{id}/${action}`,
      operationId: `${action}Device`,
      tag: 'devices',
      summary: {
        activate: 'Activate: its data is accepted (held readings are released to the queue)',
        suspend: 'Suspend: its data is refused until it is activated again',
        decommission: 'Decommission (terminal): its keys are revoked, its assignment and held data wiped',
      }[action],
      roles: ['operator', 'vendor'],
      responses: {
        200: json('The device after the transition.', schema('DeviceTransition')),
        404: response('NotFound'),
        409: response('Conflict'),
      },
    }),
  ),
  {
    method: 'put',
    path: '/api/devices/{id}/assignment',
    operationId: 'assignDevice',
    tag: 'devices',
    summary: 'Assign an active device to a patient and/or location (a field left out is kept, null clears it)',
    roles: ['operator'],
    requestBody: jsonBody(
      obj({
        patientId: { type: ['string', 'null'], minLength: 1, description: "The patient's identifier (PATIENT_IDENTIFIER_SYSTEM)" },
        locationId: { type: ['string', 'null'], minLength: 1 },
      }),
      undefined,
      false,
    ),
    responses: {
      200: json('The device record.', schema('DeviceRecordWithJob')),
      400: response('BadRequest'),
      404: response('NotFound'),
      409: response('Conflict'),
      415: response('UnsupportedMediaType'),
    },
  },
  {
    method: 'delete',
    path: '/api/devices/{id}/assignment',
    operationId: 'unassignDevice',
    tag: 'devices',
    summary: 'Clear the patient and location assignment',
    roles: ['operator'],
    responses: { 200: json('The device record.', schema('DeviceRecordWithJob')), 404: response('NotFound'), 409: response('Conflict') },
  },
  {
    method: 'get',
    path: '/api/devices/{id}/held',
    operationId: 'listHeldReadings',
    tag: 'devices',
    summary: 'Readings held for review while the device is not active (PHI: operators only)',
    roles: ['operator'],
    query: PAGING,
    responses: {
      200: json(
        'The held readings.',
        obj({ deviceId: str, state: str, total: int, readings: arrayOf({ type: 'object' }) }, ['deviceId', 'state', 'total', 'readings']),
      ),
      404: response('NotFound'),
    },
  },
  {
    method: 'get',
    path: '/api/devices/{id}/decommission-report',
    operationId: 'getDecommissionReport',
    tag: 'devices',
    summary: 'What decommissioning revoked and wiped',
    roles: ['operator', 'vendor'],
    responses: { 200: json('The report.', schema('DecommissionReport')), 404: response('NotFound') },
  },
  {
    method: 'put',
    path: '/api/devices/{id}/config',
    operationId: 'setDeviceConfig',
    tag: 'devices',
    summary: 'Set the configuration the device fetches (a new version)',
    roles: ['operator', 'vendor'],
    requestBody: jsonBody(
      { type: 'object', description: 'The settings, as an object or as { "settings": { ... } }', examples: [{ samplingIntervalS: 60 }] },
      'The settings object.',
    ),
    responses: {
      200: json('The stored configuration.', schema('DeviceConfig')),
      400: response('BadRequest'),
      404: response('NotFound'),
      409: response('Conflict'),
      415: response('UnsupportedMediaType'),
    },
  },
  {
    method: 'get',
    path: '/api/devices/{id}/config',
    operationId: 'getDeviceConfig',
    tag: 'devices',
    summary: "The device's configuration and when it last fetched it",
    roles: ['operator', 'vendor'],
    responses: { 200: json('The configuration.', schema('DeviceConfigFetched')), 404: response('NotFound') },
  },

  // ---- credentials ----
  {
    method: 'post',
    path: '/api/devices/{id}/credentials',
    operationId: 'issueDeviceKey',
    tag: 'credentials',
    summary: 'Issue a device key (shown once)',
    roles: ['vendor'],
    responses: { 201: json('The new key.', schema('IssuedDeviceKey')), 404: response('NotFound') },
  },
  {
    method: 'get',
    path: '/api/devices/{id}/credentials',
    operationId: 'listDeviceKeys',
    tag: 'credentials',
    summary: "The device's keys (without the keys themselves)",
    roles: ['operator', 'vendor'],
    responses: { 200: json('The credentials.', arrayOf(schema('Credential'))), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/devices/{id}/credentials/{keyId}/rotate',
    operationId: 'rotateDeviceKey',
    tag: 'credentials',
    summary: 'A new device key; the old one keeps working for CREDENTIAL_ROTATION_OVERLAP_MS',
    roles: ['vendor'],
    responses: { 201: json('The new key.', schema('RotatedKey')), 404: response('NotFound'), 409: response('Conflict') },
  },
  {
    method: 'delete',
    path: '/api/devices/{id}/credentials/{keyId}',
    operationId: 'revokeDeviceKey',
    tag: 'credentials',
    summary: 'Revoke a device key at once',
    roles: ['vendor'],
    responses: { 204: noContent('Revoked.'), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/vendors',
    operationId: 'registerVendor',
    tag: 'vendors',
    summary: 'Register a vendor',
    roles: [],
    requestBody: jsonBody(schema('VendorRegistration')),
    responses: {
      201: json('Registered.', schema('Vendor')),
      400: response('BadRequest'),
      409: response('Conflict'),
      415: response('UnsupportedMediaType'),
    },
  },
  {
    method: 'get',
    path: '/api/vendors',
    operationId: 'listVendors',
    tag: 'vendors',
    summary: 'List vendors',
    roles: ['operator'],
    responses: { 200: json('The vendors.', arrayOf(schema('Vendor'))) },
  },
  {
    method: 'post',
    path: '/api/vendors/{id}/credentials',
    operationId: 'issueVendorKey',
    tag: 'vendors',
    summary: 'Issue a vendor key (shown once; with an HMAC signing secret when CREDENTIAL_SIGNING_KEY is set)',
    roles: [],
    responses: { 201: json('The new key.', schema('IssuedVendorKey')), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/vendors/{id}/credentials/{keyId}/rotate',
    operationId: 'rotateVendorKey',
    tag: 'vendors',
    summary: 'A new vendor key (a vendor may rotate its own); the old one keeps working for the overlap',
    roles: ['vendor'],
    responses: { 201: json('The new key.', schema('RotatedKey')), 404: response('NotFound'), 409: response('Conflict') },
  },
  {
    method: 'delete',
    path: '/api/vendors/{id}/credentials/{keyId}',
    operationId: 'revokeVendorKey',
    tag: 'vendors',
    summary: 'Revoke a vendor key at once',
    roles: [],
    responses: { 204: noContent('Revoked.'), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/operators/credentials',
    operationId: 'issueOperatorKey',
    tag: 'operators',
    summary: 'Issue an operator key (shown once)',
    roles: [],
    requestBody: jsonBody(
      obj({
        name: {
          type: 'string',
          pattern: '^[A-Za-z0-9._@-]{1,64}$',
          description: 'Names the operator in the audit trail (default "operator")',
        },
      }),
      'Optional; an empty body is accepted.',
      false,
    ),
    responses: {
      201: json('The new key.', schema('IssuedOperatorKey')),
      400: response('BadRequest'),
      415: response('UnsupportedMediaType'),
    },
  },
  {
    method: 'post',
    path: '/api/operators/credentials/{keyId}/rotate',
    operationId: 'rotateOperatorKey',
    tag: 'operators',
    summary: 'A new operator key; the old one keeps working for the overlap',
    roles: [],
    responses: { 201: json('The new key.', schema('RotatedKey')), 404: response('NotFound'), 409: response('Conflict') },
  },
  {
    method: 'delete',
    path: '/api/operators/credentials/{keyId}',
    operationId: 'revokeOperatorKey',
    tag: 'operators',
    summary: 'Revoke an operator key at once',
    roles: [],
    responses: { 204: noContent('Revoked.'), 404: response('NotFound') },
  },
  {
    method: 'get',
    path: '/api/audit',
    operationId: 'searchAudit',
    tag: 'audit',
    summary: 'Search the audit trail (FHIR AuditEvents, IHE BALP), newest first',
    roles: ['operator'],
    query: [
      q('action', 'AuditEvent.action (C, R, U, D, E).'),
      q('kind', 'The event kind (device-registered, credential-revoked, access-refused, ...); alias `subtype`.'),
      q('subtype', 'Alias of kind.'),
      q('agent', 'Who acted (role:id).'),
      q('entity', 'What it concerned (a device id, a key id, ...).'),
      q('outcome', 'AuditEvent.outcome (0 success, 4 minor failure, ...).'),
      q('since', 'At or after (ISO 8601); alias `date`.', dateTime),
      q('date', 'Alias of since.', dateTime),
      q('until', 'At or before (ISO 8601).', dateTime),
      q('limit', 'At most this many (1 to 1000, default 100).', { type: 'integer', minimum: 1, maximum: 1000 }),
    ],
    responses: { 200: fhirJson('A searchset Bundle of AuditEvents.', schema('Bundle')), 400: response('BadRequest') },
  },

  // ---- adapters ----
  {
    method: 'get',
    path: '/api/adapters',
    operationId: 'listAdapters',
    tag: 'adapters',
    summary: 'Every adapter: built-in, mappings folder, plugin, registered (a vendor sees its own registered ones)',
    roles: ['operator', 'vendor'],
    responses: { 200: json('The adapters.', arrayOf(schema('AdapterView'))) },
  },
  {
    method: 'post',
    path: '/api/adapters',
    operationId: 'registerAdapter',
    tag: 'adapters',
    summary: 'Register a declarative mapping (or a new version of it); every sample must translate into valid resources',
    roles: ['vendor'],
    requestBody: jsonBody(schema('AdapterRegistration')),
    responses: {
      201: json('Registered.', schema('AdapterRegistered'), {
        Location: { description: 'The adapter: /api/adapters/{id}.', schema: str },
      }),
      400: response('BadRequest'),
      409: response('Conflict'),
      415: response('UnsupportedMediaType'),
      422: response('Unprocessable'),
    },
  },
  {
    method: 'get',
    path: '/api/adapters/mappings',
    operationId: 'getMappingsFolder',
    tag: 'adapters',
    summary: 'The mappings folder: what was loaded last and every error with its file and JSON path',
    roles: ['operator', 'vendor'],
    responses: { 200: json('The last load.', schema('MappingsLoad')) },
  },
  {
    method: 'post',
    path: '/api/adapters/reload',
    operationId: 'reloadMappings',
    tag: 'adapters',
    summary: 'Reload the mappings folder now',
    roles: [],
    responses: { 200: json('The load.', schema('MappingsLoad')) },
  },
  {
    method: 'get',
    path: '/api/adapters/{id}',
    operationId: 'getAdapter',
    tag: 'adapters',
    summary: 'One adapter (a registered one with every version)',
    roles: ['operator', 'vendor'],
    responses: { 200: json('The adapter.', schema('AdapterView')), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/adapters/{id}/$translate',
    operationId: 'translateWithAdapter',
    tag: 'adapters',
    summary: 'Dry run: translate and validate a payload; nothing is queued',
    description: 'Query parameters are passed to the adapter as message attributes (as an MQTT topic or an HTTP header would be).',
    roles: ['operator', 'vendor'],
    requestBody: jsonBody(schema('JsonPayload'), "A payload in the adapter's format."),
    responses: {
      200: json('The transaction Bundles the gateway would send, with warnings.', schema('TranslateResult')),
      400: response('BadRequest'),
      404: response('NotFound'),
      409: response('Conflict'),
      415: response('UnsupportedMediaType'),
      422: response('Unprocessable'),
    },
  },
  ...(['enable', 'disable'] as const).map(
    (action): Op => ({
      method: 'post',
      path: `/api/adapters/{id}/${action}`,
      operationId: `${action}Adapter`,
      tag: 'adapters',
      summary: action === 'enable' ? 'Enable a registered adapter' : 'Disable a registered adapter (its payloads are refused)',
      roles: ['vendor'],
      responses: { 200: json('The adapter.', schema('AdapterView')), 403: response('Forbidden'), 404: response('NotFound') },
    }),
  ),
  {
    method: 'delete',
    path: '/api/adapters/{id}',
    operationId: 'deleteAdapter',
    tag: 'adapters',
    summary: 'Delete a registered adapter and its versions',
    roles: ['vendor'],
    responses: { 204: noContent('Deleted.'), 404: response('NotFound') },
  },

  // ---- refusals ----
  {
    method: 'get',
    path: '/api/refusals',
    operationId: 'listRefusals',
    tag: 'refusals',
    summary: 'Input refused for good, every channel, newest first, without payloads',
    roles: ['operator'],
    query: [...REFUSAL_FILTERS, ...PAGING],
    responses: { 200: json('A page of refusals.', schema('RefusalPage')), 400: response('BadRequest') },
  },
  {
    method: 'get',
    path: '/api/refusals/{id}',
    operationId: 'getRefusal',
    tag: 'refusals',
    summary: 'One refusal with its payload (PHI)',
    roles: ['operator'],
    responses: { 200: json('The refusal.', schema('Refusal')), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/refusals/replay',
    operationId: 'replayRefusals',
    tag: 'refusals',
    summary: 'Replay every refusal matching a filter (at most `limit`, 500), each through its original channel',
    description:
      'Entries are replayed in turn. Past the first one answered 503 (`unavailable`: Redis did not settle it within ENQUEUE_TIMEOUT_MS, is not reachable, or the queue is full), the rest are reported `not-tried`: the request answers within about one bound, not one per entry.',
    roles: ['operator'],
    requestBody: jsonBody(schema('RefusalReplayFilter'), undefined, false),
    responses: { 200: json('A result per entry.', schema('BulkReplayResult')), 400: response('BadRequest') },
  },
  {
    method: 'post',
    path: '/api/refusals/{id}/replay',
    operationId: 'replayRefusal',
    tag: 'refusals',
    summary: 'Replay one refusal through its original channel, as its original sender',
    description:
      'Answers within ENQUEUE_TIMEOUT_MS, as a channel answers a sender: when Redis does not read the entry or queue the message in time, 503 with `Retry-After`, and the entry is kept.',
    roles: ['operator'],
    responses: {
      202: json('Accepted this time (the entry is removed).', schema('ReplayResult')),
      404: response('NotFound'),
      422: json('Refused again (the entry is updated with the new reason).', schema('ReplayResult')),
    },
  },
  {
    method: 'delete',
    path: '/api/refusals/{id}',
    operationId: 'deleteRefusal',
    tag: 'refusals',
    summary: 'Discard a refusal',
    roles: [],
    responses: { 204: noContent('Deleted.'), 404: response('NotFound') },
  },
  {
    method: 'get',
    path: '/api/refused',
    operationId: 'listRefusedJsonLegacy',
    tag: 'refusals',
    summary: 'HTTP JSON refusals (deprecated: GET /api/refusals?format=json)',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: ['operator'],
    query: PAGING,
    responses: { 200: json('A page.', obj({ total: int, items: arrayOf({ type: 'object' }) }, ['total', 'items']), deprecationHeaders) },
  },
  {
    method: 'get',
    path: '/api/refused/{id}',
    operationId: 'getRefusedJsonLegacy',
    tag: 'refusals',
    summary: 'One HTTP JSON refusal (deprecated: GET /api/refusals/{id})',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: ['operator'],
    responses: { 200: json('The entry with its body.', { type: 'object' }, deprecationHeaders), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/refused/{id}/replay',
    operationId: 'replayRefusedJsonLegacy',
    tag: 'refusals',
    summary: 'Replay an HTTP JSON refusal (deprecated: POST /api/refusals/{id}/replay)',
    description: `${DEPRECATED_ALIAS} Refused again: the new OperationOutcome with its status.`,
    deprecated: true,
    roles: ['operator'],
    responses: {
      202: json('Accepted: the ingest answer.', schema('IngestAccepted'), deprecationHeaders),
      404: response('NotFound'),
      422: response('RefusedForGood'),
    },
  },
  {
    method: 'delete',
    path: '/api/refused/{id}',
    operationId: 'deleteRefusedJsonLegacy',
    tag: 'refusals',
    summary: 'Discard an HTTP JSON refusal (deprecated: DELETE /api/refusals/{id})',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: [],
    responses: { 204: noContent('Deleted.'), 404: response('NotFound') },
  },
  {
    method: 'get',
    path: '/api/rejected',
    operationId: 'listRejectedHl7Legacy',
    tag: 'refusals',
    summary: 'Refused HL7v2 messages (deprecated: GET /api/refusals?format=hl7v2)',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: ['operator'],
    query: PAGING,
    responses: { 200: json('A page.', obj({ total: int, items: arrayOf({ type: 'object' }) }, ['total', 'items']), deprecationHeaders) },
  },
  {
    method: 'get',
    path: '/api/rejected/{id}',
    operationId: 'getRejectedHl7Legacy',
    tag: 'refusals',
    summary: 'One refused HL7v2 message (deprecated: GET /api/refusals/{id})',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: ['operator'],
    responses: { 200: json('The entry with the raw message.', { type: 'object' }, deprecationHeaders), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/rejected/{id}/replay',
    operationId: 'replayRejectedHl7Legacy',
    tag: 'refusals',
    summary: 'Replay a refused HL7v2 message (deprecated: POST /api/refusals/{id}/replay)',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: ['operator'],
    responses: {
      200: json(
        'The result (accepted or not) with the ACKs.',
        obj({ id: str, accepted: { type: 'boolean' }, result: str }),
        deprecationHeaders,
      ),
      404: response('NotFound'),
    },
  },
  {
    method: 'delete',
    path: '/api/rejected/{id}',
    operationId: 'deleteRejectedHl7Legacy',
    tag: 'refusals',
    summary: 'Discard a refused HL7v2 message (deprecated: DELETE /api/refusals/{id})',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: [],
    responses: { 204: noContent('Deleted.'), 404: response('NotFound') },
  },
  {
    method: 'get',
    path: '/api/mqtt/rejected',
    operationId: 'listRejectedMqttLegacy',
    tag: 'refusals',
    summary: 'Refused MQTT messages with their payloads (deprecated: GET /api/refusals?channel=mqtt)',
    description: DEPRECATED_ALIAS,
    deprecated: true,
    roles: [],
    query: [PAGING[1]],
    responses: { 200: json('The entries, newest first.', arrayOf({ type: 'object' }), deprecationHeaders) },
  },

  // ---- dead letters ----
  {
    method: 'get',
    path: '/api/dead-letters',
    operationId: 'listDeadLetters',
    tag: 'dead-letters',
    summary: 'Jobs the EHR refused for good or that ran out of attempts, newest first',
    roles: ['operator'],
    query: [...PAGING, ...DESTINATION],
    responses: { 200: json('A page of dead letters (without the jobs).', schema('DeadLetterPage')), 400: response('BadRequest') },
  },
  {
    method: 'get',
    path: '/api/dead-letters/{id}',
    operationId: 'getDeadLetter',
    tag: 'dead-letters',
    summary: 'One dead letter with its job',
    roles: ['operator'],
    query: DESTINATION,
    responses: { 200: json('The dead letter.', schema('DeadLetter')), 400: response('BadRequest'), 404: response('NotFound') },
  },
  {
    method: 'post',
    path: '/api/dead-letters/{id}/retry',
    operationId: 'retryDeadLetter',
    tag: 'dead-letters',
    summary: 'Queue the job again for its destination (once the cause is fixed)',
    roles: ['operator'],
    query: DESTINATION,
    responses: {
      202: json('Queued.', obj({ jobId: str, destination: str }, ['jobId'])),
      400: response('BadRequest'),
      404: response('NotFound'),
    },
  },
  {
    method: 'delete',
    path: '/api/dead-letters/{id}',
    operationId: 'deleteDeadLetter',
    tag: 'dead-letters',
    summary: 'Discard a dead letter',
    roles: [],
    query: DESTINATION,
    responses: { 204: noContent('Deleted.'), 400: response('BadRequest'), 404: response('NotFound') },
  },

  // ---- MQTT ----
  {
    method: 'get',
    path: '/api/mqtt/status',
    operationId: 'getMqttStatus',
    tag: 'mqtt',
    summary: 'The MQTT channel: broker, subscriptions, connection and counts',
    roles: ['operator'],
    servedBy: 'mqtt',
    responses: { 200: json('The channel.', schema('MqttStatus')) },
  },

  // ---- the sandbox EHR: a FHIR R4 base, described by its main interactions ----
  {
    method: 'get',
    path: '/sandbox/fhir/metadata',
    operationId: 'sandboxCapabilities',
    tag: 'sandbox',
    summary: 'The CapabilityStatement of the sandbox EHR',
    servedBy: 'sandbox',
    // With access control on (ADMIN_API_KEY), the sandbox holds delivered PHI: operator or admin (src/access/sandbox.ts).
    roles: ['operator'],
    responses: { 200: fhir('The CapabilityStatement.') },
  },
  {
    method: 'get',
    path: '/sandbox/fhir/.well-known/smart-configuration',
    operationId: 'sandboxSmartConfiguration',
    tag: 'sandbox',
    summary: 'SMART configuration: the token endpoint (SANDBOX_AUTH=smart)',
    servedBy: 'sandbox',
    responses: { 200: json('The SMART configuration.', { type: 'object' }) },
  },
  {
    method: 'post',
    path: '/sandbox/fhir/auth/token',
    operationId: 'sandboxToken',
    tag: 'sandbox',
    summary: 'OAuth2 client credentials (SANDBOX_AUTH=smart): a JWT client assertion or a client secret for an access token',
    servedBy: 'sandbox',
    requestBody: { required: true, content: { 'application/x-www-form-urlencoded': { schema: { type: 'object' } } } },
    responses: {
      200: json('An access token.', { type: 'object' }),
      400: json('An OAuth2 error (invalid_client, invalid_scope, ...).', { type: 'object' }),
    },
  },
  {
    method: 'post',
    path: '/sandbox/fhir',
    operationId: 'sandboxTransaction',
    tag: 'sandbox',
    summary: 'A transaction or batch Bundle (what the delivery worker sends)',
    servedBy: 'sandbox',
    roles: ['operator'],
    requestBody: { required: true, content: { 'application/fhir+json': { schema: schema('Bundle') } } },
    responses: { 200: fhir('The transaction-response Bundle.', schema('Bundle')), 400: response('FhirError') },
  },
  {
    method: 'get',
    path: '/sandbox/fhir/{type}',
    operationId: 'sandboxSearch',
    tag: 'sandbox',
    summary: 'Search (chained parameters are refused with 400)',
    servedBy: 'sandbox',
    roles: ['operator'],
    responses: { 200: fhir('A searchset Bundle.', schema('Bundle')), 400: response('FhirError') },
  },
  {
    method: 'post',
    path: '/sandbox/fhir/{type}',
    operationId: 'sandboxCreate',
    tag: 'sandbox',
    summary: 'Create (conditional with If-None-Exist)',
    servedBy: 'sandbox',
    roles: ['operator'],
    requestBody: { required: true, content: { 'application/fhir+json': { schema: schema('Resource') } } },
    responses: { 201: fhir('Created.'), 200: fhir('Exists already (conditional create).'), 400: response('FhirError') },
  },
  {
    method: 'get',
    path: '/sandbox/fhir/{type}/{id}',
    operationId: 'sandboxRead',
    tag: 'sandbox',
    summary: 'Read',
    servedBy: 'sandbox',
    roles: ['operator'],
    responses: { 200: fhir('The resource.'), 404: response('FhirError') },
  },
  {
    method: 'put',
    path: '/sandbox/fhir/{type}/{id}',
    operationId: 'sandboxUpdate',
    tag: 'sandbox',
    summary: 'Update',
    servedBy: 'sandbox',
    roles: ['operator'],
    requestBody: { required: true, content: { 'application/fhir+json': { schema: schema('Resource') } } },
    responses: { 200: fhir('Updated.'), 201: fhir('Created.'), 400: response('FhirError') },
  },
];

function fhirJson(description: string, s: Json): Json {
  return { description, content: { 'application/fhir+json': { schema: s }, 'application/json': { schema: s } } };
}

// The measurements route answers as the generic ingest route does.
const ingestOp = OPERATIONS.find((o) => o.operationId === 'ingest');
const measurementsOp = OPERATIONS.find((o) => o.operationId === 'ingestMeasurements');
if (ingestOp && measurementsOp) measurementsOp.responses = ingestOp.responses;

// ---- components --------------------------------------------------------------------------------------------------

const outcomeResponse = (description: string, headers?: Json): Json => ({
  description,
  ...(headers ? { headers } : {}),
  content: { 'application/fhir+json': { schema: schema('OperationOutcome') } },
});

const RESPONSES: Record<string, Json> = {
  BadRequest: outcomeResponse('The request is malformed (not JSON, a wrong parameter): an OperationOutcome saying what.'),
  Unauthorized: outcomeResponse('No credential, or one that is unknown, revoked or expired.', {
    'WWW-Authenticate': { description: '`Bearer`.', schema: str },
  }),
  Forbidden: outcomeResponse('The credential may not use this route, or not on this resource.'),
  NotFound: outcomeResponse('No such resource.'),
  Conflict: outcomeResponse(
    'The request conflicts with the state (an id taken, a transition not allowed); sending it again will not help.',
  ),
  PayloadTooLarge: outcomeResponse('The body is larger than INGEST_MAX_BODY_BYTES.'),
  UnsupportedMediaType: outcomeResponse('The Content-Type is not one the route reads.'),
  Unprocessable: outcomeResponse('The content is not acceptable: every issue with its location.'),
  RefusedForGood: outcomeResponse('Refused for good and kept in the refusal store (/api/refusals), its id in X-Refused-Id.', {
    'X-Refused-Id': { description: 'The id of the stored refusal (GET /api/refusals/{id}).', schema: str },
  }),
  TooManyRequests: outcomeResponse(
    'Too many requests for this credential (RATE_LIMIT_PER_MINUTE), or the device is at its held-reading cap.',
    {
      'Retry-After': { $ref: '#/components/headers/RetryAfter' },
    },
  ),
  Unavailable: outcomeResponse('Redis is not reachable, or the queue is full: nothing was kept, send it again later.', {
    'Retry-After': { $ref: '#/components/headers/RetryAfter' },
  }),
  Error: outcomeResponse('Any other refusal or failure (500: an internal error, retryable).'),
  FhirError: fhir('An OperationOutcome from the FHIR engine.', schema('OperationOutcome')),
};

const readingCounts = obj({ readings: int, devices: int, observations: int, patients: int, codes: arrayOf(str) });
const deviceRecordProps: Record<string, Json> = {
  id: str,
  identifiers: obj({ serialNumber: str, eui64: str, udi: str }),
  manufacturer: str,
  model: str,
  type: str,
  adapter: str,
  vendor: str,
  owner: str,
  department: str,
  firmwareVersion: str,
  state: { type: 'string', enum: ['registered', 'active', 'suspended', 'decommissioned'] },
  assignment: obj({ patientId: str, locationId: str, assignedAt: dateTime }),
  autoRegistered: { type: 'string', enum: ['hold', 'accept'] },
  createdAt: dateTime,
  updatedAt: dateTime,
  stateChangedAt: dateTime,
  createdBy: str,
  version: { type: 'integer' },
};
const deviceRecordRequired = ['id', 'identifiers', 'state', 'createdAt', 'updatedAt', 'stateChangedAt', 'createdBy', 'version'];
const telemetry = obj(
  {
    lastSeen: dateTime,
    lastChannel: str,
    messages: int,
    errors: int,
    battery: { type: 'number' },
    batteryAt: dateTime,
    signal: { type: 'number' },
    signalAt: dateTime,
  },
  ['messages', 'errors'],
);
const deviceView = obj(
  {
    ...deviceRecordProps,
    connectivity: { type: 'string', enum: ['online', 'offline', 'unknown'] },
    offlineAfterMs: int,
    telemetry,
    heldReadings: int,
  },
  [...deviceRecordRequired, 'connectivity', 'offlineAfterMs', 'telemetry'],
);

function schemas(measurementsSchema: object): Record<string, Json> {
  return {
    OperationOutcome: obj(
      {
        resourceType: { const: 'OperationOutcome' },
        issue: {
          type: 'array',
          minItems: 1,
          items: obj(
            {
              severity: { type: 'string', enum: ['fatal', 'error', 'warning', 'information'] },
              code: str,
              diagnostics: str,
              expression: arrayOf(str),
              details: { type: 'object' },
            },
            ['severity', 'code'],
          ),
        },
      },
      ['resourceType', 'issue'],
      { description: 'A FHIR R4 OperationOutcome: every refusal of the gateway is one.' },
    ),
    Resource: obj({ resourceType: str, id: str }, ['resourceType'], { description: 'A FHIR R4 resource.' }),
    Bundle: obj(
      { resourceType: { const: 'Bundle' }, type: str, total: int, entry: arrayOf(obj({ fullUrl: str, resource: schema('Resource') })) },
      ['resourceType', 'type'],
      { description: 'A FHIR R4 Bundle.' },
    ),
    JsonPayload: { description: 'A JSON payload in the format of the adapter.', type: ['object', 'array'] },
    Measurements: measurementsSchema as Json,
    Health: obj({ status: { const: 'ok' } }, ['status']),
    Ready: obj({ status: { const: 'ready' } }, ['status']),
    Status: obj(
      {
        version: str,
        role: { type: 'string', enum: ['all', 'ingest', 'worker'] },
        fhirBaseUrl: { type: ['string', 'null'], description: 'Without credentials' },
        sandbox: { type: 'boolean' },
        unknownPatientPolicy: str,
        redis: obj({ status: str, embedded: { type: 'boolean' } }, ['status', 'embedded']),
        queue: {
          anyOf: [
            obj({ name: str, waiting: int, active: int, delayed: int, completed: int, failed: int, paused: int, maxDepth: int }, [
              'name',
              'waiting',
              'active',
              'delayed',
              'failed',
              'maxDepth',
            ]),
            { type: 'null' },
          ],
          description: 'null while Redis does not answer',
        },
        deadLetters: { type: ['integer', 'null'], minimum: 0 },
        adapters: arrayOf(str),
      },
      ['version', 'role', 'fhirBaseUrl', 'sandbox', 'unknownPatientPolicy', 'redis', 'queue', 'deadLetters', 'adapters'],
    ),
    IngestAccepted: obj(
      {
        jobIds: { ...arrayOf(str), description: 'The delivery jobs (deterministic: a resend gets the same ids)' },
        readings: { ...int, description: 'Readings queued for delivery' },
        observations: int,
        held: { type: 'integer', minimum: 1, description: 'Readings held for review (the device is not active yet)' },
        status: { const: 'held' },
        detail: str,
      },
      ['jobIds', 'readings', 'observations'],
    ),
    AcceptedCode: obj(
      {
        code: { type: 'string', description: 'What to send as `code`' },
        mdc: obj({ code: { type: 'integer' }, refId: str }, ['code', 'refId']),
        loinc: obj({ code: str, display: str }, ['code', 'display']),
        unit: { type: 'string', description: 'The UCUM unit readings are converted to' },
        category: str,
      },
      ['code', 'category'],
    ),
    DeviceRegistration: obj(
      {
        id: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$', description: 'The device id its payloads carry' },
        identifiers: obj({
          serialNumber: str,
          eui64: { type: 'string', description: 'IEEE EUI-64: 16 hex digits, with or without - or : between pairs' },
          udi: str,
        }),
        manufacturer: str,
        model: str,
        type: { type: 'string', description: 'Selects DEVICE_OFFLINE_AFTER_MS_BY_TYPE' },
        adapter: { type: 'string', description: 'A registered adapter id' },
        vendor: { type: 'string', description: "A vendor credential's own vendor (filled in for it)" },
        owner: str,
        department: str,
        firmwareVersion: str,
      },
      ['id'],
    ),
    DeviceRecord: obj(deviceRecordProps, deviceRecordRequired),
    DeviceRecordWithJob: obj({ ...deviceRecordProps, fhirJobId: { type: ['string', 'null'] } }, [...deviceRecordRequired, 'fhirJobId']),
    DeviceView: deviceView,
    DeviceTransition: {
      allOf: [
        deviceView,
        obj({
          fhirJobId: { type: ['string', 'null'], description: 'The job writing the FHIR Device' },
          releasedReadings: { ...int, description: 'Held readings released by activation' },
          decommissionReport: schema('DecommissionReport'),
        }),
      ],
    },
    BulkRegistration: obj(
      {
        created: int,
        failed: int,
        results: arrayOf(
          obj({ row: { type: 'integer', minimum: 1 }, id: str, status: { type: 'integer' }, state: str, error: str }, ['row', 'status']),
        ),
      },
      ['created', 'failed', 'results'],
    ),
    DecommissionReport: obj(
      {
        deviceId: str,
        decommissionedAt: dateTime,
        by: obj({ role: str, id: str, keyId: str }),
        previousState: str,
        wiped: { type: 'object' },
      },
      ['deviceId', 'decommissionedAt'],
    ),
    DeviceConfig: obj(
      {
        version: { type: 'integer', minimum: 1 },
        settings: { type: 'object' },
        updatedAt: dateTime,
        updatedBy: str,
        lastFetchedAt: dateTime,
        lastFetchedBy: str,
      },
      ['version', 'settings', 'updatedAt', 'updatedBy'],
    ),
    DeviceConfigFetched: { allOf: [obj({ deviceId: str }, ['deviceId']), schema('DeviceConfig')] },
    Credential: obj(
      {
        keyId: str,
        role: { type: 'string', enum: ['device', 'vendor', 'operator'] },
        owner: str,
        vendorId: str,
        createdAt: dateTime,
        createdBy: str,
        expiresAt: { ...dateTime, description: 'Set on rotation: the key stops working then' },
        rotatedTo: str,
      },
      ['keyId', 'role', 'owner', 'createdAt', 'createdBy'],
    ),
    IssuedDeviceKey: obj(
      { keyId: str, key: { type: 'string', description: 'Shown only now' }, role: { const: 'device' }, deviceId: str, note: str },
      ['keyId', 'key', 'role', 'deviceId'],
    ),
    IssuedVendorKey: obj(
      {
        keyId: str,
        key: { type: 'string', description: 'Shown only now' },
        signingSecret: { type: 'string', description: 'The HMAC signing secret (CREDENTIAL_SIGNING_KEY set), shown only now' },
        role: { const: 'vendor' },
        vendorId: str,
      },
      ['keyId', 'key', 'role', 'vendorId'],
    ),
    IssuedOperatorKey: obj({ keyId: str, key: { type: 'string', description: 'Shown only now' }, role: { const: 'operator' }, name: str }, [
      'keyId',
      'key',
      'role',
      'name',
    ]),
    RotatedKey: obj({ keyId: str, key: str, signingSecret: str, previousKeyId: str, previousExpiresAt: dateTime }, [
      'keyId',
      'key',
      'previousKeyId',
      'previousExpiresAt',
    ]),
    VendorRegistration: obj(
      {
        id: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' },
        name: str,
        adapters: { ...arrayOf(str), description: 'The adapters its credentials may send to (empty or absent: any)' },
      },
      ['id'],
    ),
    Vendor: obj({ id: str, name: str, adapters: arrayOf(str), createdAt: dateTime, createdBy: str }, [
      'id',
      'adapters',
      'createdAt',
      'createdBy',
    ]),
    AdapterView: obj(
      {
        id: str,
        description: str,
        source: { type: 'string', enum: ['built-in', 'folder', 'plugin', 'registered'] },
        vendor: str,
        version: { type: ['integer', 'null'] },
        enabled: { type: 'boolean' },
        error: str,
        createdAt: dateTime,
        updatedAt: dateTime,
        versions: arrayOf({ type: 'object' }),
      },
      ['id', 'source', 'enabled'],
    ),
    AdapterRegistration: obj(
      {
        id: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
        vendor: { type: 'string', description: "Required for an admin; a vendor credential's own vendor" },
        description: str,
        deviceMapping: { type: 'object', description: 'An iomt-fhir CollectionContent template' },
        fhirMapping: { type: 'object', description: 'An iomt-fhir CollectionFhir template' },
        samples: { type: 'array', minItems: 1, description: 'Sample payloads; each must translate into valid resources' },
        enabled: { type: 'boolean', default: true },
      },
      ['id', 'deviceMapping', 'fhirMapping', 'samples'],
    ),
    AdapterRegistered: obj(
      {
        id: str,
        vendor: str,
        version: { type: 'integer' },
        enabled: { type: 'boolean' },
        samples: arrayOf(obj({ sample: int, resources: arrayOf(schema('Resource')), patient: { type: 'object' } })),
        outcome: schema('OperationOutcome'),
      },
      ['id', 'vendor', 'version', 'enabled', 'samples', 'outcome'],
    ),
    TranslateResult: obj(
      { adapter: str, version: { type: ['integer', 'null'] }, bundles: arrayOf(schema('Bundle')), outcome: schema('OperationOutcome') },
      ['adapter', 'version', 'bundles', 'outcome'],
    ),
    MappingsLoad: obj(
      { dir: str, at: str, loaded: arrayOf(str), errors: arrayOf(obj({ file: str, path: str, message: str }, ['file', 'message'])) },
      ['at', 'loaded', 'errors'],
    ),
    RefusalSummary: obj(
      {
        id: str,
        channel: str,
        format: { type: 'string', enum: ['json', 'hl7v2', 'text'] },
        adapterId: str,
        receivedAt: dateTime,
        status: { type: 'integer' },
        reason: str,
        outcome: schema('OperationOutcome'),
        deviceIds: arrayOf(str),
        hl7: { type: 'object' },
        mqtt: obj({ topic: str, deviceId: str }),
        attributes: { type: 'object', additionalProperties: str },
        principal: { type: 'object' },
        replays: int,
        lastReplayAt: dateTime,
      },
      ['id', 'channel', 'format', 'receivedAt', 'status', 'reason', 'outcome'],
    ),
    Refusal: {
      allOf: [
        schema('RefusalSummary'),
        obj({ body: { description: 'format json: the parsed body' }, raw: str, rawBase64: str, charset: str }),
      ],
    },
    RefusalPage: obj({ total: int, items: arrayOf(schema('RefusalSummary')) }, ['total', 'items']),
    RefusalReplayFilter: obj({
      channel: str,
      format: str,
      adapter: str,
      deviceId: str,
      controlId: str,
      reason: str,
      since: dateTime,
      until: dateTime,
      limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 },
    }),
    ReplayResult: obj(
      {
        id: str,
        accepted: { type: 'boolean' },
        result: { type: 'string', description: 'accepted, refused, duplicate, ...' },
        refusal: obj({ status: { type: 'integer' }, reason: str, outcome: schema('OperationOutcome') }),
        detail: { type: 'object' },
      },
      ['id', 'accepted', 'result'],
    ),
    BulkReplayResult: obj(
      {
        matched: int,
        replayed: int,
        accepted: int,
        refused: int,
        results: arrayOf(
          obj(
            {
              id: str,
              accepted: { type: 'boolean' },
              result: {
                type: 'string',
                description:
                  "the channel's result (accepted, refused, duplicate, …); `unavailable`: answered 503 (Redis did not settle it within ENQUEUE_TIMEOUT_MS, is not reachable, or the queue is full), and the entries after it are `not-tried` (each would meet the same): replay them again later",
              },
              status: { type: 'integer' },
              error: str,
            },
            ['id', 'accepted', 'result'],
          ),
        ),
      },
      ['matched', 'replayed', 'accepted', 'refused', 'results'],
    ),
    DeadLetterSummary: obj(
      {
        id: str,
        jobId: str,
        reason: str,
        kind: { type: 'string', enum: ['rejected', 'exhausted', 'policy'] },
        httpStatus: { type: 'integer' },
        outcome: schema('OperationOutcome'),
        attempts: int,
        deadAt: dateTime,
        destination: str,
        adapterId: str,
        channel: str,
        receivedAt: dateTime,
        summary: readingCounts,
      },
      ['id', 'jobId', 'reason', 'kind', 'attempts', 'deadAt'],
    ),
    DeadLetter: obj(
      {
        id: str,
        jobId: str,
        reason: str,
        kind: { type: 'string', enum: ['rejected', 'exhausted', 'policy'] },
        httpStatus: { type: 'integer' },
        outcome: schema('OperationOutcome'),
        attempts: int,
        deadAt: dateTime,
        destination: str,
        job: { type: 'object', description: 'The delivery job: its readings and their FHIR resources (PHI)' },
      },
      ['id', 'jobId', 'reason', 'kind', 'attempts', 'deadAt', 'job'],
    ),
    DeadLetterPage: obj({ destination: str, total: int, items: arrayOf(schema('DeadLetterSummary')) }, ['total', 'items']),
    MqttStatus: obj(
      {
        broker: str,
        clientId: str,
        connected: { type: 'boolean' },
        topics: arrayOf({ type: 'object' }),
        errorTopic: str,
        counts: { type: 'object' },
        lastError: { type: ['string', 'null'] },
      },
      ['broker', 'clientId', 'connected', 'topics', 'counts', 'lastError'],
    ),
  };
}

const TAGS: { name: string; description: string }[] = [
  { name: 'health', description: 'Liveness, readiness and this document (no credential)' },
  { name: 'status', description: 'What the gateway says about itself' },
  { name: 'ingest', description: 'Device data over HTTP: acknowledged only once durably queued' },
  { name: 'hl7v2', description: 'HL7v2 over HTTP (the MLLP listener speaks the same session)' },
  { name: 'formats', description: "The gateway's own format, for the people who send it (no credential)" },
  { name: 'devices', description: 'The device registry and lifecycle' },
  { name: 'credentials', description: 'Device keys' },
  { name: 'vendors', description: 'Vendors and their keys' },
  { name: 'operators', description: "Operators' keys" },
  { name: 'audit', description: 'The audit trail' },
  { name: 'adapters', description: 'Adapters: listing, registration of declarative mappings, dry runs' },
  { name: 'refusals', description: 'Input refused for good, every channel: inspect, replay, discard' },
  { name: 'dead-letters', description: 'Jobs the EHR refused for good: inspect, retry, discard' },
  { name: 'mqtt', description: 'The MQTT channel' },
  {
    name: 'sandbox',
    description:
      'The embedded sandbox EHR (FHIR_BASE_URL unset): a FHIR R4 server (medplum) at /sandbox/fhir, not for clinical use. Described as a FHIR base by its main interactions; see its CapabilityStatement.',
  },
];

const served = (op: Op, o: OpenApiOptions): boolean => {
  switch (op.servedBy ?? 'any') {
    case 'any':
      return true;
    case 'ingest':
      return o.ingest;
    case 'sandbox':
      return o.sandbox;
    case 'mqtt':
      return o.mqtt;
    case 'jwks':
      return !!o.jwks;
  }
};

function operationObject(op: Op): Json {
  const pathParams = [...op.path.matchAll(/\{([^}]+)\}/g)].map((m) => pathParameter(op.path, m[1]));
  const parameters = [...pathParams, ...(op.query ?? [])];
  const secured = op.roles !== undefined;
  const roles = secured ? ['admin', ...(op.roles ?? [])] : [];
  const responses: Record<string, Json> = { ...op.responses };
  if (secured) {
    responses[401] ??= response('Unauthorized');
    responses[403] ??= response('Forbidden');
    responses[429] ??= response('TooManyRequests');
  }
  if (secured || op.servedBy === 'ingest') responses[503] ??= response('Unavailable');
  responses.default = response('Error');
  return {
    operationId: op.operationId,
    tags: [op.tag],
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    ...(op.deprecated ? { deprecated: true } : {}),
    ...(parameters.length ? { parameters } : {}),
    ...(op.requestBody ? { requestBody: op.requestBody } : {}),
    responses,
    // Roles as the scopes of the requirement (OpenAPI 3.1: role names for schemes other than OAuth); admin may always.
    security: secured
      ? [{ apiKey: roles }, ...(op.roles?.includes('vendor') ? [{ hmacKeyId: roles, hmacTimestamp: [], hmacSignature: [] }] : [])]
      : [],
  };
}

/** The document for a process that serves what `options` says. */
export function openApiDocument(options: OpenApiOptions): Json {
  const paths: Record<string, Record<string, Json>> = {};
  for (const op of OPERATIONS) {
    if (!served(op, options)) continue;
    paths[op.path] ??= {};
    paths[op.path][op.method] = operationObject(op);
  }
  return {
    openapi: '3.1.1',
    info: {
      title: 'IoMT FHIR gateway',
      version: options.version,
      summary: 'Connected medical device data (vendor JSON, HL7v2) to FHIR R4, queued durably and delivered to the EHR',
      description:
        'Every refusal is a FHIR OperationOutcome (`application/fhir+json`) with its HTTP status; a 429 or 503 carries `Retry-After` and means: send the same request again later. This document lists the operations of the process that serves it (its role and options).',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    tags: TAGS,
    paths,
    components: {
      schemas: schemas(options.measurementsSchema),
      responses: RESPONSES,
      headers: {
        RetryAfter: { description: 'Seconds to wait before sending the same request again.', schema: { type: 'integer', minimum: 0 } },
      },
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description:
            'An API key: ADMIN_API_KEY (role admin), or a device, vendor or operator key the gateway issued. The scopes of a requirement are the roles that may call the operation. Without ADMIN_API_KEY the gateway treats every request as admin (development only; it warns at start-up).',
        },
        hmacKeyId: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Gateway-Key-Id',
          description:
            'HMAC-signed request (a vendor key with a signing secret): the key id. Used with X-Gateway-Timestamp and X-Gateway-Signature.',
        },
        hmacTimestamp: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Gateway-Timestamp',
          description: "HMAC-signed request: Unix time in seconds, within HMAC_WINDOW_S of the gateway's clock.",
        },
        hmacSignature: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Gateway-Signature',
          description:
            'HMAC-signed request: `v1=<hex HMAC-SHA256(signing secret, "<timestamp>\\n<METHOD>\\n<path?query>\\n<hex SHA-256 of the body>")>`; a signature is accepted once.',
        },
      },
    },
  };
}

/** GET /openapi.json (no credential: it describes the API, it holds no data). */
export function openApiRoutes(options: OpenApiOptions): Router {
  const body = JSON.stringify(openApiDocument(options));
  const router = express.Router();
  router.get('/openapi.json', (_req, res) => void res.type('application/json').send(body));
  return router;
}
