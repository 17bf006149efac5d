/**
 * The VHDX metadata region ([MS-VHDX] 2.6): a 64 KiB table of items (GUID, offset, length, flags) and the
 * items it points at: file parameters, virtual disk size, page 83 id, logical and physical sector size,
 * and for a differencing disk the parent locator (UTF-16LE key/value pairs). An unknown item marked
 * required must be refused. Pure functions over bytes.
 */
import { VhdsyncError } from '../../errors.js';
import { KiB, MiB, formatSize } from '../../units.js';
import { encodeUtf16le, guidBytes, guidEqual, guidText, isGuidText, isPowerOfTwo, le16, le32, le64, putLe16, putLe32, putLe64, putSignature, shownSignature, signature, utf16le } from './le.js';

export const METADATA_TABLE_SIZE = 64 * KiB;
export const MAX_METADATA_ENTRIES = 2047;
/** [MS-VHDX] 2.6.1.2: an item is at most 1 MiB. */
export const MAX_ITEM_SIZE = 1 * MiB;
export const MIN_BLOCK_SIZE = 1 * MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
/** [MS-VHDX] 2.6.2.2: at most 64 TiB. */
export const MAX_VIRTUAL_SIZE = 64 * 1024 * 1024 * MiB;

export const ITEM = {
  fileParameters: guidBytes('CAA16737-FA36-4D43-B3B6-33F0AA44E76B'),
  virtualDiskSize: guidBytes('2FA54224-CD1B-4876-B211-5DBED83BF4B8'),
  page83: guidBytes('BECA12AB-B2E6-4523-93EF-C309E000C746'),
  logicalSectorSize: guidBytes('8141BF1D-A96F-4709-BA47-F233A8FAAB5F'),
  physicalSectorSize: guidBytes('CDA348C7-445D-4471-9CC9-E9885251C556'),
  parentLocator: guidBytes('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C'),
} as const;
export type ItemKind = keyof typeof ITEM;

/** Locator type of a VHDX parent ([MS-VHDX] 2.6.2.6). */
export const PARENT_TYPE_VHDX = guidBytes('B04AEFB7-D19E-4A81-B789-25B8E9445913');

const FLAG_IS_USER = 1;
const FLAG_IS_VIRTUAL_DISK = 2;
const FLAG_IS_REQUIRED = 4;

export interface MetadataEntry {
  itemId: Uint8Array;
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

/** Where each known item lives, relative to the metadata region. */
export type ItemLocations = Partial<Record<ItemKind, { offset: number; length: number }>>;

const KNOWN: Array<[ItemKind, number]> = [
  ['fileParameters', 8], ['virtualDiskSize', 8], ['page83', 16], ['logicalSectorSize', 4], ['physicalSectorSize', 4], ['parentLocator', 20],
];

/** Parse and check the metadata table; returns where the known items are. */
export function parseMetadataTable(b: Uint8Array, regionLength: number, path: string): ItemLocations {
  if (b.length < METADATA_TABLE_SIZE) throw new VhdsyncError('TRUNCATED', `${path}: the VHDX metadata table is cut short`);
  if (signature(b, 0, 8) !== 'metadata') {
    throw new VhdsyncError('BAD_COOKIE', `${path}: VHDX metadata table signature is '${shownSignature(b, 0, 8)}', not 'metadata'; the image is corrupt`);
  }
  const count = le16(b, 10);
  if (count > MAX_METADATA_ENTRIES) {
    throw new VhdsyncError('BAD_SIZE', `${path}: VHDX metadata table claims ${count} entries (at most ${MAX_METADATA_ENTRIES}); the image is corrupt`);
  }
  const found: ItemLocations = {};
  const spans: Array<{ offset: number; length: number }> = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const e: MetadataEntry = {
      itemId: b.slice(at, at + 16),
      offset: le32(b, at + 16),
      length: le32(b, at + 20),
      isUser: (le32(b, at + 24) & FLAG_IS_USER) !== 0,
      isVirtualDisk: (le32(b, at + 24) & FLAG_IS_VIRTUAL_DISK) !== 0,
      isRequired: (le32(b, at + 24) & FLAG_IS_REQUIRED) !== 0,
    };
    const known = e.isUser ? undefined : KNOWN.find(([k]) => guidEqual(e.itemId, 0, ITEM[k]));
    const name = known ? known[0] : `item ${guidText(e.itemId)}`;
    if (!known) {
      if (e.isRequired) {
        throw new VhdsyncError('UNSUPPORTED', `${path}: the VHDX requires metadata ${name}, which vhdsync does not know; refusing to open it`);
      }
      continue;
    }
    const [kind, minLength] = known;
    if (found[kind]) throw new VhdsyncError('BAD_SIZE', `${path}: the VHDX metadata table lists ${kind} twice; the image is corrupt`);
    if (e.length < minLength || e.length > MAX_ITEM_SIZE || e.offset < METADATA_TABLE_SIZE || e.offset + e.length > regionLength) {
      throw new VhdsyncError(
        'BAD_SIZE',
        `${path}: VHDX metadata ${kind} at ${e.offset} (+${e.length}) does not fit the ${formatSize(regionLength)} metadata region; the image is corrupt`,
      );
    }
    for (const s of spans) {
      if (e.offset < s.offset + s.length && s.offset < e.offset + e.length) {
        throw new VhdsyncError('BAD_SIZE', `${path}: VHDX metadata ${kind} overlaps another item; the image is corrupt`);
      }
    }
    spans.push({ offset: e.offset, length: e.length });
    found[kind] = { offset: e.offset, length: e.length };
  }
  for (const [kind] of KNOWN) {
    if (kind !== 'parentLocator' && !found[kind]) {
      throw new VhdsyncError('UNSUPPORTED', `${path}: the VHDX has no ${kind} metadata item, which every VHDX must have; the image is corrupt`);
    }
  }
  return found;
}

