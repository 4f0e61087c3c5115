/**
 * The cores a process may use (core/cores.ts): the CPU affinity bounded by the cgroup's CPU quota, read from the files
 * the kernel gives (cgroup v2 and v1), and what DELIVERY_THREAD=auto makes of it.
 */
import { strict as assert } from 'node:assert';
import { deliversOnThread } from '../../src/app/delivery-host.js';
import { type Config, loadConfig } from '../../src/config/index.js';
import { cgroupCpuQuota, type ReadText, usableCores } from '../../src/core/cores.js';

/** A read of the given files only; any other path is absent, as on a machine without it. */
const files =
  (f: Record<string, string>): ReadText =>
  (path) => {
    if (!(path in f)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return f[path];
  };

describe('usable cores: CPU affinity and the cgroup CPU quota', () => {
  it('cgroup v2, in a container with its own cgroup namespace (docker --cpus=1.5)', () => {
    const read = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '150000 100000\n' });
    assert.equal(cgroupCpuQuota(read), 1.5);
    assert.deepEqual(usableCores(read, 16), { cores: 1, quota: 1.5 });
  });

  it('cgroup v2 without a limit ("max"): the affinity', () => {
    const read = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': 'max 100000\n' });
    assert.equal(cgroupCpuQuota(read), undefined);
    assert.deepEqual(usableCores(read, 4), { cores: 4 });
  });

  it('cgroup v2 without a namespace: the smallest quota along the ancestors holds', () => {
    const read = files({
      '/proc/self/cgroup': '0::/kubepods.slice/pod-a/cri-b\n',
      '/sys/fs/cgroup/kubepods.slice/pod-a/cri-b/cpu.max': 'max 100000',
      '/sys/fs/cgroup/kubepods.slice/pod-a/cpu.max': '300000 100000',
      '/sys/fs/cgroup/kubepods.slice/cpu.max': '800000 100000',
      '/sys/fs/cgroup/cpu.max': 'max 100000',
    });
    assert.equal(cgroupCpuQuota(read), 3);
    assert.deepEqual(usableCores(read, 2), { cores: 2, quota: 3 });
    assert.deepEqual(usableCores(read, 8), { cores: 3, quota: 3 });
  });

  it('cgroup v1: cpu.cfs_quota_us over cpu.cfs_period_us (-1: none), under the cpu,cpuacct mount', () => {
    const limited = files({
      '/proc/self/cgroup': '12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n',
      '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us': '50000',
      '/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us': '100000',
    });
    assert.equal(cgroupCpuQuota(limited), 0.5);
    assert.deepEqual(usableCores(limited, 8), { cores: 1, quota: 0.5 });
    const unlimited = files({
      '/proc/self/cgroup': '2:cpuacct:/\n1:cpu:/\n0::/\n',
      '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1',
      '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000',
    });
    assert.equal(cgroupCpuQuota(unlimited), undefined);
  });

  it('a cpu.max it cannot read as a quota is no quota, never NaN cores', () => {
    for (const text of ['abc 100000', '150000 0', '150000', '', '-5 100000']) {
      const read = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': text });
      assert.equal(cgroupCpuQuota(read), undefined, text);
      assert.deepEqual(usableCores(read, 4), { cores: 4 }, text);
    }
  });

  it('no cgroup files (not Linux, or not readable): the affinity', () => {
    assert.equal(cgroupCpuQuota(files({})), undefined);
    assert.deepEqual(usableCores(files({}), 2), { cores: 2 });
    assert.deepEqual(usableCores(files({}), 1), { cores: 1 });
  });

  it('DELIVERY_THREAD=auto delivers on a thread only with two usable cores; on and off are obeyed; other roles never', () => {
    const cases: [setting: string, role: Config['role'], cores: number, threaded: boolean][] = [
      ['auto', 'all', 2, true],
      ['auto', 'all', 1, false], // a quota of 1.5 cores is one core
      ['on', 'all', 1, true],
      ['off', 'all', 8, false],
      ['on', 'ingest', 8, false],
      ['on', 'worker', 8, false],
    ];
    for (const [setting, role, cores, threaded] of cases)
      assert.equal(
        deliversOnThread(loadConfig({ DELIVERY_THREAD: setting }), role, () => cores),
        threaded,
        `${setting}, ${role}, ${cores} cores`,
      );
  });
});
