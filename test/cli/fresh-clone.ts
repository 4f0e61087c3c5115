/**
 * A fresh clone of the repository for tests that run the project as a new user does: the files git knows (tracked, and
 * new ones not ignored; as they are in the working tree) copied to a temporary folder, node_modules linked as
 * `npm install` would have filled it, and optionally built (`npm run build`, what `npm start` does first). Nothing of
 * the checkout (dist/, data/, .env) leaks in, and nothing the commands write leaks out.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../helpers/harness.js';

export interface FreshClone {
  dir: string;
  remove(): void;
}

export function freshClone(options: { build?: boolean } = {}): FreshClone {
  const dir = mkdtempSync(join(tmpdir(), 'gw-clone-'));
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  })
    .split('\0')
    .filter(Boolean);
  for (const f of files) {
    const from = join(REPO_ROOT, f);
    if (!existsSync(from)) continue; // deleted in the working tree, not yet committed
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    copyFileSync(from, join(dir, f));
  }
  symlinkSync(realpathSync(join(REPO_ROOT, 'node_modules')), join(dir, 'node_modules'), 'dir');
  if (options.build) {
    const r = spawnSync('npm', ['run', 'build'], { cwd: dir, encoding: 'utf8', timeout: 120000 });
    assert.equal(r.status, 0, `npm run build in the clone failed:\n${r.stdout}${r.stderr}`);
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
