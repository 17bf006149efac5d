/**
 * VHDX sector bitmaps are LSB-first ([MS-VHDX] 2.5: "bit 0 of byte 0 is the entry for the first virtual
 * sector"), the reverse of VHD's MSB-first bitmaps that the WASM core handles. Set bit: the sector is in
 * this file; clear bit: read the parent.
 */
import { forEachRunOf, type RunVisitor, type SectorBitmap } from '../sector-runs.js';

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >>> 1];

export function bitAt(bitmap: Uint8Array, sector: number): boolean {
  return ((bitmap[sector >>> 3] >>> (sector & 7)) & 1) === 1;
}

/** Number of set bits in [first, first + count). */
export function countBits(bitmap: Uint8Array, first: number, count: number): number {
  let n = 0;
  let s = first;
  const end = first + count;
  while (s < end && (s & 7) !== 0) n += bitAt(bitmap, s++) ? 1 : 0;
  while (s + 8 <= end) {
    n += POPCOUNT[bitmap[s >>> 3]];
    s += 8;
  }
  while (s < end) n += bitAt(bitmap, s++) ? 1 : 0;
  return n;
}

/** Set the bits [first, first + count). */
export function setBits(bitmap: Uint8Array, first: number, count: number): void {
  let s = first;
  const end = first + count;
  while (s < end && (s & 7) !== 0) {
    bitmap[s >>> 3] |= 1 << (s & 7);
    s++;
  }
  if (s + 8 <= end) {
    const whole = (end - s) >>> 3;
    bitmap.fill(0xff, s >>> 3, (s >>> 3) + whole);
    s += whole * 8;
  }
  while (s < end) {
    bitmap[s >>> 3] |= 1 << (s & 7);
    s++;
  }
}

/** VHDX's bit order, for the shared run scans in sector-runs.ts. */
export const VHDX_BITS: SectorBitmap = { bitAt, countBits, setBits };

/** Visit the runs of equal bits in [first, end): `visit(start, stop, set)`. */
export function forEachRun(bitmap: Uint8Array, first: number, end: number, visit: RunVisitor): void {
  forEachRunOf(VHDX_BITS, bitmap, first, end, visit);
}
