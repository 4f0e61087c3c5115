/**
 * MLLP (Minimal Lower Layer Protocol) on node:net / node:tls, written by hand (hl7v2-net is broken: it crashes on a
 * non-MSH frame and ping-pongs ACKs). A frame is 0x0B <payload> 0x1C 0x0D.
 *
 * The decoder copes with several frames in one TCP chunk, one frame split over many chunks, bytes between frames
 * (skipped and logged), a start byte inside an unfinished frame (the unfinished part is dropped), 0x1C without the
 * trailing 0x0D (accepted; a frame ends at 0x1C), and frames larger than MLLP_MAX_FRAME_BYTES (the rest is skipped without buffering; the
 * head is kept so the AR can echo MSH-10; the connection survives).
 *
 * The server answers each connection's frames strictly in order (pipelined messages are processed one after the
 * other), applies backpressure (stops reading while too many frames wait), closes idle connections, and never lets a
 * client take the process down: a disconnect mid-frame drops the partial frame; a message whose ACK cannot be written
 * any more was already queued (if it was accepted) and its resend will be recognised by the ACK cache.
 */
import { createHash, type Hash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Hl7Config } from '../../hl7v2/config.js';
import { encodeText } from '../../hl7v2/parse.js';
import { type Hl7Logger, type Hl7Session, noopLogger } from './session.js';

export const VT = 0x0b;
export const FS = 0x1c;
export const CR = 0x0d;

/** Wraps a payload in an MLLP frame. */
export function mllpFrame(payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return Buffer.concat([Buffer.from([VT]), body, Buffer.from([FS, CR])]);
}

export type MllpEvent =
  | { type: 'frame'; data: Buffer }
  | { type: 'oversized'; head: Buffer; size: number; sha256: string }
  | { type: 'garbage'; bytes: number };

const HEAD_BYTES = 4096;

export class MllpDecoder {
  private inFrame = false;
  private chunks: Buffer[] = [];
  private size = 0;
  private oversized = false;
  private head: Buffer[] = [];
  private headSize = 0;
  private garbage = 0;
  /** SHA-256 of an oversized frame, computed as it streams past (the frame itself is not kept). */
  private hash?: Hash;

  constructor(private readonly maxFrameBytes: number) {}

  /** Bytes of an unfinished frame (0 when between frames). */
  get partialBytes(): number {
    return this.inFrame ? this.size : 0;
  }

  private append(b: Buffer): void {
    if (!b.length) return;
    if (!this.oversized && this.size + b.length > this.maxFrameBytes) {
      this.oversized = true;
      this.hash = createHash('sha256');
      for (const c of this.chunks) {
        this.keepHead(c);
        this.hash.update(c);
      }
      this.chunks = [];
    }
    if (this.oversized) {
      this.keepHead(b);
      this.hash?.update(b);
    } else this.chunks.push(Buffer.from(b)); // copy: the socket may reuse its buffer
    this.size += b.length;
  }

  private keepHead(b: Buffer): void {
    if (this.headSize >= HEAD_BYTES) return;
    const part = b.subarray(0, HEAD_BYTES - this.headSize);
    this.head.push(Buffer.from(part));
    this.headSize += part.length;
  }

  private begin(): void {
    this.inFrame = true;
    this.chunks = [];
    this.size = 0;
    this.oversized = false;
    this.head = [];
    this.headSize = 0;
    this.hash = undefined;
  }

  private end(out: MllpEvent[]): void {
    out.push(
      this.oversized
        ? { type: 'oversized', head: Buffer.concat(this.head), size: this.size, sha256: this.hash?.digest('hex') ?? '' }
        : { type: 'frame', data: this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks) },
    );
    this.inFrame = false;
    this.chunks = [];
    this.head = [];
    this.hash = undefined;
  }

  private flushGarbage(out: MllpEvent[]): void {
    if (this.garbage) out.push({ type: 'garbage', bytes: this.garbage });
    this.garbage = 0;
  }

  push(chunk: Buffer): MllpEvent[] {
    const out: MllpEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (!this.inFrame) {
        const start = chunk.indexOf(VT, i);
        const stop = start < 0 ? chunk.length : start;
        for (let k = i; k < stop; k++) if (chunk[k] !== CR && chunk[k] !== 0x0a && chunk[k] !== 0x20) this.garbage++;
        if (start < 0) break;
        this.flushGarbage(out);
        this.begin();
        i = start + 1;
        continue;
      }
      const fs = chunk.indexOf(FS, i);
      const vt = chunk.indexOf(VT, i);
      if (vt >= 0 && (fs < 0 || vt < fs)) {
        // A new frame starts before this one ended: the unfinished frame is dropped.
        this.garbage += this.size + (vt - i);
        this.flushGarbage(out);
        this.begin();
        i = vt + 1;
        continue;
      }
      if (fs < 0) {
        this.append(chunk.subarray(i));
        break;
      }
      this.append(chunk.subarray(i, fs));
      // End of frame at 0x1C; the 0x0D after it (in this chunk or the next) is skipped as inter-frame whitespace.
      this.end(out);
      i = chunk[fs + 1] === CR ? fs + 2 : fs + 1;
    }
    if (!this.inFrame) this.flushGarbage(out);
    return out;
  }
}

export interface MllpServerOptions {
  config: Hl7Config;
  logger?: Hl7Logger;
  /** The session logic (ACK rules, ACK cache, refusal store), shared with POST /hl7v2. */
  session: Hl7Session;
}

