import type { Core } from '../core/types.js';
import type { Disk } from '../disk/disk.js';
import { MiB } from '../units.js';

const SECTOR = 512;
const CHUNK = 4 * MiB;

export interface DiffResult {
  identical: boolean;
  /** Bytes in differing 512-byte sectors. */
  differingBytes: number;
  /** Differing byte ranges [start, end), merged, sector-aligned. */
  ranges: { start: number; end: number }[];
  sizeA: number;
  sizeB: number;
  bytesRead: number;
}

/** What `vhdsync compare --json` prints and the page downloads: the result without `bytesRead`. */
export interface CompareReport {
  identical: boolean;
  differingBytes: number;
  ranges: { start: number; end: number }[];
  sizeA: number;
  sizeB: number;
}

export function compareReport(r: DiffResult): CompareReport {
  return { identical: r.identical, differingBytes: r.differingBytes, ranges: r.ranges, sizeA: r.sizeA, sizeB: r.sizeB };
}

/**
 * Compare the virtual contents of two disks sector by sector and report every differing range (unlike
 * `qemu-img compare`, it does not stop at the first). Where one disk is shorter, its missing tail
 * counts as zeros, as qemu-img does. Blocks absent on both sides are not read. `onProgress` also gets the
 * ranges found so far, final below `done` (the page draws its block map from them as the compare goes).
 */
export async function diffDisks(
  core: Core,
  a: Disk,
  b: Disk,
  onProgress?: (done: number, total: number, ranges: readonly { start: number; end: number }[]) => void,
): Promise<DiffResult> {
  const size = Math.max(a.virtualSize, b.virtualSize);
  const bufA = core.alloc(CHUNK);
  const bufB = core.alloc(CHUNK);
  const ranges: { start: number; end: number }[] = [];
  let differingBytes = 0;
  let bytesRead = 0;
  const add = (start: number, end: number) => {
    differingBytes += end - start;
    const last = ranges[ranges.length - 1];
    if (last && last.end === start) last.end = end;
    else ranges.push({ start, end });
  };
  try {
    for (let off = 0; off < size; off += CHUNK) {
      const len = Math.min(CHUNK, size - off);
      const zeroA = isZeroRange(a, off, len);
      const zeroB = isZeroRange(b, off, len);
      if (zeroA && zeroB) {
        onProgress?.(off + len, size, ranges);
        continue;
      }
      await Promise.all([fill(a, off, len, bufA.bytes(), zeroA), fill(b, off, len, bufB.bytes(), zeroB)]);
      bytesRead += (zeroA ? 0 : len) + (zeroB ? 0 : len);
      const bitmap = core.diffBlocksIn(bufA, 0, bufB, 0, len, SECTOR);
      const sectors = Math.ceil(len / SECTOR);
      for (let s = 0; s < sectors; s++) {
        if (bitmap[s >> 3] === 0 && (s & 7) === 0) {
          s += 7;
          continue;
        }
        if (bitmap[s >> 3] & (1 << (s & 7))) add(off + s * SECTOR, Math.min(off + (s + 1) * SECTOR, size));
      }
      onProgress?.(off + len, size, ranges);
    }
  } finally {
    bufA.free();
    bufB.free();
  }
  return { identical: differingBytes === 0, differingBytes, ranges, sizeA: a.virtualSize, sizeB: b.virtualSize, bytesRead };
}

/** True when the disk's block map says [off, off+len) reads as zeros (or lies past its end). */
function isZeroRange(d: Disk, off: number, len: number): boolean {
  if (off >= d.virtualSize) return true;
  const last = Math.min(off + len, d.virtualSize) - 1;
  for (let blk = Math.floor(off / d.blockSize); blk <= Math.floor(last / d.blockSize); blk++) {
    if (d.blockStatus(blk) === 'present') return false;
  }
  return true;
}

async function fill(d: Disk, off: number, len: number, view: Uint8Array, zero: boolean): Promise<void> {
  const target = view.subarray(0, len);
  const inside = Math.max(0, Math.min(len, d.virtualSize - off));
  if (zero || inside === 0) {
    target.fill(0);
    return;
  }
  await d.read(off, target.subarray(0, inside));
  if (inside < len) target.fill(0, inside);
}
