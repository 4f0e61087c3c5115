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
import type { Metrics } from '../../observability/metrics.js';
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
  private starts = 0;
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

  /** True between a frame's start byte and its end. */
  get framing(): boolean {
    return this.inFrame;
  }

  /**
   * Counts frames begun from outside a frame. A start byte inside an unfinished frame restarts the frame but not the
   * count: the frame deadline runs from the first byte and a sender cannot reset it.
   */
  get frameStarts(): number {
    return this.starts;
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
    if (!this.inFrame) this.starts++;
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
  /**
   * Is this peer address a known sender (listed in MLLP_ALLOWED_SENDERS)? Known senders may use the connections
   * reserved for them (MLLP_RESERVED_CONNECTIONS); others share the rest.
   */
  isKnownPeer?: (address: string) => boolean;
  /** Counter mllp_connections_refused_total{reason}. */
  metrics?: Metrics;
}

interface Conn {
  socket: net.Socket;
  peer: string;
  decoder: MllpDecoder;
  chain: Promise<void>;
  pending: number;
  paused: boolean;
  /** The frame whose deadline runs (MllpDecoder.frameStarts), and its timer. */
  frame: number;
  frameTimer?: NodeJS.Timeout;
  idleTimer?: NodeJS.Timeout;
}

const MAX_PENDING = 64;

/** Why a connection was refused at accept (the label of mllp_connections_refused_total). */
export type RefusedReason = 'per-peer' | 'unreserved-full' | 'full' | 'stopping';

/** The address without the IPv4-mapped IPv6 prefix, so that one peer is one key. */
const peerKey = (a: string | undefined) => (a ?? '').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');

export class MllpServer {
  readonly session: Hl7Session;
  private server?: net.Server;
  private readonly conns = new Set<Conn>();
  /** Open TCP connections (before and after a TLS handshake) per peer address, and in all. */
  private readonly perPeer = new Map<string, number>();
  private open = 0;
  /** Every admitted TCP socket (a TLS one may still be in its handshake), to close them all at stop. */
  private readonly raws = new Set<net.Socket>();
  private readonly refusedLog = new Map<RefusedReason, { count: number; at: number }>();
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

