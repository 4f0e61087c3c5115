/**
 * The device lifecycle, as a closed set: states, the actions that move between them, and what each state means for
 * data and for the FHIR Device. Adding a state or an action breaks the build wherever it must be handled.
 *
 *   registered ──activate──► active ◄──activate── suspended
 *       │                      │ └──────suspend──────►┘ │
 *       └──decommission──► decommissioned ◄──decommission┘  (terminal)
 */
import type { Device } from 'fhir/r4';

export const DeviceStates = {
  /** Procured, not yet deployed: its data is refused (or held, for devices auto-registered under the hold policy). */
  registered: 'registered',
  /** Deployed: its data is accepted; it may be assigned to a patient and a location. */
  active: 'active',
  /** Maintenance or quarantine: its data is refused. */
  suspended: 'suspended',
  /** Retired (terminal): credentials, assignment and held data wiped. */
  decommissioned: 'decommissioned',
} as const;
export type DeviceState = (typeof DeviceStates)[keyof typeof DeviceStates];
export const DEVICE_STATES = Object.values(DeviceStates);

export const DeviceActions = { activate: 'activate', suspend: 'suspend', decommission: 'decommission' } as const;
export type DeviceAction = (typeof DeviceActions)[keyof typeof DeviceActions];
export const DEVICE_ACTIONS = Object.values(DeviceActions);

/** The state an action leads to from `from`, or undefined when the transition is not allowed. */
export function nextState(from: DeviceState, action: DeviceAction): DeviceState | undefined {
  switch (from) {
    case 'registered':
      return action === 'activate' ? 'active' : action === 'decommission' ? 'decommissioned' : undefined;
    case 'active':
      return action === 'suspend' ? 'suspended' : action === 'decommission' ? 'decommissioned' : undefined;
    case 'suspended':
      return action === 'activate' ? 'active' : action === 'decommission' ? 'decommissioned' : undefined;
    case 'decommissioned':
      return undefined;
    default:
      from satisfies never;
      return undefined;
  }
}

/** May a device in this state send data? */
export function acceptsData(state: DeviceState): boolean {
  switch (state) {
    case 'active':
      return true;
    case 'registered':
    case 'suspended':
    case 'decommissioned':
      return false;
    default:
      state satisfies never;
      return false;
  }
}

/** FHIR Device.status of a state. */
export function fhirStatus(state: DeviceState): NonNullable<Device['status']> {
  switch (state) {
    case 'active':
      return 'active';
    case 'registered':
    case 'suspended':
    case 'decommissioned':
      return 'inactive';
    default:
      state satisfies never;
      return 'unknown';
  }
}

export interface DeviceIdentifiers {
  serialNumber?: string;
  /** IEEE EUI-64, 16 hex digits. */
  eui64?: string;
  /** UDI carrier (human-readable form). */
  udi?: string;
}

export interface DeviceRecord {
  /** The device id its payloads carry (Device.identifier value in the DEVICE_IDENTIFIER_SYSTEM). */
  id: string;
  identifiers: DeviceIdentifiers;
  manufacturer?: string;
  model?: string;
  type?: string;
  /** The adapter it speaks (e.g. measurements). */
  adapter?: string;
  /** Owning vendor (vendor credentials act on their own devices only). */
  vendor?: string;
  owner?: string;
  department?: string;
  firmwareVersion?: string;
  state: DeviceState;
  /** Patient and location assignment (active devices). The patient id is PHI: never logged, never in audit events. */
  assignment?: { patientId?: string; locationId?: string; assignedAt: string };
  /** Set when the device was registered automatically by the unknown-device policy. */
  autoRegistered?: 'hold' | 'accept';
  createdAt: string;
  updatedAt: string;
  stateChangedAt: string;
  createdBy: string;
  /** Increases with every change of the record (compare-and-set); orders the FHIR Device writes. */
  version: number;
}

/** What monitoring knows of a device (kept apart from the record: written on every message). */
export interface DeviceTelemetry {
  lastSeen?: string;
  lastChannel?: string;
  messages: number;
  errors: number;
  battery?: number;
  batteryAt?: string;
  signal?: number;
  signalAt?: string;
}

export const Connectivity = { online: 'online', offline: 'offline', unknown: 'unknown' } as const;
export type ConnectivityState = (typeof Connectivity)[keyof typeof Connectivity];

/** The device id syntax is the registry's, and every channel's (core/ids.ts). */
export { DEVICE_ID } from '../core/ids.js';

/** A vendor id: used in URLs and as a principal id. */
export const VENDOR_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
