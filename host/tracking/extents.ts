import { MiB } from '../units.js';

/**
 * Extents: the unit in which the activity log and the dirty map remember where a disk was written
 * (DRBD's "AL extents" and bitmap bits, in one size). A scoped resync compares only the extents in scope.
 *
 * 1 MiB, from bench/extents.mjs (bench/README.md): with a hot-spot workload of writes from 512 B to
 * 1 MiB, 4 MiB extents put ~2.4× the bytes of 1 MiB extents in a crash's scope, and 256 KiB ones only
 * ~0.85× while needing 4× the activity-log entries to cover the same working set; 1 MiB with 1024
 * hot extents covers a 1 GiB working set, so 64 KiB random writes in 1 GiB cost no activity-log
 * transactions once warm.
 */
export const DEFAULT_EXTENT_SIZE = 1 * MiB;
/** Hot extents the activity log holds at most (DRBD's `al-extents`): 1 GiB at 1 MiB. */
export const DEFAULT_AL_EXTENTS = 1024;

/** Extent indexes touched by a write of `length` bytes at `offset` (ascending). */
export function extentsOf(offset: number, length: number, extentSize: number): number[] {
  if (length <= 0) return [];
  const first = Math.floor(offset / extentSize);
  const last = Math.floor((offset + length - 1) / extentSize);
  const out: number[] = [];
  for (let e = first; e <= last; e++) out.push(e);
  return out;
}

/** Byte ranges [start, end) of a set of extents, merged where adjacent and clipped to the disk. */
export function extentRanges(extents: Iterable<number>, extentSize: number, virtualSize: number): [number, number][] {
  const sorted = [...new Set(extents)].sort((a, b) => a - b);
  const out: [number, number][] = [];
  for (const e of sorted) {
    const start = e * extentSize;
    if (start >= virtualSize) break;
    const end = Math.min(start + extentSize, virtualSize);
    const last = out[out.length - 1];
    if (last && last[1] === start) last[1] = end;
    else out.push([start, end]);
  }
  return out;
}

export function rangeBytes(ranges: readonly [number, number][]): number {
  return ranges.reduce((n, [a, b]) => n + (b - a), 0);
}

/** Does [offset, offset + length) meet any of the (sorted, disjoint) ranges? */
export function touchesRanges(ranges: readonly [number, number][], offset: number, length: number): boolean {
  let lo = 0;
  let hi = ranges.length;
  const end = offset + length;
  // First range whose end is past offset.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid][1] <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo < ranges.length && ranges[lo][0] < end;
}
