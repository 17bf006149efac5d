import { open, readFile } from 'node:fs/promises';
import { getCore } from '../core/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { removeIfExists, writeFileAtomic } from '../fsutil.js';

/**
 * The dirty map of a primary disk (`<disk>.vhdsync-dirty`): one bit per extent that may differ from the
 * replica named in it, kept from the moment replication stops logging data (a crash's scope absorbed
 * from the activity log and the logs, then every write in bitmap mode) until a resync commits.
 * While it exists and the disk has no open tracking log, the tracker is in **bitmap mode**: it sets a
 * write's bits (durably) before the write reaches the disk. Bits are only ever set in place — a torn
 * write of the bitmap keeps every bit set before it — and the map is replaced whole (atomically) only
 * under the tracking log's lock.
 *
 * Layout (little-endian): header 512 bytes: magic "VHDSDIRT", version u32 = 1, header size u32 = 512,
 *   extent size u32 at 16, virtual size u64 at 24, replica path length u16 at 32, replica path (UTF-8,
 *   at most 400 bytes) at 40, header CRC-32C u32 at 508; then the bitmap, extent e = bit (e & 7) of
 *   byte (e >> 3).
 */
export const DIRTY_MAGIC = 'VHDSDIRT';
const HEADER = 512;
const MAX_REPLICA = 400;

export function dirtyMapPathFor(primaryPath: string): string {
  return `${primaryPath}.vhdsync-dirty`;
}

export interface DirtyMap {
  extentSize: number;
  virtualSize: number;
  /** The replica the bits are relative to. */
  replica: string;
  bits: Uint8Array;
}

export function bitmapBytes(virtualSize: number, extentSize: number): number {
  return Math.ceil(Math.ceil(virtualSize / extentSize) / 8);
}

/** Pure: the file's bytes. */
export function encodeDirtyMap(m: DirtyMap): Uint8Array {
  const replica = new TextEncoder().encode(m.replica);
  if (replica.byteLength > MAX_REPLICA) throw new VhdsyncError('USAGE', `dirty map: the replica path is longer than ${MAX_REPLICA} bytes`);
  const out = new Uint8Array(HEADER + bitmapBytes(m.virtualSize, m.extentSize));
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode(DIRTY_MAGIC), 0);
  v.setUint32(8, 1, true);
  v.setUint32(12, HEADER, true);
  v.setUint32(16, m.extentSize, true);
  v.setUint32(24, m.virtualSize % 2 ** 32, true);
  v.setUint32(28, Math.floor(m.virtualSize / 2 ** 32), true);
  v.setUint16(32, replica.byteLength, true);
  out.set(replica, 40);
  v.setUint32(508, getCore().crc32c(out.subarray(0, HEADER)), true);
  out.set(m.bits.subarray(0, out.byteLength - HEADER), HEADER);
  return out;
}

/** Pure: decode and check a dirty map file. */
export function parseDirtyMap(b: Uint8Array, path: string): DirtyMap {
  if (b.byteLength < HEADER || new TextDecoder().decode(b.subarray(0, 8)) !== DIRTY_MAGIC) {
    throw new VhdsyncError('BAD_COOKIE', `${path}: not a vhdsync dirty map`);
  }
  const v = new DataView(b.buffer, b.byteOffset, HEADER);
  const head = new Uint8Array(b.subarray(0, HEADER)); // a copy (b may be a Buffer, whose slice is a view)
  head.fill(0, 508, 512);
  if (getCore().crc32c(head) !== v.getUint32(508, true)) throw new VhdsyncError('BAD_CHECKSUM', `${path}: dirty map header checksum is wrong`);
  if (v.getUint32(8, true) !== 1) throw new VhdsyncError('UNSUPPORTED', `${path}: dirty map version ${v.getUint32(8, true)} is not supported`);
  const extentSize = v.getUint32(16, true);
  const virtualSize = v.getUint32(24, true) + v.getUint32(28, true) * 2 ** 32;
  const replicaLength = v.getUint16(32, true);
  if (extentSize < 4096 || (extentSize & (extentSize - 1)) !== 0 || replicaLength > MAX_REPLICA) {
    throw new VhdsyncError('BAD_COOKIE', `${path}: dirty map header is damaged`);
  }
  const need = bitmapBytes(virtualSize, extentSize);
  if (b.byteLength < HEADER + need) throw new VhdsyncError('TRUNCATED', `${path}: dirty map is shorter than its bitmap`);
  return {
    extentSize,
    virtualSize,
    replica: new TextDecoder().decode(b.subarray(40, 40 + replicaLength)),
    bits: new Uint8Array(b.subarray(HEADER, HEADER + need)),
  };
}

