/**
 * The optional device webhook (DEVICE_WEBHOOK_URL): a JSON POST per state change and per offline alert. Fire and
 * forget: a slow or failing receiver is logged and counted, and never delays or fails the action that caused it.
 * Events carry device ids, states and times only (no patient data).
 */
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

export interface DeviceEvent {
  event: 'device.state-changed' | 'device.registered' | 'device.offline';
  deviceId: string;
  at: string;
  from?: string;
  to?: string;
  type?: string;
  lastSeen?: string;
  by?: string;
}

export class Notifier {
  private readonly inflight = new Set<Promise<void>>();
  constructor(
    private readonly url: string | undefined,
    private readonly timeoutMs: number,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  send(e: DeviceEvent): void {
    if (!this.url) return;
    const url = this.url;
    const p = (async () => {
      try {
        const r = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(e),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        await r.arrayBuffer().catch(() => undefined);
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        this.metrics.inc('device_webhook_total', { outcome: 'sent' });
      } catch (err) {
        this.metrics.inc('device_webhook_total', { outcome: 'failed' });
        this.log.warn({ event: e.event, deviceId: e.deviceId, error: (err as Error).message }, 'device webhook failed');
      }
    })();
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** Waits for webhook calls in flight (shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }
}