export interface VhdxParams {
  blockSize: number;
  /** File parameters bit 0: a fixed VHDX. */
  leaveBlocksAllocated: boolean;
  /** File parameters bit 1: a differencing VHDX. */
  hasParent: boolean;
  virtualSize: number;
  /** Page 83 data: the virtual disk id (shared by a differencing disk and its parent). */
  page83: Uint8Array;
  logicalSectorSize: number;
  physicalSectorSize: number;
  parentLocator?: ParentLocator;
}

/** Interpret the item bytes read from the locations `parseMetadataTable` returned. */
export function interpretMetadata(items: Partial<Record<ItemKind, Uint8Array>>, path: string): VhdxParams {
  const fp = items.fileParameters!;
  const blockSize = le32(fp, 0);
  const bits = le32(fp, 4);
  const virtualSize = le64(items.virtualDiskSize!, 0);
  const logicalSectorSize = le32(items.logicalSectorSize!, 0);
  const physicalSectorSize = le32(items.physicalSectorSize!, 0);
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new VhdsyncError('BAD_BLOCK_SIZE', `${path}: VHDX block size ${blockSize} is not a power of two from 1 MiB to 256 MiB; the image is corrupt`);
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) {
    throw new VhdsyncError('BAD_SIZE', `${path}: VHDX logical sector size ${logicalSectorSize} is neither 512 nor 4096; the image is corrupt`);
  }
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) {
    throw new VhdsyncError('BAD_SIZE', `${path}: VHDX physical sector size ${physicalSectorSize} is neither 512 nor 4096; the image is corrupt`);
  }
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize > MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize !== 0) {
    throw new VhdsyncError(
      'BAD_SIZE',
      `${path}: VHDX virtual size ${virtualSize} is not a positive multiple of the ${logicalSectorSize}-byte sector up to 64 TiB; the image is corrupt`,
    );
  }
  const hasParent = (bits & 2) !== 0;
  const params: VhdxParams = {
    blockSize,
    leaveBlocksAllocated: (bits & 1) !== 0,
    hasParent,
    virtualSize,
    page83: items.page83!.slice(0, 16),
    logicalSectorSize,
    physicalSectorSize,
  };
  if (hasParent) {
    if (!items.parentLocator) {
      throw new VhdsyncError('PARENT_MISSING', `${path}: the VHDX is a differencing disk without a parent locator; the image is corrupt`);
    }
    params.parentLocator = parseParentLocator(items.parentLocator, path);
  }
  return params;
}

export interface ParentLocator {
  /** Keys in file order with their values. */
  entries: Map<string, string>;
  /** `parent_linkage` (and `parent_linkage2`): the parent's DataWriteGuid as text, lowercase without braces. */
  linkage: string[];
}

