/**
 * Adapters that can translate off the event loop (declarative mappings: mapping/pool.ts). The pipeline asks for this
 * shape instead of a kind of adapter, so a future adapter kind can offer the same without the pipeline knowing it.
 */
import type { DeviceAdapter, InboundMessage, Reading, TranslationContext } from '../core/contract.js';

export interface OffThreadAdapter extends DeviceAdapter {
  /** translate(), off the event loop and within the time budget per message. */
  translateAsync(message: InboundMessage, context: TranslationContext): Promise<Reading[]>;
}

export function isOffThread(adapter: DeviceAdapter): adapter is OffThreadAdapter {
  return typeof (adapter as Partial<OffThreadAdapter>).translateAsync === 'function';
}