export async function readDirtyMap(primaryPath: string): Promise<DirtyMap | undefined> {
  const path = dirtyMapPathFor(primaryPath);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(path, e);
  }
  return parseDirtyMap(bytes, path);
}

/** Replace the map whole (under the tracking log's lock). */
export async function writeDirtyMap(primaryPath: string, m: DirtyMap): Promise<void> {
  await writeFileAtomic(dirtyMapPathFor(primaryPath), encodeDirtyMap(m));
}

export async function removeDirtyMap(primaryPath: string): Promise<boolean> {
  return removeIfExists(dirtyMapPathFor(primaryPath));
}

export function emptyDirtyMap(virtualSize: number, extentSize: number, replica: string): DirtyMap {
  return { extentSize, virtualSize, replica, bits: new Uint8Array(bitmapBytes(virtualSize, extentSize)) };
}

export function setBit(bits: Uint8Array, e: number): boolean {
  const had = (bits[e >> 3] & (1 << (e & 7))) !== 0;
  bits[e >> 3] |= 1 << (e & 7);
  return !had;
}

export function dirtyExtents(m: DirtyMap): number[] {
  const out: number[] = [];
  for (let i = 0; i < m.bits.byteLength; i++) {
    const byte = m.bits[i];
    if (byte === 0) continue;
    for (let k = 0; k < 8; k++) if (byte & (1 << k)) out.push(i * 8 + k);
  }
  return out;
}

/**
 * Bitmap mode: set the bits of these byte ranges durably, in place, before the writes are issued.
 * Returns false when there is no dirty map (the disk is not in bitmap mode). Under the log's lock.
 */
export async function markDirty(primaryPath: string, writes: readonly { offset: number; length: number }[]): Promise<boolean> {
  const path = dirtyMapPathFor(primaryPath);
  let fh;
  try {
    fh = await open(path, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw ioError(path, e);
  }
  try {
    const head = new Uint8Array(HEADER);
    await fh.read(head, 0, HEADER, 0);
    const v = new DataView(head.buffer);
    const extentSize = v.getUint32(16, true);
    if (new TextDecoder().decode(head.subarray(0, 8)) !== DIRTY_MAGIC || extentSize < 4096) throw new VhdsyncError('BAD_COOKIE', `${path}: dirty map header is damaged`);
    const need = new Set<number>();
    for (const w of writes) {
      if (w.length <= 0) continue;
      const first = Math.floor(w.offset / extentSize);
      const last = Math.floor((w.offset + w.length - 1) / extentSize);
      for (let e = first; e <= last; e++) need.add(e >> 3);
    }
    let changed = false;
    const one = new Uint8Array(1);
    for (const byteIndex of need) {
      await fh.read(one, 0, 1, HEADER + byteIndex);
      let byte = one[0];
      for (const w of writes) {
        if (w.length <= 0) continue;
        const first = Math.max(Math.floor(w.offset / extentSize), byteIndex * 8);
        const last = Math.min(Math.floor((w.offset + w.length - 1) / extentSize), byteIndex * 8 + 7);
        for (let e = first; e <= last; e++) byte |= 1 << (e & 7);
      }
      if (byte !== one[0]) {
        one[0] = byte;
        await fh.write(one, 0, 1, HEADER + byteIndex);
        changed = true;
      }
    }
    if (changed) await fh.datasync();
    return true;
  } finally {
    await fh.close();
  }
}
