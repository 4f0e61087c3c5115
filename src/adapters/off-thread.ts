/**
 * Adapters that translate asynchronously: off the event loop (declarative mappings: mapping/pool.ts), or after loading
 * what a message needs (hl7v2: its fallback parser, loaded on demand). The pipeline asks for this shape instead of a
 * kind of adapter, so a future adapter kind can offer the same without the pipeline knowing it.
 */
import type { DeviceAdapter, InboundMessage, Reading, TranslationContext } from '../core/contract.js';

export interface OffThreadAdapter extends DeviceAdapter {
  /** translate(), asynchronously (a mapping: off the event loop and within the time budget per message). */
  translateAsync(message: InboundMessage, context: TranslationContext): Promise<Reading[]>;
}

export function isOffThread(adapter: DeviceAdapter): adapter is OffThreadAdapter {
  return typeof (adapter as Partial<OffThreadAdapter>).translateAsync === 'function';
}
