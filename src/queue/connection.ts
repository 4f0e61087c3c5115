/**
 * The one place the gateway opens a Redis connection (its own client and each of bull's connections), so that every
 * connection follows the same target: one Redis at a URL, the master a set of Redis Sentinels names (followed across
 * a failover), or a Redis Cluster (an ioredis `Cluster`, which sends each command to the master of its keys' slot).
 * See docs/scaling.md.
 */
import { createRequire } from 'node:module';
import type { Cluster, ClusterOptions, Redis, RedisOptions } from 'ioredis';
import IORedis from 'ioredis';

/** A connection to one Redis (or the master Sentinels name) or to a Redis Cluster: what every store is given. */
export type RedisClient = Redis | Cluster;

/**
 * Where Redis is: a URL; Sentinels that name the master; or the nodes of a Redis Cluster. With Sentinels or a cluster,
 * the URL gives only the password (and, with Sentinels, the database).
 */
export interface RedisTarget {
  url?: string;
  /** host:port of each Sentinel; set: the master is asked of them, and followed when they fail over. */
  sentinels?: readonly string[];
  /** The master's name in the Sentinels' configuration (`sentinel monitor <name> ...`). */
  sentinelName?: string;
  /** host:port of some nodes of a Redis Cluster (the others are learnt from them); set: connect to the cluster. */
  clusterNodes?: readonly string[];
}

/**
 * Whether a Redis command failed because Redis could not be reached or could not serve it for now (a failover, a
 * dropped connection, a cluster without a master for the slot, a replica loading its data): sent again later, it can
 * succeed.
 */
export function isRedisUnreachable(err: unknown): boolean {
  const message = (err as { message?: unknown } | null | undefined)?.message;
  return (
    typeof message === 'string' &&
    /Connection is closed|Too many Cluster redirections|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|LOADING|READONLY|ECONNREFUSED|ECONNRESET|EPIPE|Stream isn't writeable/.test(
      message,
    )
  );
}

/**
 * Whether a Redis command failed because Redis is not available now, in any way a caller should answer "retry later"
 * (503): unreachable (isRedisUnreachable), no answer within the connection's command timeout, the client's retries
 * spent while it reconnected, no Sentinel or cluster node answering, or Redis out of memory (noeviction).
 */
export function isRedisUnavailable(err: unknown): boolean {
  if (isRedisUnreachable(err)) return true;
  const e = err as { name?: unknown; message?: unknown } | null | undefined;
  if (e?.name === 'MaxRetriesPerRequestError' || e?.name === 'ClusterAllFailedError') return true;
  return (
    typeof e?.message === 'string' && /^Command timed out|All sentinels are unreachable|Failed to refresh slots cache|^OOM /.test(e.message)
  );
}

/** Whether `c` is a cluster connection. */
export function isCluster(c: RedisClient): c is Cluster {
  return c.isCluster === true;
}

/** Redis options for every connection: no endless offline queue, so a Redis outage is an error, not a hang. */
export function redisOptions(extra: RedisOptions = {}): RedisOptions {
  return {
    maxRetriesPerRequest: null,
    enableReadyCheck: false,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    ...extra,
  };
}

/** Parses `host:port` (a bracketed IPv6 address too); undefined when it is not one. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2], port };
}

/** The options that make ioredis ask the Sentinels for the master and follow it (none without Sentinels). */
function sentinelOptions(target: RedisTarget): RedisOptions {
  if (!target.sentinels?.length) return {};
  const sentinels = target.sentinels.map((s) => {
    const hp = parseHostPort(s);
    if (!hp) throw new Error(`not a Sentinel address (host:port): ${s}`);
    return hp;
  });
  return {
    sentinels,
    name: target.sentinelName ?? 'mymaster',
    // No failoverDetector: its disconnect on +switch-master can land while the connection is being re-established
    // (after the master died) and end it for good (status 'end', never retried). It is not needed: Sentinel itself
    // kills the clients of a master it demotes (CLIENT KILL TYPE normal), and they reconnect through the Sentinels.
    // A command that still reaches a demoted master gets READONLY: reconnect (through the Sentinels) and resend it.
    reconnectOnError: (err) => (/^READONLY/.test(err.message) ? 2 : false),
    sentinelRetryStrategy: (times) => Math.min(times * 200, 2000),
  };
}

