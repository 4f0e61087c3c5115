/**
 * Durability of the acknowledgement: the private redis-server (REDIS_URL unset) writes its AOF to disk every second by
 * default, or before each write is answered with REDIS_APPENDFSYNC=always; a process that asks for `always` on a
 * Redis another gateway process started gets it there too.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import IORedis from 'ioredis';
import { startEhr, startGateway, type TestEhr, type TestGateway } from '../helpers/harness.js';

async function appendfsync(dir: string): Promise<string> {
  const port = Number(readFileSync(join(dir, 'redis.port'), 'utf8'));
  const c = new IORedis.default(port, '127.0.0.1');
  try {
    const [, value] = (await c.config('GET', 'appendfsync')) as [string, string];
    return value;
  } finally {
    c.disconnect();
  }
}

describe('durability of the acknowledgement: appendfsync of the private Redis', function () {
  this.timeout(60000);
  let ehr: TestEhr;
  const dirs: string[] = [];
  const gateways: TestGateway[] = [];
  const start = async (dir: string, env: Record<string, string> = {}) => {
    const gw = await startGateway({ REDIS_URL: undefined, REDIS_DATA_DIR: dir, FHIR_BASE_URL: ehr.url, ...env }, 'ingest');
    gateways.push(gw);
    return gw;
  };
  const folder = () => {
    const d = mkdtempSync(join(tmpdir(), 'gw-fsync-'));
    dirs.push(d);
    return d;
  };

  before(async () => {
    ehr = await startEhr();
  });
  afterEach(async () => {
    for (const gw of gateways.splice(0).reverse()) await gw.stop();
  });
  after(async () => {
    await ehr.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('everysec by default', async () => {
    const dir = folder();
    await start(dir);
    assert.equal(await appendfsync(dir), 'everysec');
  });

  it('always when REDIS_APPENDFSYNC=always', async () => {
    const dir = folder();
    await start(dir, { REDIS_APPENDFSYNC: 'always' });
    assert.equal(await appendfsync(dir), 'always');
  });

  it('a process that asks for always on a shared private Redis gets it', async () => {
    const dir = folder();
    await start(dir);
    assert.equal(await appendfsync(dir), 'everysec');
    const second = await start(dir, { REDIS_APPENDFSYNC: 'always' });
    assert.match(second.logs.join('\n'), /sharing the private redis-server/);
    assert.equal(await appendfsync(dir), 'always');
  });
});
