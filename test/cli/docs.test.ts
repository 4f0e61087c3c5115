/**
 * The docs test: every shell example of README.md and docs/*.md runs, as written, against a real gateway, so that the
 * docs cannot drift from the code.
 *
 * How it runs. A fresh clone (the files git knows, node_modules linked as `npm install` leaves it; see fresh-clone.ts)
 * in a temporary folder; there the test runs `npm start` as README.md says (it builds, then starts the gateway with its
 * embedded defaults on 127.0.0.1:8080 and MLLP 2575, a private redis-server and the sandbox EHR, data in data/). Then
 * README.md and each docs/*.md file in turn: its shell blocks in order, each with `bash` (`set -eo pipefail`) in the
 * clone, the variables a block exports (and the folder it ends in) carried to the next block of the same file.
 *
 * The convention the docs follow (also in docs/architecture.md, "Where to add things"):
 *  - A shell example is a fenced block tagged `sh` (or `bash`, `shell`). It runs, and must exit 0.
 *  - `# → <status> <text>` on its own line after a curl command states the answer: the HTTP status must be <status>, and
 *    the pieces of <text> between `…` must appear in the body, in order. A curl without one must answer 2xx.
 *  - A block that cannot run here (a container engine, a package manager, a real EHR, a long-running server, the test
 *    suite itself) has `<!-- docs-test: skip (why) -->` as the last non-blank line before it. The test lists every
 *    skipped block with its reason (as pending tests) and runs everything else.
 *  - A fenced block without a tag that starts with a command, an inline `curl …`, and a bare `iomt-gateway …` command
 *    (not on the PATH after `npm install`: write `npx iomt-gateway …`) fail the test.
 * A failure names the file and line of the block (and of the failing command) and prints the block's output.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually, REPO_ROOT } from '../helpers/harness.js';
import { type FreshClone, freshClone } from './fresh-clone.js';

/** The documented addresses (README.md): the examples use them as written. */
const HTTP_PORT = 8080;
const MLLP_PORT = 2575;

const RUNNABLE = new Set(['sh', 'bash', 'shell']);
const MARKER = /^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$/;
const SKIP = /^skip\s*\((.+)\)$/;
const EXPECT = /^\s*#\s*→\s*(.*)$/;
/** A line that is a command: a known program (or VAR=value before one). */
const COMMAND = /^\s*(\$\s+)?([A-Z_][A-Z0-9_]*=\S*\s+)*(curl|npx|npm|node|iomt-gateway|export|docker|git|cd|openssl|mosquitto_\w+)\b/;
const BARE_CLI = /^\s*([A-Z_][A-Z0-9_]*=\S*\s+)*iomt-gateway\s/;

interface Block {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  text: string;
  skip?: string;
}

interface DocsFile {
  file: string;
  blocks: Block[];
  /** Problems with the file's examples as such (untagged commands, stray markers). */
  problems: string[];
}