/** Options of the cluster client itself; the rest of `extra` applies to its connection to each node. */
const CLUSTER_LEVEL = ['enableAutoPipelining', 'lazyConnect', 'enableOfflineQueue', 'scripts'] as const;

/**
 * A cluster client: `extra` (redisOptions() included) for each node's connection, the password (and user, and TLS
 * for rediss:) from the URL. ioredis does not reconnect to a lost node by itself: the cluster client asks the nodes
 * for the slots again (after MOVED, or a reconnect of the whole client, at most every 2 s as a single connection).
 */
function createCluster(t: RedisTarget, extra: RedisOptions): Cluster {
  const nodes = (t.clusterNodes ?? []).map((s) => {
    const hp = parseHostPort(s);
    if (!hp) throw new Error(`not a cluster node address (host:port): ${s}`);
    return hp;
  });
  const { retryStrategy: _retry, ...options } = redisOptions(extra);
  const node: Record<string, unknown> = { ...options };
  const cluster: ClusterOptions = { clusterRetryStrategy: (times) => Math.min(times * 200, 2000) };
  for (const k of CLUSTER_LEVEL) {
    if (k in node) (cluster as Record<string, unknown>)[k] = node[k];
    delete node[k];
  }
  if (t.url) {
    const u = new URL(t.url);
    if (u.password) node.password = decodeURIComponent(u.password);
    if (u.username) node.username = decodeURIComponent(u.username);
    if (u.protocol === 'rediss:') node.tls = {};
  }
  // The cluster checks cluster_state:ok before it is ready; each node's connection needs no ready check of its own.
  const c = new IORedis.Cluster(nodes, { ...cluster, redisOptions: node as ClusterOptions['redisOptions'] });
  c.on('error', () => undefined);
  return c;
}

/**
 * A new connection to `target` with redisOptions() and `extra`, with an error listener (errors are seen through
 * `status` and reported by callers, not thrown as unhandled 'error' events). A cluster target gives a `Cluster`.
 */
export function createRedis(target: string, extra?: RedisOptions): Redis;
export function createRedis(target: RedisTarget | string, extra?: RedisOptions): RedisClient;
export function createRedis(target: RedisTarget | string, extra: RedisOptions = {}): RedisClient {
  const t = typeof target === 'string' ? { url: target } : target;
  if (t.clusterNodes?.length) return createCluster(t, extra);
  const options = { ...redisOptions(extra), ...sentinelOptions(t) };
  const r = t.url ? new IORedis.default(t.url, options) : new IORedis.default(options);
  r.on('error', () => undefined);
  return r;
}

/** Another connection to what `c` connects to (a subscriber), with `extra` options and an error listener. */
export function duplicateConnection(c: RedisClient, extra: RedisOptions = {}): RedisClient {
  const { enableAutoPipelining, ...rest } = extra;
  const d = isCluster(c)
    ? c.duplicate(undefined, {
        ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
        redisOptions: { ...c.options.redisOptions, ...rest },
      })
    : c.duplicate(extra);
  d.on('error', () => undefined);
  return d;
}

/**
 * The master connections of `c`: every master of a cluster (once the client is ready and knows them, waiting up to
 * `timeoutMs` for that), or `c` itself.
 */
export async function masters(c: RedisClient, timeoutMs = 10_000): Promise<Redis[]> {
  if (!isCluster(c)) return [c];
  if (c.status !== 'ready') {
    let onReady = () => undefined as void;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve, reject) => {
      onReady = () => resolve();
      c.once('ready', onReady);
      timer = setTimeout(() => reject(new Error(`the Redis Cluster was not ready within ${timeoutMs} ms (${c.status})`)), timeoutMs);
    }).finally(() => {
      clearTimeout(timer);
      c.off('ready', onReady);
    });
  }
  return c.nodes('master');
}