/** [MS-VHDX] 2.6.2.6: locator type, key/value count, 12-byte entries, UTF-16LE strings. */
export function parseParentLocator(b: Uint8Array, path: string): ParentLocator {
  if (b.length < 20) throw new VhdsyncError('BAD_SIZE', `${path}: the VHDX parent locator is ${b.length} bytes, too short; the image is corrupt`);
  if (!guidEqual(b, 0, PARENT_TYPE_VHDX)) {
    throw new VhdsyncError('UNSUPPORTED', `${path}: the VHDX parent locator is of type ${guidText(b, 0)}, not a VHDX parent; vhdsync cannot open its parent`);
  }
  const count = le16(b, 18);
  if (20 + count * 12 > b.length) {
    throw new VhdsyncError('BAD_SIZE', `${path}: the VHDX parent locator claims ${count} entries, more than its ${b.length} bytes hold; the image is corrupt`);
  }
  const entries = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12;
    const keyOff = le32(b, at);
    const valOff = le32(b, at + 4);
    const keyLen = le16(b, at + 8);
    const valLen = le16(b, at + 10);
    if (keyLen === 0 || valLen === 0 || keyOff + keyLen > b.length || valOff + valLen > b.length || keyLen % 2 || valLen % 2) {
      throw new VhdsyncError('BAD_SIZE', `${path}: VHDX parent locator entry ${i} points outside the locator; the image is corrupt`);
    }
    const key = utf16le(b, keyOff, keyLen);
    if (entries.has(key)) throw new VhdsyncError('BAD_SIZE', `${path}: the VHDX parent locator has the key '${key}' twice; the image is corrupt`);
    entries.set(key, utf16le(b, valOff, valLen));
  }
  const linkage: string[] = [];
  for (const key of ['parent_linkage', 'parent_linkage2']) {
    const v = entries.get(key);
    if (v === undefined) continue;
    if (!isGuidText(v)) throw new VhdsyncError('PARENT_MISMATCH', `${path}: VHDX ${key} '${v}' is not a GUID; the image is corrupt`);
    linkage.push(guidText(guidBytes(v)));
  }
  if (!entries.has('parent_linkage')) {
    throw new VhdsyncError('PARENT_MISSING', `${path}: the VHDX parent locator has no parent_linkage; the parent cannot be verified`);
  }
  return { entries, linkage };
}

export function buildParentLocator(pairs: Array<[string, string]>): Uint8Array {
  const strings = pairs.map(([k, v]) => [encodeUtf16le(k), encodeUtf16le(v)] as const);
  let at = 20 + pairs.length * 12;
  const total = at + strings.reduce((n, [k, v]) => n + k.length + v.length, 0);
  const b = new Uint8Array(total);
  b.set(PARENT_TYPE_VHDX, 0);
  putLe16(b, 18, pairs.length);
  strings.forEach(([k, v], i) => {
    const e = 20 + i * 12;
    putLe32(b, e, at);
    putLe32(b, e + 4, at + k.length);
    putLe16(b, e + 8, k.length);
    putLe16(b, e + 10, v.length);
    b.set(k, at);
    b.set(v, at + k.length);
    at += k.length + v.length;
  });
  return b;
}

/** `{abcd...}` as Hyper-V writes parent_linkage. */
export function linkageText(guid: Uint8Array): string {
  return `{${guidText(guid)}}`;
}

/** The metadata region's meaningful bytes: the table, then the items from 64 KiB (as Hyper-V lays them out). */
export function buildMetadataRegion(p: VhdxParams, locator?: Uint8Array): Uint8Array {
  const items: Array<[Uint8Array, Uint8Array, number]> = [];
  const fp = new Uint8Array(8);
  putLe32(fp, 0, p.blockSize);
  putLe32(fp, 4, (p.leaveBlocksAllocated ? 1 : 0) | (p.hasParent ? 2 : 0));
  items.push([ITEM.fileParameters, fp, FLAG_IS_REQUIRED]);
  const vs = new Uint8Array(8);
  putLe64(vs, 0, p.virtualSize);
  items.push([ITEM.virtualDiskSize, vs, FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK]);
  items.push([ITEM.page83, p.page83, FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK]);
  const ls = new Uint8Array(4);
  putLe32(ls, 0, p.logicalSectorSize);
  items.push([ITEM.logicalSectorSize, ls, FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK]);
  const ps = new Uint8Array(4);
  putLe32(ps, 0, p.physicalSectorSize);
  items.push([ITEM.physicalSectorSize, ps, FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK]);
  if (locator) items.push([ITEM.parentLocator, locator, FLAG_IS_REQUIRED]);

  const size = METADATA_TABLE_SIZE + items.reduce((n, [, data]) => n + data.length, 0);
  const b = new Uint8Array(size);
  putSignature(b, 0, 'metadata');
  putLe16(b, 10, items.length);
  let at = METADATA_TABLE_SIZE;
  items.forEach(([id, data, flags], i) => {
    const e = 32 + i * 32;
    b.set(id, e);
    putLe32(b, e + 16, at);
    putLe32(b, e + 20, data.length);
    putLe32(b, e + 24, flags);
    b.set(data, at);
    at += data.length;
  });
  return b;
}
