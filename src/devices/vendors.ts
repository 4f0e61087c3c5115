/**
 * The vendor registry: a vendor is who makes and manages devices, and a vendor credential acts for it. Kept apart from
 * devices because a vendor outlives its devices, and the ingest guard reads a vendor (its allowed adapters) on every
 * message a vendor key sends. Vendors live in Redis under gw:vendor:<id>, with the ids in the set gw:vendor:ids.
 */
import type { RedisClient } from '../queue/connection.js';
import { badRequest, conflict } from '../core/errors.js';
import type { AuditTrail } from '../audit/store.js';
import { VENDOR_ID } from './model.js';
import { who, type Actor } from './keys.js';

export interface VendorRecord {
  id: string;
  name?: string;
  /** Adapters the vendor's credentials may send to (empty: any). */
  adapters: string[];
  createdAt: string;
  createdBy: string;
}

const vendorKey = (id: string) => `gw:vendor:${id}`;
const VENDOR_IDS = 'gw:vendor:ids';

const str = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : undefined);

export class Vendors {
  constructor(
    private readonly redis: RedisClient,
    private readonly audit: AuditTrail,
  ) {}

  async getVendor(id: string): Promise<VendorRecord | undefined> {
    const s = await this.redis.get(vendorKey(id));
    return s ? (JSON.parse(s) as VendorRecord) : undefined;
  }

  async registerVendor(body: unknown, actor: Actor): Promise<VendorRecord> {
    const b = (body ?? {}) as Record<string, unknown>;
    const id = str(b.id);
    if (!id || !VENDOR_ID.test(id)) throw badRequest(`id is required and must match ${VENDOR_ID}`);
    const adapters = b.adapters === undefined ? [] : b.adapters;
    if (!Array.isArray(adapters) || adapters.some((a) => typeof a !== 'string')) {
      throw badRequest('adapters must be an array of adapter ids');
    }
    const v: VendorRecord = {
      id,
      name: str(b.name),
      adapters: adapters as string[],
      createdAt: new Date().toISOString(),
      createdBy: who(actor.principal),
    };
    if ((await this.redis.set(vendorKey(id), JSON.stringify(v), 'NX')) !== 'OK') {
      throw conflict(`vendor '${id}' is already registered`);
    }
    await this.redis.sadd(VENDOR_IDS, id);
    await this.audit.record({
      kind: 'vendor-registered',
      principal: actor.principal,
      address: actor.address,
      entities: [{ kind: 'Vendor', id }],
    });
    return v;
  }

  async listVendors(): Promise<VendorRecord[]> {
    const ids = (await this.redis.smembers(VENDOR_IDS)).sort();
    const out: VendorRecord[] = [];
    for (const id of ids) {
      const v = await this.getVendor(id);
      if (v) out.push(v);
    }
    return out;
  }
}
