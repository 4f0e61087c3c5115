/**
 * Device identifier systems and their canonical forms, shared by every path that names a device (the registry, HL7
 * OBX-18 and MSH-3, vendor payloads), so that one device has one identifier value under one system however it arrived.
 */

/** IEEE EUI-64 (the IEEE 11073 system id), the system the HL7 Personal Health Device IG uses. */
export const EUI64_SYSTEM = 'urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680';

/**
 * The gateway's own system for an MDS (medical device system) instance of an HL7 sender that has no identity of its
 * own: "<sender>/mds<n>". Never under the EUI-64 system: such a value is no EUI-64.
 */
export const MDS_INSTANCE_SYSTEM = 'urn:iomt-gateway:hl7-mds-instance';

/**
 * An EUI-64 in the PHD IG's written form, "00-1B-C5-0C-00-00-00-07" (upper case, dashes), from 16 hex digits written
 * with or without dashes, colons or spaces; undefined when it is not an EUI-64.
 */
export function canonicalEui64(v: string): string | undefined {
  // 16 hex digits as they usually come (HL7 OBX-18) skip the separator removal.
  const hex = HEX16.test(v) ? v : v.replace(/[-:\s]/g, '');
  if (!HEX16.test(hex)) return undefined;
  const u = hex.toUpperCase();
  return `${u.slice(0, 2)}-${u.slice(2, 4)}-${u.slice(4, 6)}-${u.slice(6, 8)}-${u.slice(8, 10)}-${u.slice(10, 12)}-${u.slice(12, 14)}-${u.slice(14)}`;
}

const HEX16 = /^[0-9A-Fa-f]{16}$/;