  /** Connections open (TCP, including TLS handshakes in progress). */
  get connections(): number {
    return this.open;
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
              // A handshake is held to the frame deadline too: a peer cannot keep a slot by never finishing it.
              handshakeTimeout: cfg.frameTimeoutMs > 0 ? cfg.frameTimeoutMs : 120000,
            },
            onSocket,
          )
        : net.createServer();
      // Admission runs on the TCP connection, before any TLS handshake (net.Server emits it first).
      server.on('connection', (raw: net.Socket) => {
        if (!this.admit(raw)) return;
        if (!cfg.tls) onSocket(raw);
      });
      server.maxConnections = cfg.maxConnections;
      server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
        if (socket.destroyed && !socket.remoteAddress) return; // refused at admission
        this.logger.warn({ peer: `${socket.remoteAddress}:${socket.remotePort}`, err: err.message }, 'mllp: TLS handshake failed');
      });
      server.on('error', (err) => this.logger.error({ err: err.message }, 'mllp: server error'));
      this.server = server;
      server.once('error', reject);
      server.listen(cfg.mllpPort, cfg.mllpHost, () => {
        server.off('error', reject);
        const port = this.port as number;
        this.logger.info(
          {
            port,
            host: cfg.mllpHost,
            tls: !!cfg.tls,
            clientCert: !!cfg.tls?.requireClientCert,
            maxConnections: cfg.maxConnections,
            perPeer: cfg.maxConnectionsPerPeer,
            reserved: cfg.reservedConnections,
            frameTimeoutMs: cfg.frameTimeoutMs,
            idleTimeoutMs: cfg.idleTimeoutMs,
          },
          'mllp: listening',
        );
        resolve({ port, host: cfg.mllpHost });
      });
    });
    return this.starting;
  }

  /**
   * Connection fairness: at most MLLP_MAX_CONNECTIONS_PER_PEER from one address; peers that are not known senders
   * share MLLP_MAX_CONNECTIONS − MLLP_RESERVED_CONNECTIONS, so that a flood from strangers leaves room for the senders
   * of MLLP_ALLOWED_SENDERS. A refused connection is closed at once (nothing was read from it).
   */
  private admit(raw: net.Socket): boolean {
    const cfg = this.options.config;
    const addr = peerKey(raw.remoteAddress);
    const mine = this.perPeer.get(addr) ?? 0;
    let refused: RefusedReason | undefined;
    if (this.stopping) refused = 'stopping';
    else if (mine >= cfg.maxConnectionsPerPeer) refused = 'per-peer';
    else if (this.open >= cfg.maxConnections) refused = 'full';
    else if (this.open >= cfg.maxConnections - cfg.reservedConnections && !this.options.isKnownPeer?.(addr)) refused = 'unreserved-full';
    if (refused) {
      raw.on('error', () => undefined);
      raw.destroy();
      this.refused(refused, addr);
      return false;
    }
    this.perPeer.set(addr, mine + 1);
    this.open++;
    this.raws.add(raw);
    raw.once('close', () => {
      this.raws.delete(raw);
      this.open--;
      const left = (this.perPeer.get(addr) ?? 1) - 1;
      if (left > 0) this.perPeer.set(addr, left);
      else this.perPeer.delete(addr);
    });
    return true;
  }

  /** Counts a refused connection; logs at most one line per reason every 10 s (a flood must not flood the log). */
  private refused(reason: RefusedReason, addr: string): void {
    this.options.metrics?.inc('mllp_connections_refused_total', { reason });
    const now = Date.now();
    const r = this.refusedLog.get(reason) ?? { count: 0, at: 0 };
    r.count++;
    if (now - r.at >= 10000) {
      const cfg = this.options.config;
      const why: Record<RefusedReason, string> = {
        'per-peer': `the peer has MLLP_MAX_CONNECTIONS_PER_PEER (${cfg.maxConnectionsPerPeer}) connections open`,
        'unreserved-full': `the connections not reserved for known senders are in use (MLLP_MAX_CONNECTIONS ${cfg.maxConnections} − MLLP_RESERVED_CONNECTIONS ${cfg.reservedConnections})`,
        full: `MLLP_MAX_CONNECTIONS (${cfg.maxConnections}) connections are open`,
        stopping: 'the server is stopping',
      };
      this.logger.warn({ peer: addr, reason, refused: r.count }, `mllp: connection refused: ${why[reason]}`);
      r.count = 0;
      r.at = now;
    }
    this.refusedLog.set(reason, r);
  }

  private accept(socket: net.Socket): void {
    const cfg = this.options.config;
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const conn: Conn = {
      socket,
      peer,
      decoder: new MllpDecoder(cfg.maxFrameBytes),
      chain: Promise.resolve(),
      pending: 0,
      paused: false,
      frame: 0,
    };
    this.conns.add(conn);
    const decoder = conn.decoder;
    socket.setNoDelay(true);
    this.armIdle(conn);
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
      this.watchFrame(conn);
    });
    socket.on('error', (err) => this.logger.warn({ peer, err: err.message }, 'mllp: connection error'));
    socket.on('close', () => {
      clearTimeout(conn.frameTimer);
      clearTimeout(conn.idleTimer);
      if (decoder.partialBytes)
        this.logger.warn(
          { peer, bytes: decoder.partialBytes },
          'mllp: client disconnected in the middle of a frame; the partial frame is dropped',
        );
      this.conns.delete(conn);
    });
  }

  /**
   * The frame deadline (MLLP_FRAME_TIMEOUT_MS), counted from a frame's first byte whatever arrives after it: a frame
   * in progress stops the idle timer and starts the deadline; the next frame starts a new one.
   */
  private watchFrame(conn: Conn): void {
    const cfg = this.options.config;
    const d = conn.decoder;
    if (!d.framing) {
      clearTimeout(conn.frameTimer);
      conn.frameTimer = undefined;
      return;
    }
    if (conn.frame === d.frameStarts) return;
    conn.frame = d.frameStarts;
    clearTimeout(conn.idleTimer);
    conn.idleTimer = undefined;
    clearTimeout(conn.frameTimer);
    conn.frameTimer = undefined;
    if (cfg.frameTimeoutMs <= 0) return;
    const expire = () => {
      if (conn.paused) {
        // The server stopped reading (backpressure): the rest of the frame waits on us, not on the sender.
        conn.frameTimer = setTimeout(expire, cfg.frameTimeoutMs);
        return;
      }
      this.logger.warn(
        { peer: conn.peer, bytes: d.partialBytes, frameTimeoutMs: cfg.frameTimeoutMs },
        'mllp: a frame was not completed within MLLP_FRAME_TIMEOUT_MS of its first byte; connection closed',
      );
      conn.socket.destroy();
    };
    conn.frameTimer = setTimeout(expire, cfg.frameTimeoutMs);
  }

  /**
   * The idle timer (MLLP_IDLE_TIMEOUT_MS) runs while no frame is in progress and none is being answered; it starts at
   * the connection and again after each answer. Bytes outside a frame do not restart it.
   */
  private armIdle(conn: Conn): void {
    const ms = this.options.config.idleTimeoutMs;
    clearTimeout(conn.idleTimer);
    conn.idleTimer = undefined;
    if (ms <= 0 || conn.pending > 0 || conn.decoder.framing) return;
    conn.idleTimer = setTimeout(() => {
      if (conn.pending > 0 || conn.decoder.framing) return;
      this.logger.info({ peer: conn.peer }, 'mllp: idle connection closed');
      conn.socket.end();
      // A peer that does not close its side in turn is cut off.
      setTimeout(() => conn.socket.destroy(), 1000).unref();
    }, ms);
  }

  private enqueue(conn: Conn, ev: MllpEvent, peer: string): void {
    if (ev.type === 'garbage') {
      this.logger.warn({ peer, bytes: ev.bytes }, 'mllp: bytes outside a frame skipped');
      return;
    }
    conn.pending++;
    clearTimeout(conn.idleTimer);
    conn.idleTimer = undefined;
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
        if (conn.pending === 0 && !conn.socket.destroyed) this.armIdle(conn);
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
      for (const r of this.raws) r.destroy();
      await closed;
      this.logger.info({}, 'mllp: stopped');
    })();
    return this.stopping;
  }
}
