/**
 * `send-hl7`: sends a file of HL7v2 messages to any MLLP endpoint, one frame per message, and prints each ACK.
 *
 *   send-hl7 [--host H] [--port P] [--tls [--ca FILE] [--cert FILE --key FILE] [--insecure]] [--timeout-ms N] FILE...
 *
 * A file may hold one message, several, or a batch (FHS/BHS envelopes are dropped: each message is sent on its own).
 * CR, LF and CRLF segment separators are accepted; bytes are sent in the file's character set (MSH-18). Exit code 0
 * when every message got a positive ACK (AA/CA), 1 when any was refused or unanswered, 2 on usage or connection errors.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { readAck } from '../../hl7v2/ack.js';
import { MllpDecoder, mllpFrame } from './server.js';
import { decodeBytes, encodeText, splitMessages, withHl7Package } from '../../hl7v2/parse.js';

export interface SendTlsOptions {
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  /** Verify the server certificate (default true). */
  rejectUnauthorized?: boolean;
  servername?: string;
}

export interface SendOptions {
  tls?: SendTlsOptions | boolean;
  /** How long to wait for each ACK (default 10 s). */
  timeoutMs?: number;
  /** Where ACKs are printed (default stdout). */
  out?: (line: string) => void;
}

export interface SendResult {
  sent: number;
  /** The ACK texts, in order (several per message in enhanced mode). */
  acks: string[];
  /** Per message: the first ACK code, or 'none' when none came in time. */
  codes: string[];
}

function connect(host: string, port: number, opt: SendOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    if (opt.tls) {
      const t: SendTlsOptions = typeof opt.tls === 'object' ? opt.tls : {};
      socket = tls.connect(
        {
          host,
          port,
          ca: t.ca,
          cert: t.cert,
          key: t.key,
          rejectUnauthorized: t.rejectUnauthorized ?? true,
          servername: t.servername ?? (net.isIP(host) ? undefined : host),
        },
        () => resolve(socket),
      );
    } else socket = net.connect({ host, port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Sends messages (already split) over one connection, waiting for the ACK(s) of each before the next. */
export async function sendMessages(
  host: string,
  port: number,
  messages: { text: string; charset: string }[],
  opt: SendOptions = {},
): Promise<SendResult> {
  const out = opt.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const timeoutMs = opt.timeoutMs ?? 10000;
  const socket = await connect(host, port, opt);
  const decoder = new MllpDecoder(64 * 1024 * 1024);
  const frames: string[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    for (const ev of decoder.push(chunk)) if (ev.type === 'frame') frames.push(decodeBytes(ev.data).text);
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  socket.on('error', () => undefined);
  const waitFrame = async (ms: number): Promise<string | undefined> => {
    const deadline = Date.now() + ms;
    while (!frames.length && !closed && Date.now() < deadline) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, deadline - Date.now()));
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = undefined;
    }
    return frames.shift();
  };
  const result: SendResult = { sent: 0, acks: [], codes: [] };
  const print = (ack: string) => {
    result.acks.push(ack);
    out(ack.replace(/\r$/, '').replace(/\r/g, '\n'));
  };
  try {
    for (const m of messages) {
      if (closed) break;
      socket.write(mllpFrame(encodeText(m.text, m.charset)));
      result.sent++;
      const first = await waitFrame(timeoutMs);
      if (!first) {
        out(`(no ACK within ${timeoutMs} ms)`);
        result.codes.push('none');
        continue;
      }
      print(first);
      let code = 'unreadable';
      try {
        code = (await withHl7Package(() => readAck(first))).code || 'unreadable';
      } catch {
        /* printed as is */
      }
      result.codes.push(code);
      // Enhanced mode: an application ACK may follow the commit ACK.
      if (code === 'CA') {
        const next = await waitFrame(300);
        if (next) print(next);
      }
    }
    // Anything still in flight.
    const late = await waitFrame(50);
    if (late) print(late);
  } finally {
    socket.end();
    socket.destroy();
  }
  return result;
}

/** Sends every message of a file to an MLLP endpoint and prints the ACKs. */
export async function sendFile(host: string, port: number, file: string, options: SendOptions = {}): Promise<SendResult> {
  const { text, charset } = decodeBytes(readFileSync(file));
  const messages = splitMessages(text).messages.map((t) => ({ text: t, charset }));
  return sendMessages(host, port, messages, options);
}

const USAGE =
  'usage: send-hl7 [--host HOST (127.0.0.1)] [--port PORT (2575)] [--tls] [--ca FILE] [--cert FILE --key FILE] [--insecure] [--timeout-ms N] FILE...';

/** CLI entry: `main(['--host', 'h', '--port', '2575', 'file.hl7'])`; resolves with the exit code. */
export async function main(argv: string[], io: { out?: (l: string) => void; err?: (l: string) => void } = {}): Promise<number> {
  const out = io.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = io.err ?? ((l: string) => process.stderr.write(l + '\n'));
  const args = argv[0] === 'send-hl7' ? argv.slice(1) : [...argv];
  let host = '127.0.0.1';
  let port: number | undefined = 2575;
  let timeoutMs: number | undefined;
  let useTls = false;
  let insecure = false;
  const tlsFiles: { ca?: string; cert?: string; key?: string } = {};
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const val = () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    try {
      if (a === '--host') host = val();
      else if (a === '--port') port = Number(val());
      else if (a === '--timeout-ms') timeoutMs = Number(val());
      else if (a === '--tls') useTls = true;
      else if (a === '--insecure') insecure = true;
      else if (a === '--ca') tlsFiles.ca = val();
      else if (a === '--cert') tlsFiles.cert = val();
      else if (a === '--key') tlsFiles.key = val();
      else if (a === '--help' || a === '-h') {
        out(USAGE);
        return 0;
      } else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
      else files.push(a);
    } catch (e) {
      err(`${(e as Error).message}\n${USAGE}`);
      return 2;
    }
  }
  if (!port || !Number.isInteger(port) || port < 1 || port > 65535 || !files.length) {
    err(USAGE);
    return 2;
  }
  let tlsOpt: SendTlsOptions | undefined;
  try {
    if (useTls || tlsFiles.ca || tlsFiles.cert) {
      tlsOpt = {
        ca: tlsFiles.ca ? readFileSync(tlsFiles.ca) : undefined,
        cert: tlsFiles.cert ? readFileSync(tlsFiles.cert) : undefined,
        key: tlsFiles.key ? readFileSync(tlsFiles.key) : undefined,
        rejectUnauthorized: !insecure,
      };
    }
  } catch (e) {
    err(`cannot read a TLS file: ${(e as Error).message}`);
    return 2;
  }
  let ok = true;
  for (const f of files) {
    try {
      const r = await sendFile(host, port, f, { tls: tlsOpt, timeoutMs, out });
      if (r.codes.some((c) => c !== 'AA' && c !== 'CA')) ok = false;
      err(`${f}: ${r.sent} message(s) sent, ACKs: ${r.codes.join(' ') || '(none)'}`);
    } catch (e) {
      err(`${f}: ${(e as Error).message}`);
      return 2;
    }
  }
  return ok ? 0 : 1;
}
