/**
 * Offline detection: every DEVICE_OFFLINE_CHECK_INTERVAL_MS, active devices silent for longer than their threshold
 * (DEVICE_OFFLINE_AFTER_MS, or the per-type value) are counted (metrics) and announced once per silence on the
 * webhook (the claim is made in Redis, so one instance announces it even when several run the check).
 * The API computes online/offline on read, so it does not depend on this loop.
 */
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { type ConnectivityState, DEVICE_STATES, type DeviceState } from './model.js';
import type { Notifier } from './notify.js';
import type { DeviceService } from './service.js';

export class OfflineMonitor {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  readonly counts: Record<DeviceState | 'offline', number> = { registered: 0, active: 0, suspended: 0, decommissioned: 0, offline: 0 };
  /** Active devices by connectivity, from the last check. */
  readonly connectivity: Record<Exclude<ConnectivityState, 'unknown'>, number> = { online: 0, offline: 0 };

  constructor(
    private readonly svc: DeviceService,
    private readonly notifier: Notifier,
    private readonly intervalMs: number,
    private readonly log: Logger,
    metrics: Metrics,
  ) {
    for (const s of DEVICE_STATES) metrics.gauge(`devices{state="${s}"}`, () => this.counts[s]);
    metrics.gauge('devices_offline', () => this.counts.offline);
    metrics.gaugeFamily('devices_connectivity', () =>
      Object.entries(this.connectivity).map(([connectivity, value]) => ({ labels: { connectivity }, value })),
    );
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
    void this.check();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  check(): Promise<void> {
    this.running ??= this.doCheck().finally(() => (this.running = undefined));
    return this.running;
  }

  private async doCheck(): Promise<void> {
    try {
      const records = await this.svc.registry.all();
      const tel = await this.svc.registry.telemetry(records.filter((r) => r.state === 'active').map((r) => r.id));
      const counts = { registered: 0, active: 0, suspended: 0, decommissioned: 0, offline: 0 };
      const connectivity = { online: 0, offline: 0 };
      const now = Date.now();
      for (const r of records) {
        counts[r.state]++;
        if (r.state !== 'active') continue;
        const t = tel.get(r.id);
        const state = this.svc.connectivity(r, t, now);
        connectivity[state === 'offline' ? 'offline' : 'online']++;
        if (state !== 'offline') continue;
        counts.offline++;
        const silence = t?.lastSeen ?? `never:${r.stateChangedAt}`;
        if (await this.svc.registry.claimOfflineAlert(r.id, silence)) {
          this.log.info({ deviceId: r.id, type: r.type, lastSeen: t?.lastSeen }, 'device offline');
          this.notifier.send({
            event: 'device.offline',
            deviceId: r.id,
            at: new Date(now).toISOString(),
            type: r.type,
            lastSeen: t?.lastSeen,
          });
        }
      }
      Object.assign(this.counts, counts);
      Object.assign(this.connectivity, connectivity);
    } catch (err) {
      this.log.warn({ error: (err as Error).message }, 'offline check failed');
    }
  }
}
