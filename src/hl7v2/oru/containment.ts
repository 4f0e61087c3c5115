/**
 * The IEEE 11073 (MDC) containment tree of an IHE PCD-01 message, and which device each OBX belongs to.
 *
 * A device report is a tree of four levels, each sent as an OBX row: the MDS (medical device system: the device
 * itself, e.g. a patient monitor), its VMDs (virtual medical devices: a module, e.g. the SpO2 or NIBP unit), their
 * channels (a group of related measurements, e.g. one NIBP cuff measurement), and the metrics (one measured value each,
 * e.g. systolic pressure). OBX-4 gives the position of a row as dotted numbers "MDS.VMD.CHANNEL.METRIC": "1.0.0.0" is
 * MDS 1, "1.2.0.0" its VMD 2, "1.2.1.0" that VMD's channel 1, "1.2.1.1" metric 1 of that channel. Rows above the metric
 * level usually carry no value: they are containers, which give their children a device type (OBX-3 of the MDS), a
 * device identity (OBX-18 of the MDS, an EUI-64) and a time (OBX-14) that metrics without their own inherit.
 */
import { canonicalEui64, MDS_INSTANCE_SYSTEM } from '../../fhir/identifiers.js';
import type { DeviceIdentity } from '../../fhir/builders.js';
import type { TranslationContext } from '../../core/contract.js';
import type { Hl7TranslateOptions } from '../config.js';
import { get, type Hl7Message, type Hl7Segment } from '../parse.js';
import { valueText } from './values.js';

/** The place of an OBX in the containment tree, read from OBX-4. */
export interface Position {
  /** Always four numbers, [MDS, VMD, channel, metric]; the levels OBX-4 leaves out are 0. */
  path: number[];
  /** The deepest level with a non-zero number: 0 = MDS, 1 = VMD, 2 = channel, 3 = metric. */
  level: number;
}

/**
 * OBX-4 "1.2.1.1" → { path: [1, 2, 1, 1], level: 3 }; "1.2" → { path: [1, 2, 0, 0], level: 1 }. Undefined when OBX-4
 * is empty or not a dotted path of at most four numbers (lab results use OBX-4 as a plain sub-id).
 */
export function containment(obx: Hl7Segment): Position | undefined {
  const s = get(obx, 4);
  if (!s || !/^\d+(\.\d+){0,3}$/.test(s)) return undefined;
  const path = s.split('.').map(Number);
  while (path.length < 4) path.push(0);
  let level = 0;
  for (let i = 0; i < 4; i++) if (path[i] !== 0) level = i;
  return { path, level };
}

/**
 * The key of the tree node at `level` above (or at) a position: the path cut after that level, dotted. For [1, 2, 1, 1]:
 * level 0 → "1" (the MDS), 1 → "1.2" (the VMD), 2 → "1.2.1" (the channel), 3 → "1.2.1.1" (the metric itself).
 */
export function pathKey(path: number[], level: number): string {
  return path.slice(0, level + 1).join('.');
}

/** One OBX of an order with its place in the tree (`pos` undefined when OBX-4 holds no containment path). */
export interface ContainmentNode {
  obx: Hl7Segment;
  pos: Position | undefined;
}

/** The OBX segments of one order (OBR), placed in the containment tree. */
export interface ContainmentTree {
  /** Every OBX of the order, in message order. */
  nodes: ContainmentNode[];
  /** The container rows (an MDS, VMD or channel OBX without a value) by `pathKey`. */
  containers: Map<string, Hl7Segment>;
}

export function containmentTree(obxs: Hl7Segment[]): ContainmentTree {
  const nodes = obxs.map((obx) => ({ obx, pos: containment(obx) }));
  const containers = new Map<string, Hl7Segment>();
  for (const n of nodes) {
    if (n.pos && n.pos.level < 3 && !valueText(n.obx, '^')) containers.set(pathKey(n.pos.path, n.pos.level), n.obx);
  }
  return { nodes, containers };
}

const HEX16 = /^[0-9A-Fa-f]{16}$/;

/** "0a1b2c3d4e5f6071" → "0A-1B-2C-3D-4E-5F-60-71", the written form of an EUI-64 (the registry's too). */
const eui64 = (v: string): string => canonicalEui64(v) as string;

/**
 * OBX-18 (equipment instance identifier, repetition 0; EI: entity^namespace^universal id^universal id type) → device
 * identity. An EUI-64 first (under the configured EUI-64 system), then an id with an ISO OID authority (urn:oid:),
 * then the entity id under the gateway's device system. Undefined when OBX-18 names no device.
 */
export function equipmentIdentity(
  obx: Hl7Segment | undefined,
  translation: TranslationContext,
  opts: Hl7TranslateOptions,
): DeviceIdentity | undefined {
  if (!obx) return undefined;
  const entity = get(obx, 18, 1);
  const ns = get(obx, 18, 2);
  const uid = get(obx, 18, 3);
  const uidType = get(obx, 18, 4)?.toUpperCase();
  const namedEui64 = ns?.toUpperCase() === 'EUI-64' || uidType === 'EUI-64';
  if (entity && HEX16.test(entity) && namedEui64) return { system: opts.eui64System, value: eui64(entity) };
  if (!entity && uid && HEX16.test(uid) && uidType === 'EUI-64') return { system: opts.eui64System, value: eui64(uid) };
  if (!entity) return undefined;
  if (uid && uidType === 'ISO' && /^\d+(\.\d+)+$/.test(uid)) return { system: `urn:oid:${uid}`, value: entity };
  return { system: translation.deviceIdentifierSystem, value: entity };
}

/**
 * The device named by MSH-3 (sending application). It may name the sending device itself by EUI-64 (HD:
 * namespace^universal id^EUI-64); otherwise its first component under the gateway's device system.
 */
export function senderIdentity(msg: Hl7Message, translation: TranslationContext, opts: Hl7TranslateOptions): DeviceIdentity {
  const app = msg.header;
  const parts = app.sendingApplication.split(app.delimiters.component);
  if (parts[2]?.toUpperCase() === 'EUI-64' && HEX16.test(parts[1] ?? '')) return { system: opts.eui64System, value: eui64(parts[1]) };
  return { system: translation.deviceIdentifierSystem, value: parts[0] || 'unknown-sender' };
}

/**
 * The identity of MDS number `mds` of a tree: OBX-18 of the MDS row, else OBX-18 of the first OBX under that MDS that
 * has one, else the sender's identity with "/mds<n>" appended (stable, so the same MDS is the same Device next time),
 * under the gateway's own MDS-instance system when the sender is an EUI-64 (the value is then no EUI-64).
 * The sender itself when there is no MDS number (the OBX has no containment path).
 */
export function mdsIdentity(
  tree: ContainmentTree,
  mds: number | undefined,
  sender: DeviceIdentity,
  translation: TranslationContext,
  opts: Hl7TranslateOptions,
): DeviceIdentity {
  if (mds === undefined) return sender;
  const own = equipmentIdentity(tree.containers.get(String(mds)), translation, opts);
  if (own) return own;
  for (const n of tree.nodes) {
    if (n.pos?.path[0] === mds) {
      const id = equipmentIdentity(n.obx, translation, opts);
      if (id) return id;
    }
  }
  if (sender.system === opts.eui64System) return { system: MDS_INSTANCE_SYSTEM, value: `${sender.value}/mds${mds}` };
  return { system: sender.system, value: `${sender.value}.mds${mds}` };
}