/**
 * The cluster hash slot of a key (its hash tag's, when it has one): ioredis's own function (cluster-key-slot, the same
 * copy), so that `connectionFor` names the node ioredis itself sends the key's commands to. It is CLUSTER KEYSLOT's slot
 * for every well-formed hash tag, which is all the gateway's keys have.
 */
export const keySlot: (key: string) => number = createRequire(import.meta.url)('cluster-key-slot');

/**
 * The connection of `c` that serves `key`: on a cluster, its connection to the master of the key's slot (the one its
 * writes of that key went through), as far as the client knows the slots; otherwise `c`.
 */
export function connectionFor(c: RedisClient, key: string): Redis | undefined {
  if (!isCluster(c)) return c;
  const node = c.slots[keySlot(key)]?.[0];
  return c.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === node);
}

/** A target's description for logs and errors (no password). */
export function describeTarget(target: RedisTarget): string {
  if (target.clusterNodes?.length) return `cluster ${target.clusterNodes.join(',')}`;
  if (target.sentinels?.length) return `sentinels ${target.sentinels.join(',')} (master ${target.sentinelName ?? 'mymaster'})`;
  if (!target.url) return 'none';
  const u = new URL(target.url);
  u.password = '';
  u.username = '';
  return u.toString();
}

/**
 * Reopens `c` whenever it ends while its owner is not closing it. ioredis ends a connection for good (status `end`,
 * no more retries) when a connect fails outright, as when its Sentinel failover detection races a reconnect; a
 * gateway left with such a connection would refuse every message until restarted.
 */
export function reopenWhenEnded(c: RedisClient, closing: () => boolean, onReopen?: () => void): void {
  c.on('end', () => {
    if (closing()) return;
    const timer = setTimeout(() => {
      if (closing() || c.status !== 'end') return;
      onReopen?.();
      c.connect().catch(() => undefined);
    }, 500);
    timer.unref();
  });
}

/** Sockets whose writes coalesceWrites gathers (a reconnect brings a new socket). */
const coalesced = new WeakSet<object>();

/**
 * The commands a connection writes in one turn of the event loop leave in one system call, not one each: the socket
 * is corked at the turn's first write and uncorked once the turn's I/O callbacks have run (setImmediate). bull writes
 * each command as it is issued, and its worker issues them in runs: when a transaction of several jobs ends, one
 * `moveToFinished` per job, then one `moveToActive` per free slot, then one `BRPOPLPUSH` each on the blocking
 * connection (strace of the delivery thread, one reading per request: runs of 3 to 9 writes between two reads). Each
 * write on a loopback socket runs Redis's side of TCP and wakes Redis. Gathered, the gateway made 1.86–1.89 instead
 * of 2.29–2.39 writes per reading and Redis spent 4–8 % less CPU per reading (`bench/path.ts --dist --only cost
 * --batch 1`, in turns), which is what one Redis shared by many gateway processes runs out of first. The gateway's
 * own CPU and the readings/s stayed within the noise. Not on a cluster client (its nodes' connections are its own).
 */
export function coalesceWrites(c: RedisClient): void {
  if (isCluster(c)) return;
  const gather = () => {
    const socket = (c as Redis & { stream?: import('node:net').Socket }).stream;
    if (!socket || coalesced.has(socket)) return;
    coalesced.add(socket);
    let corked = false;
    const uncork = () => {
      corked = false;
      socket.uncork();
    };
    const write = socket.write;
    socket.write = function (this: typeof socket, ...args: Parameters<typeof write>) {
      if (!corked) {
        corked = true;
        socket.cork();
        setImmediate(uncork);
      }
      return write.apply(this, args);
    } as typeof write;
  };
  c.on('connect', gather);
  gather();
}