function parse(file: string): DocsFile {
  const lines = readFileSync(join(REPO_ROOT, file), 'utf8').split('\n');
  const blocks: Block[] = [];
  const problems: string[] = [];
  let open: { line: number; lang: string; indent: number; fence: string; body: string[] } | undefined;
  let marker: { line: number; text: string } | undefined;
  lines.forEach((raw, i) => {
    const n = i + 1;
    if (open) {
      if (raw.trim() === open.fence) {
        const text = open.body.map((l) => l.slice(Math.min(open!.indent, l.length - l.trimStart().length))).join('\n');
        const b: Block = { file, line: open.line, lang: open.lang, text };
        if (marker) {
          const m = SKIP.exec(marker.text);
          if (m) b.skip = m[1];
          else problems.push(`${file}:${marker.line}: unknown docs-test marker '${marker.text}': write <!-- docs-test: skip (why) -->`);
          marker = undefined;
        }
        blocks.push(b);
        open = undefined;
      } else open.body.push(raw);
      return;
    }
    const fence = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)/.exec(raw);
    if (fence) {
      open = { line: n, lang: fence[3].toLowerCase(), indent: fence[1].length, fence: fence[2], body: [] };
      return;
    }
    const m = MARKER.exec(raw);
    if (m) {
      if (marker) problems.push(`${file}:${marker.line}: docs-test marker not followed by a fenced block`);
      marker = { line: n, text: m[1] };
      return;
    }
    if (raw.trim() && marker) {
      problems.push(`${file}:${marker.line}: docs-test marker not followed by a fenced block`);
      marker = undefined;
    }
    for (const span of raw.matchAll(/`([^`]+)`/g)) {
      if (/^curl\s.*https?:\/\//.test(span[1]))
        problems.push(`${file}:${n}: an inline curl example (\`${span[1]}\`): put it in a fenced sh block, where it runs`);
      else if (BARE_CLI.test(span[1]))
        problems.push(`${file}:${n}: \`${span[1]}\`: iomt-gateway is not on the PATH after npm install: write npx iomt-gateway`);
    }
  });
  for (const b of blocks) {
    if (b.skip) continue;
    const first = b.text.split('\n').find((l) => l.trim() && !l.trim().startsWith('#'));
    if (!b.lang && first && COMMAND.test(first))
      problems.push(
        `${b.file}:${b.line}: a command in an untagged block: tag it \`\`\`sh (it then runs) or mark it <!-- docs-test: skip (why) -->`,
      );
    if (RUNNABLE.has(b.lang))
      b.text.split('\n').forEach((l, i) => {
        if (BARE_CLI.test(l))
          problems.push(`${b.file}:${b.line + 1 + i}: iomt-gateway is not on the PATH after npm install: write npx iomt-gateway`);
      });
  }
  return { file, blocks, problems };
}

