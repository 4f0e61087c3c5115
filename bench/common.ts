/** What the benchmarks share: their command-line options, a gateway child process, and how they run and exit. */
import { type ChildProcess, spawn } from 'node:child_process';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(new URL('..', import.meta.url).pathname);
export const args = process.argv.slice(2);

/** The number after `--name`, or `def`. */
export function opt(name: string, def: number): number {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
}

/**
 * Starts `src/main.ts start --role <role>` as a child process (with a CPU profile in <tmp>/gw-bench-profile/ when
 * the bench was given --profile) and resolves with its URL once it logs that it has started.
 */
export async function spawnGateway(env: Record<string, string>, role: string): Promise<{ child: ChildProcess; url: string }> {
  const profile = args.includes('--profile') ? ['--cpu-prof', '--cpu-prof-dir', join(tmpdir(), 'gw-bench-profile')] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', join(ROOT, 'src/main.ts'), 'start', '--role', role], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const url = await new Promise<string>((res, rej) => {
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /"url":"(http:[^"]+)"[^\n]*"msg":"gateway started"/.exec(out);
      if (m) res(m[1]);
      if (out.length > 100_000) out = out.slice(-10_000);
    });
    child.once('exit', (c) => rej(new Error(`gateway exited ${c}: ${out.slice(-2000)}`)));
  });
  return { child, url };
}

/** Runs the bench and exits: 0 when it finished, 1 with the error otherwise (children and timers must not keep it alive). */
export function run(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/** POST one body to the gateway's /ingest/measurements; resolves with the HTTP status (the body is discarded). */
export function postMeasurements(url: string, body: unknown): Promise<number> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/ingest/measurements`,
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': data.length } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}
