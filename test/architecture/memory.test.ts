/**
 * What a gateway process loads, per role (docs/scaling.md, "Memory"). Large modules are loaded where a role or a
 * feature needs them, not by every process: the `hl7v2` package (about 130 MiB of RSS) only for a message the fast
 * parser declines, the sandbox's FHIR engine only with the sandbox on, bull-board at an admin's first visit, re2-wasm
 * at the first pattern. Each case runs the CLI in a child process whose loader hooks list every module it loads
 * (test/helpers/module-log.mjs).
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { readAck } from '../../src/hl7v2/ack.js';
import { freePort } from '../../src/queue/embedded-redis.js';
import { type ChildGateway, REPO_ROOT, spawnGateway, startRedis, type TestRedis } from '../helpers/harness.js';
import { pcdMessage, TestClient } from '../hl7v2/helpers.js';

const PRELOAD = join(REPO_ROOT, 'test/helpers/module-log.mjs');

/** The packages (under node_modules) among the modules a process loaded. */
function packagesIn(log: string): Set<string> {
  const out = new Set<string>();
  for (const url of log.split('\n')) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (m) out.add(m[1]);
  }
  return out;
}

const OPTIONAL = ['hl7v2', 'hl7v2-dictionary', '@medplum/fhir-router', '@bull-board/api', '@bull-board/express', 're2-wasm'];

describe('memory: what each role loads', function () {
  this.timeout(90_000);
  let redis: TestRedis;
  let dir: string;
  const running: ChildGateway[] = [];

  before(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'gw-modules-'));
  });
  after(async () => {
    await Promise.all(running.map((g) => g.stop()));
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function start(role: 'worker' | 'ingest', env: Record<string, string> = {}): { gateway: ChildGateway; loaded: () => Set<string> } {
    const log = join(dir, `${role}-${running.length}.log`);
    const gateway = spawnGateway(
      {
        REDIS_URL: redis.url,
        FHIR_BASE_URL: 'http://127.0.0.1:9/fhir',
        QUEUE_NAME: `modules-${role}-${running.length}`,
        LOG_LEVEL: 'info',
        MODULE_LOG: log,
        ...env,
      },
      role,
      ['--import', PRELOAD],
    );
    running.push(gateway);
    return { gateway, loaded: () => packagesIn(readFileSync(log, 'utf8')) };
  }

  it('a worker (FHIR_BASE_URL set) loads neither the hl7v2 package, the sandbox engine, bull-board nor re2-wasm', async () => {
    const { gateway, loaded } = start('worker');
    await gateway.url;
    const packages = loaded();
    assert.ok(packages.has('@medplum/core') && packages.has('bull'), `the log lists the packages it loaded: ${[...packages].join(', ')}`);
    assert.deepEqual(
      OPTIONAL.filter((p) => packages.has(p)),
      [],
    );
  });

  it('an ingest process with MLLP on loads the hl7v2 package at the first message that needs it, and acknowledges that message once it is queued', async () => {
    const mllpPort = await freePort();
    const queueName = `modules-ingest-${running.length}`;
    const { gateway, loaded } = start('ingest', { MLLP_PORT: String(mllpPort), MLLP_ALLOW_ANY_SENDER: 'true', QUEUE_NAME: queueName });
    await gateway.url;
    assert.deepEqual(
      OPTIONAL.filter((p) => loaded().has(p)),
      [],
    );
    const c = await TestClient.connect(mllpPort);
    const waiting = new Redis(redis.url);
    try {
      // An ordinary PCD-01 message: the fast path parses it, the package stays unloaded.
      c.send(pcdMessage('MEM-1'));
      assert.equal(readAck(await c.next()).code, 'AA');
      assert.equal(loaded().has('hl7v2'), false);
      // A sub-component that is exactly "" is the package's to read (hl7v2/parse.ts, splitFast): loaded now.
      c.send(pcdMessage('MEM-2').replace('Muster^Erika', 'Muster&""^Erika'));
      const ack = readAck(await c.next());
      assert.deepEqual([ack.code, ack.controlId], ['AA', 'MEM-2']);
      assert.ok(loaded().has('hl7v2') && loaded().has('hl7v2-dictionary'));
      // AA only after the job is in Redis: both messages' jobs wait there (this process delivers nothing).
      assert.equal(await waiting.llen(`gw:${queueName}:wait`), 2);
      // Still no sandbox engine, bull-board or re2-wasm.
      assert.deepEqual(
        OPTIONAL.filter((p) => !p.startsWith('hl7v2') && loaded().has(p)),
        [],
      );
    } finally {
      c.close();
      waiting.disconnect();
    }
  });
});
