/**
 * What VHD and VHDX differencing disks share: reading a piece of a block whose per-sector bitmap says,
 * sector by sector, whether this file or the parent holds the data. Only the bit order differs
 * between the formats (VHD: MSB-first, VHDX: LSB-first), so the bitmap operations are passed in.
 */
import { MiB } from '../units.js';

export type RunVisitor = (start: number, stop: number, set: boolean) => void;

export interface SectorBitmap {
  bitAt(bitmap: Uint8Array, sector: number): boolean;
  /** Number of set bits in [first, first + count). */
  countBits(bitmap: Uint8Array, first: number, count: number): number;
  /** Set the bits [first, first + count). */
  setBits(bitmap: Uint8Array, first: number, count: number): void;
}

/** First sector at or after `from` (below `end`) whose bit differs from `from`'s; `end` if none. */
export function runEnd(bits: SectorBitmap, bitmap: Uint8Array, from: number, end: number): number {
  const set = bits.bitAt(bitmap, from);
  const whole = set ? 0xff : 0x00;
  let s = from + 1;
  while (s < end) {
    if ((s & 7) === 0 && s + 8 <= end && bitmap[s >>> 3] === whole) {
      s += 8;
      continue;
    }
    if (bits.bitAt(bitmap, s) !== set) return s;
    s++;
  }
  return end;
}

/** Visit the runs of equal bits in [first, end): `visit(start, stop, set)`. */
export function forEachRunOf(bits: SectorBitmap, bitmap: Uint8Array, first: number, end: number, visit: RunVisitor): void {
  let s = first;
  while (s < end) {
    const e = runEnd(bits, bitmap, s, end);
    visit(s, e, bits.bitAt(bitmap, s));
    s = e;
  }
}

/** Past this many runs in one piece, two large reads beat one read per run. */
const MANY_RUNS = 8;
/** The largest piece read through a scratch buffer. */
const SCRATCH_BYTES = 4 * MiB;

export interface PieceReader {
  readonly sectorSize: number;
  readonly bits: SectorBitmap;
  /** Read this file's bytes at a file offset. */
  readOwn(into: Uint8Array, fileOffset: number): Promise<void>;
  /** Read the parent's view (zeros without a parent) at a virtual offset. */
  readParent(offset: number, into: Uint8Array): Promise<void>;
  takeScratch(length: number): Uint8Array;
  releaseScratch(view: Uint8Array): void;
}

/**
 * Fill `dst` with bytes [inBlock, inBlock + dst.length) of a block that starts at virtual offset
 * `blockStart` and whose data lies at `dataPos` in this file: owned sectors from the file, the others
 * from the parent.
 */
export async function readThroughBitmap(r: PieceReader, bitmap: Uint8Array, blockStart: number, dataPos: number, inBlock: number, dst: Uint8Array): Promise<void> {
  const ss = r.sectorSize;
  const s0 = Math.floor(inBlock / ss);
  const s1 = Math.ceil((inBlock + dst.length) / ss);
  const set = r.bits.countBits(bitmap, s0, s1 - s0);
  if (set === s1 - s0) return r.readOwn(dst, dataPos + inBlock);
  if (set === 0) return r.readParent(blockStart + inBlock, dst);
  const runs: Array<[number, number, boolean]> = [];
  forEachRunOf(r.bits, bitmap, s0, s1, (s, e, isSet) => runs.push([s, e, isSet]));
  if (runs.length > MANY_RUNS && dst.length <= SCRATCH_BYTES) {
    // Scattered sectors (a resync overlay is full of 4 KiB leaves): two reads instead of one per run —
    // the parent's view of the whole piece, then this file's piece, keeping only the sectors it owns.
    await r.readParent(blockStart + inBlock, dst);
    const scratch = r.takeScratch(dst.length);
    try {
      await r.readOwn(scratch, dataPos + inBlock);
      for (const [s, e, isSet] of runs) {
        if (!isSet) continue;
        const from = Math.max(inBlock, s * ss) - inBlock;
        const to = Math.min(inBlock + dst.length, e * ss) - inBlock;
        dst.set(scratch.subarray(from, to), from);
      }
    } finally {
      r.releaseScratch(scratch);
    }
    return;
  }
  for (const [s, e, isSet] of runs) {
    const from = Math.max(inBlock, s * ss);
    const to = Math.min(inBlock + dst.length, e * ss);
    const part = dst.subarray(from - inBlock, to - inBlock);
    if (isSet) await r.readOwn(part, dataPos + from);
    else await r.readParent(blockStart + from, part);
  }
}