const FILES: DocsFile[] = [
  'README.md',
  ...readdirSync(join(REPO_ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
].map(parse);

/** The lines bash runs before a block: the curl wrapper that records each answer, and the file's environment. */
function prelude(state: string): string {
  return [
    'set -eo pipefail',
    'exec 2>&1', // one stream, in the order it was written
    `__DT=${JSON.stringify(state)}`,
    'if [ -f "$__DT/env.sh" ]; then . "$__DT/env.sh"; fi',
    'if [ -f "$__DT/cwd" ]; then cd "$(cat "$__DT/cwd")"; fi',
    // curl as written, its status line and body kept per call (in files: a curl in a pipeline runs in a subshell).
    'curl() { local n rc=0; n=$(( $(wc -l < "$__DT/calls") + 1 )); command curl -D "$__DT/headers-$n" "$@" > "$__DT/body-$n" || rc=$?; cat "$__DT/body-$n"; echo "$(sed -n "s/^HTTP\\/[0-9.]* \\([0-9]*\\).*/\\1/p" "$__DT/headers-$n" 2>/dev/null | tail -n 1)" >> "$__DT/calls"; return $rc; }',
    '__docs_expect() { echo "$1 $(wc -l < "$__DT/calls")" >> "$__DT/expects"; }',
    `trap 'echo "__DOCS_FAILED_AT $LINENO" >&2' ERR`,
  ].join('\n');
}

interface Run {
  code: number | null;
  output: string;
  /** The block's line of the failing command, when bash said. */
  failedAt?: number;
  calls: string[];
  /** Expectation index → call number (1-based) it annotates. */
  expects: Map<number, number>;
  bodies: (n: number) => string;
}

function runBlock(b: Block, cwd: string, state: string, env: NodeJS.ProcessEnv): { run: Run; expected: string[] } {
  const expected: string[] = [];
  const body = b.text
    .split('\n')
    .map((l) => {
      const m = EXPECT.exec(l);
      if (!m) return l;
      expected.push(m[1].trim());
      return `__docs_expect ${expected.length - 1}`;
    })
    .join('\n');
  const pre = prelude(state);
  const tail = ['', `export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_)=' > "$__DT/env.sh" || true`, 'pwd > "$__DT/cwd"'].join('\n');
  writeFileSync(join(state, 'calls'), '');
  writeFileSync(join(state, 'expects'), '');
  writeFileSync(join(state, 'block.sh'), `${pre}\n${body}\n${tail}\n`);
  const r = spawnSync('bash', [join(state, 'block.sh')], { cwd, env, encoding: 'utf8', timeout: 120000 });
  const at = /__DOCS_FAILED_AT (\d+)/.exec(r.stdout ?? '');
  const preLines = pre.split('\n').length;
  const read = (f: string) => (existsSync(join(state, f)) ? readFileSync(join(state, f), 'utf8') : '');
  const expects = new Map<number, number>();
  for (const l of read('expects').split('\n').filter(Boolean)) {
    const [k, n] = l.split(' ').map(Number);
    expects.set(k, n);
  }
  return {
    expected,
    run: {
      code: r.status,
      output: `${(r.stdout ?? '').replace(/__DOCS_FAILED_AT \d+\n?/g, '')}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}`,
      failedAt: at ? b.line + Number(at[1]) - preLines : undefined,
      calls: read('calls').split('\n').slice(0, -1),
      expects,
      bodies: (n) => read(`body-${n}`),
    },
  };
}

/** `<status> <text with … between the pieces>` against a recorded answer: the problems, none when it matches. */
function compare(expected: string, status: string, body: string): string[] {
  const m = /^(\d{3})\b\s*(.*)$/.exec(expected);
  if (!m) return [`the expectation '# → ${expected}' does not start with an HTTP status`];
  const problems: string[] = [];
  if (status !== m[1]) problems.push(`expected HTTP ${m[1]}, got ${status || 'no answer'}`);
  let from = 0;
  for (const piece of m[2]
    .split(/…|\.\.\./)
    .map((p) => p.trim())
    .filter(Boolean)) {
    const at = body.indexOf(piece, from);
    if (at < 0) {
      problems.push(`expected ${JSON.stringify(piece)} in the body${from ? ' (after the pieces before it)' : ''}`);
      break;
    }
    from = at + piece.length;
  }
  return problems;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

describe('docs: every shell example of README.md and docs/ runs as written', function () {
  this.timeout(180000);
  let clone: FreshClone;
  let gateway: ChildProcess | undefined;
  let gatewayOutput = '';
  let state: string;
  const skipped: string[] = [];

  /** A plain user's environment: nothing of the test process's own settings. */
  function userEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const k of ['PATH', 'HOME', 'USER', 'LANG', 'TMPDIR', 'TERM']) if (process.env[k] !== undefined) env[k] = process.env[k];
    return env;
  }

  before(async () => {
    for (const port of [HTTP_PORT, MLLP_PORT])
      assert.ok(
        await portFree(port),
        `port ${port} is taken: the documented examples talk to a gateway on 127.0.0.1:${HTTP_PORT} and MLLP ${MLLP_PORT}; stop what listens there`,
      );
    clone = freshClone();
    state = mkdtempSync(join(tmpdir(), 'gw-docs-state-'));
    // README.md: `npm install && npm start`. The clone's node_modules stands for npm install; npm start builds and starts.
    gateway = spawn('npm', ['start'], { cwd: clone.dir, env: userEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    gateway.stdout?.on('data', (b: Buffer) => (gatewayOutput += b.toString()));
    gateway.stderr?.on('data', (b: Buffer) => (gatewayOutput += b.toString()));
    const exited = new Promise((_, rej) =>
      gateway?.once('exit', (code) => rej(new Error(`npm start exited ${code}:\n${gatewayOutput.slice(-3000)}`))),
    );
    exited.catch(() => undefined);
    await Promise.race([
      exited,
      eventually(() => gatewayOutput.includes('"msg":"gateway started"'), 120000, `npm start (${gatewayOutput.slice(-2000)})`),
    ]);
  });

  after(async () => {
    if (gateway?.pid && gateway.exitCode === null) {
      const done = new Promise((r) => gateway?.once('exit', r));
      process.kill(-gateway.pid, 'SIGTERM');
      await done;
    }
    if (skipped.length) console.log(`\n  docs blocks skipped (marked in the markdown):\n${skipped.map((s) => `    ${s}`).join('\n')}\n`);
    clone?.remove();
    if (state) rmSync(state, { recursive: true, force: true });
  });

  it('npm start runs the gateway with two glibc malloc arenas (MALLOC_ARENA_MAX=2), as the container image does', () => {
    const started = gatewayOutput.split('\n').find((l) => l.includes('"msg":"gateway started"'));
    assert.ok(started, 'the gateway started line');
    assert.equal(JSON.parse(started).mallocArenaMax, '2');
  });

  it('every example is runnable or marked: no untagged command blocks, inline curls, bare iomt-gateway or stray markers', () => {
    const problems = FILES.flatMap((f) => f.problems);
    assert.deepEqual(problems, [], problems.join('\n'));
  });

  it('every json block is JSON (after an HTTP request line, its body), with no elided parts', () => {
    const problems: string[] = [];
    for (const b of FILES.flatMap((f) => f.blocks).filter((x) => x.lang === 'json')) {
      const text = b.text.replace(/^[A-Z]+ \/\S*\n/, '');
      try {
        JSON.parse(text);
      } catch (e) {
        problems.push(`${b.file}:${b.line}: ${(e as Error).message}`);
      }
    }
    assert.deepEqual(problems, [], problems.join('\n'));
  });

  it('docs/adapters.md registers the very templates it explains', () => {
    const doc = FILES.find((f) => f.file === 'docs/adapters.md');
    assert.ok(doc);
    const json = doc.blocks.filter((b) => b.lang === 'json').map((b) => JSON.parse(b.text.replace(/^[A-Z]+ \/\S*\n/, '')));
    const registration = doc.blocks.find((b) => RUNNABLE.has(b.lang) && b.text.includes('"deviceMapping"'));
    assert.ok(registration, 'the registration example');
    const body = JSON.parse(/<<'EOF'\n([\s\S]*?)\nEOF/.exec(registration.text)?.[1] ?? '');
    assert.deepEqual(
      body.deviceMapping,
      json.find((j) => j.templateType === 'CollectionContent'),
    );
    assert.deepEqual(
      body.fhirMapping,
      json.find((j) => j.templateType === 'CollectionFhir'),
    );
  });

  for (const doc of FILES) {
    const blocks = doc.blocks.filter((b) => RUNNABLE.has(b.lang) || b.skip);
    if (!blocks.length) continue;
    describe(doc.file, () => {
      let fileState: string;
      before(() => {
        fileState = mkdtempSync(join(state, 'file-'));
      });
      for (const b of blocks) {
        const title = `${b.file}:${b.line} ${b.text.split('\n').find((l) => l.trim()) ?? ''}`.slice(0, 110);
        if (b.skip) {
          it.skip(`${title} (skipped: ${b.skip})`, () => undefined);
          skipped.push(`${b.file}:${b.line}: ${b.skip}`);
          continue;
        }
        it(title, () => {
          const { run, expected } = runBlock(b, clone.dir, fileState, userEnv());
          const where = `${b.file}:${run.failedAt ?? b.line}`;
          const show = `\n--- block (${b.file}:${b.line}) ---\n${b.text}\n--- output ---\n${run.output.length > 4000 ? `…${run.output.slice(-4000)}` : run.output}`;
          assert.equal(run.code, 0, `${where}: the example failed (exit ${run.code})${show}`);
          const problems: string[] = [];
          const claimed = new Set<number>();
          expected.forEach((e, k) => {
            const n = run.expects.get(k);
            if (!n) {
              problems.push(`'# → ${e}' follows no curl call`);
              return;
            }
            claimed.add(n);
            for (const p of compare(e, run.calls[n - 1], run.bodies(n))) problems.push(`curl #${n} ('# → ${e}'): ${p}`);
          });
          run.calls.forEach((status, i) => {
            if (!claimed.has(i + 1) && !/^2\d\d$/.test(status))
              problems.push(`curl #${i + 1} answered ${status || 'nothing'} without a '# → ${status}' saying so:\n${run.bodies(i + 1)}`);
          });
          assert.deepEqual(problems, [], `${b.file}:${b.line}:\n${problems.join('\n')}${show}`);
        });
      }
    });
  }
});
