/**
 * The FHIR Device a registry record implies, and the delivery translation that writes it: a conditional update on the
 * primary identifier (`deviceWriteMode: 'update'` → `PUT Device?identifier=system|value` in the transaction), so the
 * same state written twice is the same resource, and a Device that does not exist yet is created.
 * The patient and the location are logical references (by identifier): the EHR resolves them, the gateway does not
 * need to know their ids.
 */
import type { Device } from 'fhir/r4';
import type { Reading } from '../core/contract.js';
import { fhirStatus, type DeviceRecord } from './model.js';

import { canonicalEui64, EUI64_SYSTEM } from '../fhir/identifiers.js';

export { EUI64_SYSTEM } from '../fhir/identifiers.js';
export const SERIAL_SYSTEM = 'urn:iomt-gateway:serial-number';
export const LOCATION_IDENTIFIER_SYSTEM = 'urn:iomt-gateway:location-id';
/**
 * Extension carrying the registry record's version on the Device of a registry update. Two updates of one device
 * queued close together may be delivered in either order; a worker that remembers the last version written per device
 * (under the device lock) skips an older one. See deviceRegistryVersion().
 */
import { REGISTRY_VERSION_EXTENSION } from '../fhir/extensions.js';
export const REGISTRY_VERSION_URL = REGISTRY_VERSION_EXTENSION;

/** The registry version a Device of a registry update carries (undefined for adapter-built Devices). */
export function deviceRegistryVersion(d: Device): number | undefined {
  return d.extension?.find((e) => e.url === REGISTRY_VERSION_URL)?.valueInteger;
}

export interface DeviceSystems {
  deviceIdentifierSystem: string;
  patientIdentifierSystem: string;
}

export function deviceResource(r: DeviceRecord, s: DeviceSystems): Device {
  const d: Device = {
    resourceType: 'Device',
    identifier: [{ system: s.deviceIdentifierSystem, value: r.id }],
    status: fhirStatus(r.state),
    extension: [{ url: REGISTRY_VERSION_URL, valueInteger: r.version ?? 1 }],
  };
  if (r.identifiers.eui64) d.identifier!.push({ system: EUI64_SYSTEM, value: canonicalEui64(r.identifiers.eui64) ?? r.identifiers.eui64 });
  if (r.identifiers.serialNumber) d.serialNumber = r.identifiers.serialNumber;
  if (r.identifiers.udi) d.udiCarrier = [{ carrierHRF: r.identifiers.udi }];
  if (r.manufacturer) d.manufacturer = r.manufacturer;
  if (r.model) d.modelNumber = r.model;
  if (r.type) d.type = { text: r.type };
  if (r.firmwareVersion) d.version = [{ type: { text: 'firmware' }, value: r.firmwareVersion }];
  if (r.owner || r.department) d.owner = { display: [r.owner, r.department].filter(Boolean).join(' / ') };
  if (r.state === 'active' && r.assignment?.patientId) {
    d.patient = { type: 'Patient', identifier: { system: s.patientIdentifierSystem, value: r.assignment.patientId } };
  }
  if (r.state === 'active' && r.assignment?.locationId) {
    d.location = { type: 'Location', identifier: { system: LOCATION_IDENTIFIER_SYSTEM, value: r.assignment.locationId } };
  }
  return d;
}

/** The translation a lifecycle or assignment change is delivered as (one Device, conditional update). */
export function deviceUpdateTranslation(r: DeviceRecord, s: DeviceSystems): Reading {
  return { devices: [deviceResource(r, s)], observations: [], deviceWriteMode: 'update' };
}