interface Conn {
  socket: net.Socket;
  chain: Promise<void>;
  pending: number;
  paused: boolean;
}

const MAX_PENDING = 64;

export class MllpServer {
  readonly session: Hl7Session;
  private server?: net.Server;
  private readonly conns = new Set<Conn>();
  private starting?: Promise<{ port: number; host: string }>;
  private stopping?: Promise<void>;
  private readonly logger: Hl7Logger;

  constructor(private readonly options: MllpServerOptions) {
    this.logger = options.logger ?? noopLogger;
    this.session = options.session;
  }

  /** The bound port (after start). */
  get port(): number | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  get connections(): number {
    return this.conns.size;
  }

  start(): Promise<{ port: number; host: string }> {
    if (this.stopping) return Promise.reject(new Error('the MLLP server was stopped'));
    this.starting ??= new Promise((resolve, reject) => {
      const cfg = this.options.config;
      const onSocket = (socket: net.Socket) => this.accept(socket);
      const server = cfg.tls
        ? tls.createServer(
            {
              cert: cfg.tls.cert,
              key: cfg.tls.key,
              ca: cfg.tls.ca,
              requestCert: cfg.tls.requireClientCert,
              rejectUnauthorized: cfg.tls.requireClientCert,
            },
            onSocket,
          )
        : net.createServer(onSocket);
      server.maxConnections = cfg.maxConnections;
      server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
        this.logger.warn({ peer: `${socket.remoteAddress}:${socket.remotePort}`, err: err.message }, 'mllp: TLS handshake failed');
      });
      server.on('error', (err) => this.logger.error({ err: err.message }, 'mllp: server error'));
      this.server = server;
      server.once('error', reject);
      server.listen(cfg.mllpPort, cfg.mllpHost, () => {
        server.off('error', reject);
        const port = this.port as number;
        this.logger.info({ port, host: cfg.mllpHost, tls: !!cfg.tls }, 'mllp: listening');
        resolve({ port, host: cfg.mllpHost });
      });
    });
    return this.starting;
  }

  private accept(socket: net.Socket): void {
    const cfg = this.options.config;
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const conn: Conn = { socket, chain: Promise.resolve(), pending: 0, paused: false };
    this.conns.add(conn);
    const decoder = new MllpDecoder(cfg.maxFrameBytes);
    socket.setNoDelay(true);
    if (cfg.idleTimeoutMs > 0) socket.setTimeout(cfg.idleTimeoutMs);
    socket.on('timeout', () => {
      if (conn.pending === 0) {
        this.logger.info({ peer }, 'mllp: idle connection closed');
        socket.end();
      }
    });
    socket.on('data', (chunk: Buffer) => {
      let events: MllpEvent[];
      try {
        events = decoder.push(chunk);
      } catch (err) {
        this.logger.error({ peer, err: (err as Error).message }, 'mllp: decoder failure; closing');
        socket.destroy();
        return;
      }
      for (const ev of events) this.enqueue(conn, ev, peer);
    });
    socket.on('error', (err) => this.logger.warn({ peer, err: err.message }, 'mllp: connection error'));
    socket.on('close', () => {
      if (decoder.partialBytes)
        this.logger.warn(
          { peer, bytes: decoder.partialBytes },
          'mllp: client disconnected in the middle of a frame; the partial frame is dropped',
        );
      this.conns.delete(conn);
    });
  }

  private enqueue(conn: Conn, ev: MllpEvent, peer: string): void {
    if (ev.type === 'garbage') {
      this.logger.warn({ peer, bytes: ev.bytes }, 'mllp: bytes outside a frame skipped');
      return;
    }
    conn.pending++;
    if (conn.pending > MAX_PENDING && !conn.paused) {
      conn.paused = true;
      conn.socket.pause();
    }
    const receivedAt = new Date();
    conn.chain = conn.chain
      .then(async () => {
        const cert = 'getPeerCertificate' in conn.socket ? (conn.socket as import('node:tls').TLSSocket).getPeerCertificate() : undefined;
        const meta = {
          channel: 'mllp',
          peer,
          receivedAt,
          remoteAddress: conn.socket.remoteAddress ?? '',
          certFingerprint: cert?.fingerprint256 || undefined,
        };
        const result =
          ev.type === 'frame'
            ? await this.session.handleBytes(ev.data, meta)
            : await this.session.refuseOversized(ev.head, ev.size, meta, ev.sha256);
        if (ev.type === 'oversized') this.logger.warn({ peer, bytes: ev.size }, 'mllp: oversized frame refused');
        for (const r of result.responses) {
          if (conn.socket.destroyed || !conn.socket.writable) break;
          conn.socket.write(mllpFrame(encodeText(r, result.charset)));
        }
      })
      .catch((err) => this.logger.error({ peer, err: (err as Error)?.message }, 'mllp: failed to answer a frame'))
      .finally(() => {
        conn.pending--;
        if (conn.paused && conn.pending < MAX_PENDING / 2) {
          conn.paused = false;
          conn.socket.resume();
        }
      });
  }

  /** Stops accepting, answers frames already received, then closes the connections. Safe to call twice. */
  stop(timeoutMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      const server = this.server;
      const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
      const drain = Promise.all(
        [...this.conns].map(async (c) => {
          await c.chain;
          c.socket.end();
        }),
      );
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([drain, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
      await new Promise((r) => setTimeout(r, 20));
      for (const c of this.conns) c.socket.destroy();
      await closed;
      this.logger.info({}, 'mllp: stopped');
    })();
    return this.stopping;
  }
}
