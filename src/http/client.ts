/**
 * Who sent a request: the client's address and whether it spoke TLS.
 *
 * The gateway's own listener is plain HTTP. Without TRUST_PROXY the client is the TCP peer and nothing a request says
 * about itself is believed. Behind a load balancer or reverse proxy that terminates TLS (every production deployment of
 * several ingest processes), TRUST_PROXY names those proxies (addresses, CIDR blocks, or `loopback`, `linklocal`,
 * `uniquelocal`). For a request whose TCP peer is one of them:
 *   - the client is read from X-Forwarded-For, right to left, up to the first address that is not a trusted proxy, so a
 *     client cannot forge its way past them by sending its own header (proxy-addr, the parser express uses). That holds
 *     only while no client's own address is inside TRUST_PROXY: a range that also holds devices or browsers lets them
 *     name any address (config refuses a /0 block; docs/security.md says which to name);
 *   - it spoke TLS when X-Forwarded-Proto's first value is `https`.
 * From any other peer the headers are ignored.
 *
 * The client's address is what the failed-authentication limit counts and what audit events and logs record; TLS
 * decides the console's `__Host-` Secure cookie. Both are worked out once per request where it enters the gateway
 * (createApp's first middleware, and the hot routes' listener) and read here.
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import proxyaddr from 'proxy-addr';

/** Whether the peer at `address`, `hop` steps from the gateway, is a trusted proxy. */
export type ProxyTrust = (address: string, hop: number) => boolean;

/** TRUST_PROXY compiled; undefined when empty (no proxy is trusted). Throws on a malformed address or block. */
export function compileProxyTrust(list: readonly string[]): ProxyTrust | undefined {
  return list.length ? proxyaddr.compile([...list]) : undefined;
}

interface Client {
  address: string;
  tls: boolean;
}

const CLIENT = Symbol('gateway.client');
type Marked = IncomingMessage & { [CLIENT]?: Client };

/** Works out the request's client once, where the request enters the gateway. */
export function identifyClient(req: IncomingMessage, trust: ProxyTrust | undefined): void {
  const socket = req.socket as Partial<TLSSocket> | undefined;
  const peer = socket?.remoteAddress ?? '';
  let tls = socket?.encrypted === true;
  let address = peer;
  if (trust && peer && trust(peer, 0)) {
    // A proxy that appends `address:port` (some do) or something that is no address at all: the port is dropped, and
    // what is still no address counts as the proxy itself, not as a new source each time.
    const forwarded = withoutPort(proxyaddr(req, trust));
    address = isIP(forwarded) ? forwarded : peer;
    if (!tls) {
      const proto = req.headers['x-forwarded-proto'];
      const first = (Array.isArray(proto) ? proto[0] : proto)?.split(',')[0]?.trim().toLowerCase();
      tls = first === 'https';
    }
  }
  (req as Marked)[CLIENT] = { address, tls };
}

/** `1.2.3.4:5678` → `1.2.3.4`, `[2001:db8::1]:443` → `2001:db8::1`; anything else as it is. */
function withoutPort(a: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(a);
  if (v6) return v6[1];
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(a);
  return v4 ? v4[1] : a;
}

/** The client's address (the TCP peer unless a trusted proxy forwarded the request). */
export function clientAddress(req: IncomingMessage): string {
  return (req as Marked)[CLIENT]?.address ?? req.socket?.remoteAddress ?? '';
}

/** Whether the client spoke TLS (to the gateway, or to the trusted proxy that forwarded the request). */
export function overTls(req: IncomingMessage): boolean {
  return (req as Marked)[CLIENT]?.tls ?? (req.socket as Partial<TLSSocket> | undefined)?.encrypted === true;
}
