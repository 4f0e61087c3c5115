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
  const hex = v.replace(/[-:\s]/g, '');
  return /^[0-9A-Fa-f]{16}$/.test(hex) ? hex.toUpperCase().match(/.{2}/g)!.join('-') : undefined;
}
