/**
 * The gateway's own FHIR extension URLs. The code that writes an extension and the code that reads it back must agree
 * on its URL, so each is defined once, here, where both can import it without importing each other.
 */

/**
 * The registry record's version, on the Device of a lifecycle update. Written by devices/fhir.ts; read by the delivery
 * worker (delivery/device-versions.ts), which skips an update older than the last one written for that device.
 */
export const REGISTRY_VERSION_EXTENSION = 'urn:iomt-gateway:fhir:StructureDefinition/device-registry-version';
