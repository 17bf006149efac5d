import { isAbsolute, resolve } from 'node:path';
import { VhdsyncError } from '../errors.js';
import { bitmapBytes, dirtyExtents, type DirtyMap } from '../tracking/dirty-map.js';
import { extentRanges, rangeBytes } from '../tracking/extents.js';
import { isReplicaAddress } from '../transport/replica-address.js';

/**
 * A resync's scope (beyond Hyper-V, as DRBD does it): `Full` compares every block; `DirtyExtents`
 * compares only the extents of the primary's dirty map (tracking/dirty-map.ts), everything else being
 * known equal. Both sides build their hash trees over the same scope — out-of-scope leaves take the
 * zero digest without a read — so the protocol, overlay, checkpoint and merge stay as they are.
 *
 * On the wire, in the 'start' control message: `scope: { extentSize, bits }`, the dirty map's bitmap
 * in base64 (256 KiB for 2 TiB at 1 MiB extents), checked by the replica against the disk's size.
 */
export type ResyncScopeKind = 'Full' | 'DirtyExtents';

export interface ScopeWire {
  extentSize: number;
  bits: string;
}

export interface ScopeRanges {
  kind: ResyncScopeKind;
  /** Undefined for Full. */
  ranges?: [number, number][];
  bytes: number;
}

export function scopeWire(map: DirtyMap): ScopeWire {
  return { extentSize: map.extentSize, bits: Buffer.from(map.bits).toString('base64') };
}

export function rangesOfMap(map: Pick<DirtyMap, 'extentSize' | 'bits'>, virtualSize: number): [number, number][] {
  return extentRanges(dirtyExtents(map as DirtyMap), map.extentSize, virtualSize);
}

/** The replica's check of a scope it is sent: undefined = Full. */
export function scopeFromWire(w: unknown, virtualSize: number): [number, number][] | undefined {
  if (w === undefined || w === null) return undefined;
  const o = w as Partial<ScopeWire>;
  const ok =
    typeof o === 'object' &&
    Number.isSafeInteger(o.extentSize) &&
    o.extentSize! >= 4096 &&
    o.extentSize! <= 2 ** 30 &&
    (o.extentSize! & (o.extentSize! - 1)) === 0 &&
    typeof o.bits === 'string';
  if (!ok) throw new VhdsyncError('PROTOCOL', 'protocol error: a resync scope that is not {extentSize, bits}');
  // Bounded before decoding: the bitmap a disk of this size has, in base64.
  if (o.bits!.length > Math.ceil(bitmapBytes(virtualSize, o.extentSize!) / 3) * 4) throw new VhdsyncError('PROTOCOL', 'protocol error: the resync scope does not fit the disk');
  const bits = new Uint8Array(Buffer.from(o.bits!, 'base64'));
  if (bits.byteLength !== bitmapBytes(virtualSize, o.extentSize!)) throw new VhdsyncError('PROTOCOL', 'protocol error: the resync scope does not fit the disk');
  return rangesOfMap({ extentSize: o.extentSize!, bits }, virtualSize);
}

export function scopeBytes(ranges: [number, number][] | undefined, virtualSize: number): number {
  return ranges ? rangeBytes(ranges) : virtualSize;
}

/** The replica named as a dirty map names it: an absolute path, or the tls:// address as given. */
export function replicaKey(replica: string): string {
  return isReplicaAddress(replica) || isAbsolute(replica) ? replica : resolve(replica);
}
