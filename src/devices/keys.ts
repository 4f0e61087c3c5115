/**
 * The API keys of device management: issuing, rotating and revoking device, vendor and operator credentials, and the
 * HMAC signing secret that comes with a vendor key. Every key change is audited, and a revoked key is dropped from
 * this instance's verification cache at once (the credential store announces it to the other instances).
 *
 * Ownership of a device is not checked here: callers pass a device record they have already checked
 * (DeviceService.mustGet), or check that a key belongs to its owner with `ownedCredential`.
 * Also here: `Actor`, the caller behind every device-management action, and `who`, its name in createdBy stamps.
 */
import { randomBytes } from 'node:crypto';
import type { Principal } from '../core/contract.js';
import { conflict, notFound } from '../core/errors.js';
import { sealSecret } from '../access/hmac.js';
import type { ApiKeyAccess } from '../access/access.js';
import type { Credential, CredentialStore } from '../access/credentials.js';
import type { AuditTrail } from '../audit/store.js';
import type { DeviceConfig } from './config.js';
import type { DeviceRecord } from './model.js';
import type { Vendors } from './vendors.js';

export interface Actor {
  principal: Principal;
  address?: string;
}

/** A principal as `role:id`, the form of createdBy stamps and webhook `by` fields. */
export const who = (p: Principal) => `${p.role}:${p.id}`;

/** A new key: its record and the key itself (shown once; the store keeps only a hash). */
export interface IssuedKey {
  credential: Credential;
  key: string;
}

export interface RotatedKey {
  keyId: string;
  key: string;
  signingSecret?: string;
  previousKeyId: string;
  previousExpiresAt: string;
}

export class DeviceKeys {
  constructor(
    private readonly credentials: CredentialStore,
    private readonly access: Pick<ApiKeyAccess, 'forget'>,
    private readonly audit: AuditTrail,
    private readonly config: Pick<DeviceConfig, 'rotationOverlapMs' | 'signingKey'>,
    private readonly vendors: Pick<Vendors, 'getVendor'>,
  ) {}

  /** A new key for a device whose ownership the caller has checked. */
  async issueDeviceKey(r: DeviceRecord, actor: Actor): Promise<IssuedKey> {
    if (r.state === 'decommissioned') throw conflict(`device '${r.id}' is decommissioned: no credentials can be issued`);
    const createdBy = who(actor.principal);
    const issued = await this.credentials.issue({ role: 'device', owner: r.id, vendorId: r.vendor, createdBy });
    await this.audit.record({
      kind: 'credential-issued',
      principal: actor.principal,
      address: actor.address,
      entities: [
        { kind: 'Device', id: r.id },
        { kind: 'Credential', id: issued.credential.keyId },
      ],
    });
    return issued;
  }

  /** A new vendor key (the vendor must be registered) or operator key; a vendor key may come with a signing secret. */
  async issueKey(role: 'vendor' | 'operator', owner: string, actor: Actor): Promise<IssuedKey & { signingSecret?: string }> {
    if (role === 'vendor' && !(await this.vendors.getVendor(owner))) throw notFound(`no vendor '${owner}' is registered`);
    const signing = this.signingSecret(role);
    const vendorId = role === 'vendor' ? owner : undefined;
    const issued = {
      ...(await this.credentials.issue({ role, owner, vendorId, createdBy: who(actor.principal) }, signing?.[1])),
      ...(signing ? { signingSecret: signing[0] } : {}),
    };
    await this.audit.record({
      kind: 'credential-issued',
      principal: actor.principal,
      address: actor.address,
      entities: [
        ...(role === 'vendor' ? [{ kind: 'Vendor' as const, id: owner }] : []),
        { kind: 'Credential', id: issued.credential.keyId },
      ],
    });
    return issued;
  }

  /** The credentials of one owner (a device id, a vendor id). */
  list(role: Credential['role'], owner: string): Promise<Credential[]> {
    return this.credentials.list(role, owner);
  }

  /** Finds a credential of a given owner (404 when the key id is someone else's: no probing of other owners' keys). */
  async ownedCredential(keyId: string, role: Credential['role'], owner: string): Promise<Credential> {
    const c = await this.credentials.get(keyId);
    if (!c || c.role !== role || c.owner !== owner) throw notFound(`no ${role} credential '${keyId}' of '${owner}'`);
    return c;
  }

  /** An operator credential by key id alone (operators' keys are managed by key id: their owner is only a label). */
  async operatorCredential(keyId: string): Promise<Credential> {
    const c = await this.credentials.get(keyId);
    if (!c || c.role !== 'operator') throw notFound('no such operator credential');
    return c;
  }

  async revokeKey(keyId: string, role: Credential['role'], owner: string, actor: Actor): Promise<void> {
    await this.ownedCredential(keyId, role, owner);
    await this.credentials.revoke(keyId);
    this.access.forget(keyId);
    const ownerEntity =
      role === 'device' ? [{ kind: 'Device' as const, id: owner }] : role === 'vendor' ? [{ kind: 'Vendor' as const, id: owner }] : [];
    await this.audit.record({
      kind: 'credential-revoked',
      principal: actor.principal,
      address: actor.address,
      entities: [...ownerEntity, { kind: 'Credential', id: keyId }],
    });
  }

  /** Revokes every key of a device (decommissioning) and returns their key ids; each revocation is in its history. */
  async revokeDeviceKeys(deviceId: string, actor: Actor): Promise<string[]> {
    const keyIds = await this.credentials.revokeAll('device', deviceId);
    for (const k of keyIds) {
      this.access.forget(k);
      await this.audit.record({
        kind: 'credential-revoked',
        principal: actor.principal,
        address: actor.address,
        entities: [
          { kind: 'Device', id: deviceId },
          { kind: 'Credential', id: k },
        ],
        description: 'revoked by decommissioning',
      });
    }
    return keyIds;
  }

  /** A new key for the same owner; the old one keeps working for CREDENTIAL_ROTATION_OVERLAP_MS. */
  async rotateKey(keyId: string, role: Credential['role'], owner: string, actor: Actor): Promise<RotatedKey> {
    await this.ownedCredential(keyId, role, owner);
    const signing = this.signingSecret(role);
    const r = await this.credentials.rotate(keyId, this.config.rotationOverlapMs, who(actor.principal), signing?.[1]);
    if (!r) throw conflict(`credential '${keyId}' has expired: issue a new one`);
    if (this.config.rotationOverlapMs === 0) this.access.forget(keyId);
    const ownerEntity =
      role === 'device' ? [{ kind: 'Device' as const, id: owner }] : role === 'vendor' ? [{ kind: 'Vendor' as const, id: owner }] : [];
    await this.audit.record({
      kind: 'credential-rotated',
      principal: actor.principal,
      address: actor.address,
      entities: [...ownerEntity, { kind: 'Credential', id: keyId }, { kind: 'Credential', id: r.credential.keyId }],
      description: `old key valid until ${r.previousExpiresAt}`,
    });
    return {
      keyId: r.credential.keyId,
      key: r.key,
      ...(signing ? { signingSecret: signing[0] } : {}),
      previousKeyId: keyId,
      previousExpiresAt: r.previousExpiresAt,
    };
  }

  /** A new HMAC signing secret for a vendor key, when CREDENTIAL_SIGNING_KEY is set: [plain (shown once), sealed]. */
  private signingSecret(role: Credential['role']): [string, string] | undefined {
    if (role !== 'vendor' || !this.config.signingKey) return undefined;
    const secret = randomBytes(32).toString('base64url');
    return [secret, sealSecret(secret, this.config.signingKey)];
  }
}
