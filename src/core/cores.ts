/**
 * The cores this process may use: the CPU affinity (os.availableParallelism()) bounded by the cgroup's CPU quota, which
 * is what a container's `--cpus` or a Kubernetes CPU limit sets. Node 20's libuv (1.46) reads the affinity only, so a
 * container limited to one CPU on a host of sixteen sees sixteen; the quota is read here from the cgroup files the
 * kernel gives every process (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the container's own
 * where it has a cgroup namespace, and every ancestor's where it does not (the smallest quota is the one that holds).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** Reads a file as text; throws when it is absent (tests pass their own). */
export type ReadText = (path: string) => string;

const readText: ReadText = (path) => readFileSync(path, 'utf8');

/** `dir` and its ancestors up to `root` (inclusive), deepest first. */
function upTo(root: string, path: string): string[] {
  const parts = path.split('/').filter(Boolean);
  const dirs: string[] = [];
  for (let n = parts.length; n >= 0; n--) dirs.push(n ? `${root}/${parts.slice(0, n).join('/')}` : root);
  return dirs;
}

function tryRead(read: ReadText, path: string): string | undefined {
  try {
    return read(path).trim();
  } catch {
    return undefined;
  }
}

/**
 * The CPU quota of this process's cgroup, in cores (1.5: a quota of 150 ms per 100 ms period), the smallest along its
 * ancestors; undefined where there is none (no limit, not Linux, files not readable).
 */
export function cgroupCpuQuota(read: ReadText = readText): number | undefined {
  const membership = tryRead(read, '/proc/self/cgroup');
  if (!membership) return undefined;
  const quotas: number[] = [];
  for (const line of membership.split('\n')) {
    // "<id>:<controllers>:<path>" (the path may itself hold colons).
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const [id, controllers, path] = [line.slice(0, first), line.slice(first + 1, second), line.slice(second + 1)];
    if (id === '0' && controllers === '') {
      // cgroup v2: "max 100000" or "<quota> <period>" in each cgroup's cpu.max.
      for (const dir of upTo('/sys/fs/cgroup', path)) {
        const [quota, period] = (tryRead(read, `${dir}/cpu.max`) ?? '').split(/\s+/);
        const cores = Number(quota) / Number(period);
        if (quota !== 'max' && Number.isFinite(cores) && cores > 0) quotas.push(cores);
      }
    } else if (controllers.split(',').includes('cpu')) {
      // cgroup v1: the cpu controller's hierarchy, mounted as cpu,cpuacct or cpu; -1 is no quota.
      for (const mount of ['/sys/fs/cgroup/cpu,cpuacct', '/sys/fs/cgroup/cpu']) {
        for (const dir of upTo(mount, path)) {
          const quota = Number(tryRead(read, `${dir}/cpu.cfs_quota_us`));
          const period = Number(tryRead(read, `${dir}/cpu.cfs_period_us`));
          if (quota > 0 && period > 0) quotas.push(quota / period);
        }
      }
    }
  }
  return quotas.length ? Math.min(...quotas) : undefined;
}

/**
 * Whole cores this process may keep busy: the affinity, bounded by the quota rounded down (a quota of 1.5 cores is
 * one core and a half, not two), at least 1.
 */
export function usableCores(read: ReadText = readText, affinity = availableParallelism()): { cores: number; quota?: number } {
  const quota = cgroupCpuQuota(read);
  return {
    cores: Math.max(1, quota === undefined ? affinity : Math.min(affinity, Math.floor(quota))),
    ...(quota !== undefined ? { quota } : {}),
  };
}
