/**
 * docker-compose.yml, checked as far as it can be without a container engine (none runs here): it parses, the README's
 * curls work as written against it (the admin key is exported and reaches the gateway; unknown patients and devices
 * are accepted against the empty HAPI), the EHR has a health check the gateway waits for, and the header says how to
 * add plugins.
 */
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { REPO_ROOT } from '../helpers/harness.js';

interface Service {
  image?: string;
  user?: string;
  entrypoint?: string[];
  ports?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }> | string[];
  healthcheck?: { test: string[] };
  volumes?: string[];
  command?: string[];
}

describe('docker-compose.yml', () => {
  const text = readFileSync(`${REPO_ROOT}/docker-compose.yml`, 'utf8');
  const compose = parse(text, { merge: true }) as { services: Record<string, Service>; volumes: Record<string, unknown> };

  it('parses, with both gateway roles, Redis, the EHR, Prometheus and Grafana', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), [
      'ehr',
      'gateway-ingest',
      'gateway-worker',
      'grafana',
      'metrics-token',
      'prometheus',
      'redis',
    ]);
    assert.deepEqual(compose.services['gateway-ingest'].command, ['start', '--role', 'ingest']);
  });

  it('the admin key is exported in the instructions, so the curl after `compose up` sends the same key', () => {
    assert.match(text, /^#\s+export ADMIN_API_KEY=/m);
    assert.match(compose.services['gateway-ingest'].environment?.ADMIN_API_KEY ?? '', /^\$\{ADMIN_API_KEY:\?/);
  });

  it("the README's readings are delivered to the empty HAPI: unknown patients are created, unknown devices accepted", () => {
    for (const name of ['gateway-ingest', 'gateway-worker']) {
      const env = compose.services[name].environment ?? {};
      assert.equal(env.UNKNOWN_PATIENT_POLICY, '${UNKNOWN_PATIENT_POLICY:-create}', name);
      assert.equal(env.UNKNOWN_DEVICE_POLICY, '${UNKNOWN_DEVICE_POLICY:-accept}', name);
    }
  });

  it('HAPI has a health check (its image has no shell: the JVM runs a checked-in source file) and the gateway waits for it', () => {
    const ehr = compose.services.ehr;
    assert.deepEqual(ehr.healthcheck?.test, ['CMD', 'java', '/health/Health.java']);
    const mounted = (ehr.volumes ?? []).find((v) => v.endsWith(':/health/Health.java:ro'));
    assert.ok(mounted && existsSync(`${REPO_ROOT}/${mounted.split(':')[0]}`), 'the checked file exists');
    for (const name of ['gateway-ingest', 'gateway-worker'])
      assert.equal((compose.services[name].depends_on as Record<string, { condition: string }>).ehr.condition, 'service_healthy', name);
  });

  it('says how plugins get into the image', () => {
    assert.match(text, /PLUGINS_DIR=\/plugins/);
  });
});
