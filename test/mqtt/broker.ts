/**
 * A throwaway Mosquitto broker for tests: `mosquitto -c <tmp conf>` on a free port of 127.0.0.1, anonymous, no
 * persistence to disk (sessions live in the broker's memory while it runs). MOSQUITTO_BIN overrides the binary.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/queue/embedded-redis.js';

/** The mosquitto binary (MOSQUITTO_BIN or on PATH), or undefined when it is not installed. */
export function mosquittoBinary(): string | undefined {
  for (const bin of [process.env.MOSQUITTO_BIN, 'mosquitto'].filter(Boolean) as string[]) {
    const r = spawnSync(bin, ['-h'], { stdio: 'ignore' });
    if (!r.error) return bin;
  }
  return undefined;
}

export const NO_MOSQUITTO = 'mosquitto is not installed: MQTT tests skipped (install it: apt-get install mosquitto, or set MOSQUITTO_BIN)';

export interface TestBroker {
  url: string;
  port: number;
  output(): string;
  stop(): Promise<void>;
}

async function waitPort(port: number, child: ChildProcess, out: () => string): Promise<void> {
  const deadline = Date.now() + 10000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited ${child.exitCode}: ${out()}`);
    const ok = await new Promise<boolean>((res) => {
      const s = tcpConnect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port}: ${out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startMosquitto(bin: string): Promise<TestBroker> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-mqtt-'));
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      'max_queued_messages 10000',
      'log_dest stdout',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'),
  );
  const child = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  child.stderr?.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  await waitPort(port, child, () => out);
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    output: () => out,
    stop: () =>
      new Promise<void>((res) => {
        const done = () => {
          rmSync(dir, { recursive: true, force: true });
          res();
        };
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', done);
        child.kill('SIGTERM');
      }),
  };
}
