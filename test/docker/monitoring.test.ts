/**
 * Prometheus and Grafana in docker-compose.yml, checked without a container engine: the services and their ports,
 * every file they mount exists, Prometheus scrapes both gateway processes with the operator key the metrics-token
 * service writes (the script itself is run against a real gateway), Grafana's provisioning points at Prometheus and
 * at the dashboard folder, and every PromQL expression of the dashboard names only metrics that a real gateway,
 * scraped after real traffic, exports.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import {
  eventually,
  postJson,
  REPO_ROOT,
  startEhr,
  startGateway,
  startRedis,
  type TestEhr,
  type TestGateway,
  type TestRedis,
} from '../helpers/harness.js';
import { parseExposition } from '../observability/exposition.js';

interface Service {
  image?: string;
  user?: string;
  entrypoint?: string[];
  command?: string[];
  ports?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }> | string[];
}

const compose = parse(readFileSync(`${REPO_ROOT}/docker-compose.yml`, 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const read = (path: string) => readFileSync(join(REPO_ROOT, path), 'utf8');
const mounts = (service: string) =>
  (compose.services[service].volumes ?? []).map((v) => {
    const [source, target, mode] = v.split(':');
    return { source, target, mode };
  });
const mountOf = (service: string, target: string) => mounts(service).find((m) => target === m.target || target.startsWith(`${m.target}/`));
const dashboard = JSON.parse(read('docker/grafana/dashboards/iomt-gateway.json'));

interface Panel {
  type: string;
  title: string;
  datasource?: { uid?: string };
  targets?: { expr: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}
const panels: Panel[] = (dashboard.panels as Panel[]).flatMap((p) => [p, ...(p.panels ?? [])]);
const expressions: string[] = [
  ...panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
  ...(dashboard.templating?.list ?? []).map((v: { query: { query: string } }) => v.query.query),
];

const PROMQL_WORDS = new Set(
  'sum min max avg count stddev stdvar topk bottomk quantile count_values group by without on ignoring group_left group_right bool and or unless offset rate irate increase delta idelta deriv histogram_quantile label_values label_replace clamp_min clamp_max abs ceil floor round time vector scalar sort sort_desc absent changes resets predict_linear max_over_time min_over_time avg_over_time sum_over_time last_over_time le'.split(
    ' ',
  ),
);

/** The metric names a PromQL expression selects: strings, label matchers, ranges and grouping labels taken out. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\blabel_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)/g, ' $1 ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] || PROMQL_WORDS.has(m[1])) continue; // a function call, or a keyword
    names.add(m[1]);
  }
  return [...names];
}

describe('docker-compose.yml: Prometheus and Grafana', () => {
  it('both are images at a fixed version, published on 127.0.0.1 only, with their data in named volumes', () => {
    const prom = compose.services.prometheus;
    const graf = compose.services.grafana;
    assert.match(prom.image ?? '', /^prom\/prometheus:v\d+\.\d+\.\d+$/);
    assert.match(graf.image ?? '', /^grafana\/grafana:\d+\.\d+\.\d+$/);
    assert.deepEqual(prom.ports, ['127.0.0.1:9090:9090']);
    assert.deepEqual(graf.ports, ['127.0.0.1:3000:3000']);
    for (const name of ['prometheus', 'grafana', 'metrics-token'])
      for (const m of mounts(name)) {
        if (m.source.startsWith('./')) assert.ok(existsSync(join(REPO_ROOT, m.source)), `${name} mounts ${m.source}, which exists`);
        else assert.ok(m.source in compose.volumes, `${name}: the volume ${m.source} is declared`);
      }
  });

  it('Prometheus scrapes /metrics of both gateway processes with the operator key the metrics-token service writes', () => {
    const prom = compose.services.prometheus;
    const configPath = (prom.command ?? []).find((a) => a.startsWith('--config.file='))?.split('=')[1] ?? '';
    const config = mountOf('prometheus', configPath);
    assert.equal(config?.source, './docker/prometheus/prometheus.yml');
    const cfg = parse(read('docker/prometheus/prometheus.yml')) as {
      scrape_configs: {
        metrics_path: string;
        authorization: { type: string; credentials_file: string };
        static_configs: { targets: string[] }[];
      }[];
    };
    const [job] = cfg.scrape_configs;
    assert.equal(job.metrics_path, '/metrics');
    const targets = job.static_configs.flatMap((c) => c.targets).sort();
    assert.deepEqual(targets, ['gateway-ingest:8080', 'gateway-worker:8080']);
    assert.match(read('docker/Dockerfile'), /PORT=8080/, 'the image listens on 8080');
    for (const t of targets) assert.equal(compose.services[t.split(':')[0]].environment?.PORT, undefined, `${t}: PORT left at 8080`);
    // The token file: the same named volume, written by metrics-token, read by Prometheus.
    assert.equal(job.authorization.type, 'Bearer');
    const tokenMount = mountOf('prometheus', job.authorization.credentials_file);
    assert.ok(tokenMount && !tokenMount.source.startsWith('./'), 'the token is in a named volume');
    const writer = compose.services['metrics-token'];
    const tokenFile = writer.environment?.TOKEN_FILE ?? '';
    assert.equal(mountOf('metrics-token', tokenFile)?.source, tokenMount.source);
    assert.equal(
      tokenFile.slice(tokenFile.lastIndexOf('/')),
      job.authorization.credentials_file.slice(job.authorization.credentials_file.lastIndexOf('/')),
    );
    assert.equal(writer.environment?.ADMIN_API_KEY, '${ADMIN_API_KEY:?set ADMIN_API_KEY (a long random string)}');
    assert.equal(mountOf('metrics-token', writer.entrypoint?.[1] ?? '')?.source, './docker/prometheus/metrics-token.sh');
    assert.deepEqual(prom.depends_on, { 'metrics-token': { condition: 'service_completed_successfully' } });
  });

  it('Grafana provisions the Prometheus data source and the dashboard folder, and opens the dashboard at home', () => {
    const graf = compose.services.grafana;
    const ds = parse(read('docker/grafana/provisioning/datasources/prometheus.yml')) as {
      datasources: { uid: string; type: string; url: string; isDefault: boolean }[];
    };
    assert.deepEqual(
      ds.datasources.map((d) => [d.uid, d.type, d.url, d.isDefault]),
      [['prometheus', 'prometheus', 'http://prometheus:9090', true]],
    );
    assert.equal(mountOf('grafana', '/etc/grafana/provisioning/datasources')?.source, './docker/grafana/provisioning/datasources');
    assert.equal(mountOf('grafana', '/etc/grafana/provisioning/dashboards')?.source, './docker/grafana/provisioning/dashboards');
    const providers = parse(read('docker/grafana/provisioning/dashboards/iomt-gateway.yml')) as {
      providers: { type: string; options: { path: string } }[];
    };
    const path = providers.providers[0].options.path;
    const folder = mountOf('grafana', path);
    assert.ok(folder && statSync(join(REPO_ROOT, folder.source)).isDirectory(), 'the provider path is the mounted dashboards folder');
    const home = graf.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH ?? '';
    assert.ok(existsSync(join(REPO_ROOT, folder.source, home.slice(path.length))), `home dashboard ${home} exists`);
    assert.equal(graf.environment?.GF_SECURITY_ADMIN_PASSWORD, '${GRAFANA_ADMIN_PASSWORD:-admin}');
  });

  it('the dashboard parses, uses the provisioned data source, and has the panels operators need', () => {
    assert.equal(dashboard.uid, 'iomt-gateway');
    for (const p of panels.filter((x) => x.type !== 'row')) {
      assert.equal(p.datasource?.uid, 'prometheus', p.title);
      assert.ok(p.targets?.length, `${p.title} has queries`);
    }
    const all = expressions.join('\n');
    for (const needed of [
      'iomt_ingest_readings_total',
      'iomt_ingest_refused_total',
      'iomt_queue_jobs',
      'iomt_delivery_readings_total',
      'iomt_delivery_dead_letters_total',
      'histogram_quantile(0.5, sum by (le, destination) (rate(iomt_ingest_to_ehr_latency_seconds_bucket',
      'histogram_quantile(0.99, sum by (le, destination) (rate(iomt_ingest_to_ehr_latency_seconds_bucket',
      'sum by (le, destination, outcome) (rate(iomt_ehr_request_duration_seconds_bucket',
      'iomt_queue_oldest_waiting_age_seconds',
      'iomt_destination_breaker_state',
      'iomt_devices)',
      'iomt_devices_connectivity',
      'iomt_refusals_total',
    ])
      assert.ok(all.includes(needed), needed);
  });

  it('the PromQL name extraction finds metric names and nothing else', () => {
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.99, sum by (le, destination) (rate(iomt_a_bucket{x=~"$v", y="a b"}[$__rate_interval]))) * 2 + max(iomt_b)',
      ),
      ['iomt_a_bucket', 'iomt_b'],
    );
    assert.deepEqual(metricNames('label_values(iomt_c_total, channel)'), ['iomt_c_total']);
  });

  describe('against a real gateway after real traffic', function () {
    this.timeout(60000);
    const ADMIN = 'compose-admin-key-0123456789abcdef';
    let redis: TestRedis;
    let ehr: TestEhr;
    let gw: TestGateway;
    let dir: string;
    before(async () => {
      redis = await startRedis();
      ehr = await startEhr();
      gw = await startGateway({ REDIS_URL: redis.url, FHIR_BASE_URL: ehr.url, ADMIN_API_KEY: ADMIN, UNKNOWN_PATIENT_POLICY: 'create' });
      dir = mkdtempSync(join(tmpdir(), 'gw-metrics-token-'));
    });
    after(async () => {
      await gw?.stop();
      await ehr?.stop();
      await redis?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    const runTokenScript = (tokenFile: string) =>
      promisify(execFile)('sh', [join(REPO_ROOT, 'docker/prometheus/metrics-token.sh')], {
        env: { PATH: process.env.PATH, ADMIN_API_KEY: ADMIN, GATEWAY_URL: gw.url, TOKEN_FILE: tokenFile },
      });
    const scrapeWith = (token: string) => fetch(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });

    it('the metrics-token script issues an operator key that reads /metrics, keeps it while it works, replaces a dead one', async () => {
      const file = join(dir, 'metrics-token');
      const first = await runTokenScript(file);
      assert.match(first.stdout, /issued/);
      const key = readFileSync(file, 'utf8');
      assert.ok(key.length > 20 && key !== ADMIN);
      assert.equal((await scrapeWith(key)).status, 200);
      assert.equal(
        (await fetch(`${gw.url}/api/devices/x/credentials`, { headers: { authorization: `Bearer ${key}` }, method: 'POST' })).status,
        403,
        'an operator key, not an admin one',
      );
      assert.equal(statSync(file).mode & 0o777, 0o644, 'readable by Prometheus, another user');
      assert.match((await runTokenScript(file)).stdout, /kept/);
      assert.equal(readFileSync(file, 'utf8'), key);
      writeFileSync(file, 'revoked-or-garbage');
      assert.match((await runTokenScript(file)).stdout, /issued/);
      assert.equal((await scrapeWith(readFileSync(file, 'utf8'))).status, 200);
    });

    it('every metric name in the dashboard is one the gateway exports', async () => {
      const r = await postJson(
        `${gw.url}/ingest/measurements`,
        {
          deviceId: 'DASH-1',
          patientId: 'MRN-DASH',
          timestamp: '2026-11-23T10:00:00Z',
          measurements: [{ code: 'MDC_PULS_OXIM_SAT_O2', value: 97, unit: '%' }],
        },
        { authorization: `Bearer ${ADMIN}` },
      );
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const exported = await eventually(
        async () => {
          const e = parseExposition(await (await scrapeWith(ADMIN)).text());
          return e.samples.some((s) => s.name === 'iomt_ingest_to_ehr_latency_seconds_count') ? e : undefined;
        },
        30000,
        'the reading delivered',
      );
      const known = (name: string) => {
        const family = exported.familyOf(name);
        return family !== undefined && (family === name || exported.families.get(family)?.type === 'histogram');
      };
      const names = new Set(expressions.flatMap(metricNames));
      assert.ok(names.size >= 15, [...names].join(' '));
      for (const name of names) assert.ok(known(name), `the dashboard asks for ${name}, which the gateway does not export`);
      for (const expr of expressions)
        for (const m of expr.matchAll(/(\w+)_bucket\b/g))
          assert.equal(exported.families.get(m[1])?.type, 'histogram', `${m[1]}_bucket in: ${expr}`);
    });
  });
});

describe('docker/Dockerfile: the runtime image', () => {
  it('sets what the gateway runs best with: production, 0.0.0.0:8080, and two malloc arenas (docs/scaling.md, Memory)', () => {
    const dockerfile = read('docker/Dockerfile');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    const env = new Map(
      [...runtime.matchAll(/^ENV ((?:.*\\\n)*.*)$/gm)]
        .flatMap((m) => m[1].replace(/\\\n/g, ' ').trim().split(/\s+/))
        .map((kv) => kv.split('=') as [string, string]),
    );
    assert.equal(env.get('NODE_ENV'), 'production');
    assert.equal(env.get('HOST'), '0.0.0.0');
    assert.equal(env.get('PORT'), '8080');
    assert.equal(env.get('MALLOC_ARENA_MAX'), '2', "glibc's arenas: 18-36 MiB of peak RSS");
  });
});
