/**
 * Runs over a VHD sector bitmap (MSB-first: sector 0 is the top bit of byte 0). Counting and setting use
 * the WASM core; finding where a run ends is a byte-skipping scan here.
 */
import { getCore } from '../core/index.js';

export function bitAt(bitmap: Uint8Array, sector: number): boolean {
  return ((bitmap[sector >>> 3] >>> (7 - (sector & 7))) & 1) === 1;
}

/** First sector at or after `from` (below `end`) whose bit differs from `from`'s. Returns `end` if none. */
export function runEnd(bitmap: Uint8Array, from: number, end: number): number {
  const set = bitAt(bitmap, from);
  const whole = set ? 0xff : 0x00;
  let s = from + 1;
  while (s < end) {
    if ((s & 7) === 0 && s + 8 <= end && bitmap[s >>> 3] === whole) {
      s += 8;
      continue;
    }
    if (bitAt(bitmap, s) !== set) return s;
    s++;
  }
  return end;
}

/** Number of set bits in [first, first + count). */
export function countBits(bitmap: Uint8Array, first: number, count: number): number {
  return getCore().bitmapCount(bitmap, first, count);
}

export function setBits(bitmap: Uint8Array, first: number, count: number): void {
  getCore().bitmapSet(bitmap, first, count, true);
}

/** Visit the runs of equal bits in [first, end): `visit(start, stop, set)`. */
export function forEachRun(bitmap: Uint8Array, first: number, end: number, visit: (start: number, stop: number, set: boolean) => void): void {
  let s = first;
  while (s < end) {
    const e = runEnd(bitmap, s, end);
    visit(s, e, bitAt(bitmap, s));
    s = e;
  }
}
