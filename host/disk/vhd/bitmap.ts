/**
 * Runs over a VHD sector bitmap (MSB-first: sector 0 is the top bit of byte 0). Counting and setting use
 * the WASM core; finding where a run ends is a byte-skipping scan here.
 */
import { getCore } from '../../core/index.js';
import { forEachRunOf, type RunVisitor, type SectorBitmap } from '../sector-runs.js';

export function bitAt(bitmap: Uint8Array, sector: number): boolean {
  return ((bitmap[sector >>> 3] >>> (7 - (sector & 7))) & 1) === 1;
}

/** Number of set bits in [first, first + count). */
export function countBits(bitmap: Uint8Array, first: number, count: number): number {
  return getCore().bitmapCount(bitmap, first, count);
}

export function setBits(bitmap: Uint8Array, first: number, count: number): void {
  getCore().bitmapSet(bitmap, first, count, true);
}

/** VHD's bit order, for the shared run scans in sector-runs.ts. */
export const VHD_BITS: SectorBitmap = { bitAt, countBits, setBits };

/** Visit the runs of equal bits in [first, end): `visit(start, stop, set)`. */
export function forEachRun(bitmap: Uint8Array, first: number, end: number, visit: RunVisitor): void {
  forEachRunOf(VHD_BITS, bitmap, first, end, visit);
}
