/**
 * The VHD block allocation table (VHD spec "Block Allocation Table and Data Blocks"): big-endian u32
 * sector numbers of each block's bitmap, 0xFFFFFFFF when the block is not allocated. Pure functions.
 */
import { getCore } from '../../core/index.js';
import { VhdsyncError } from '../../errors.js';
import { SECTOR, putU32, roundUp } from './be.js';

export const BAT_UNUSED = 0xffffffff;
/** BAT entries are u32 sector numbers, so no block can start at or beyond this byte offset. */
export const MAX_BLOCK_OFFSET = 0xfffffffe * SECTOR;

/** Bytes of the per-block sector bitmap in the file: one bit per sector, padded to a sector. */
export function bitmapBytesFor(blockSize: number): number {
  return roundUp(Math.ceil(blockSize / SECTOR / 8), SECTOR);
}

/** Bytes the on-disk BAT occupies (entries padded to a sector). */
export function batBytesFor(entries: number): number {
  return roundUp(entries * 4, SECTOR);
}

/** Decode `count` entries (the WASM core does the byte swapping in one call). */
export function parseBat(bytes: Uint8Array, count: number, name = 'image'): Uint32Array {
  if (bytes.length < count * 4) {
    throw new VhdsyncError('TRUNCATED', `${name}: the BAT holds ${Math.floor(bytes.length / 4)} entries, expected ${count}; the file is truncated`);
  }
  return getCore().decodeBat(bytes.subarray(0, count * 4), count);
}

/** Store one entry into the raw (big-endian) BAT bytes. */
export function putBatEntry(raw: Uint8Array, index: number, sector: number): void {
  putU32(raw, index * 4, sector);
}

export interface BatLayout {
  virtualSize: number;
  blockSize: number;
  bitmapBytes: number;
  /** Blocks must end at or before this byte (the trailing footer's offset, or the file size without one). */
  dataEnd: number;
  /** Byte ranges [start, end) of metadata that no block may overlap, with a label for errors. */
  reserved: Array<{ start: number; end: number; what: string }>;
}

/** Bytes a block needs in the file: bitmap + data; the last block only needs the sectors the disk has. */
export function blockExtent(index: number, layout: BatLayout): number {
  const dataBytes = Math.min(layout.blockSize, roundUp(layout.virtualSize - index * layout.blockSize, SECTOR));
  return layout.bitmapBytes + dataBytes;
}

/**
 * Check every allocated entry: inside the file, clear of the metadata, and not overlapping another
 * block. Cost is O(n log n) in the entry count, which the caller has already bounded by the file size.
 */
export function validateBat(bat: Uint32Array, layout: BatLayout, name = 'image'): void {
  const count = bat.length;
  let allocated = 0;
  for (let i = 0; i < count; i++) if (bat[i] !== BAT_UNUSED) allocated++;
  const starts = new Float64Array(allocated);
  let k = 0;
  for (let i = 0; i < count; i++) {
    const e = bat[i];
    if (e === BAT_UNUSED) continue;
    const start = e * SECTOR;
    const end = start + blockExtent(i, layout);
    if (end > layout.dataEnd) {
      throw new VhdsyncError(
        'BAD_BAT',
        `${name}: BAT entry for block ${i} points past the end of the file (block at byte ${start}, data ends at ${layout.dataEnd}); the image is truncated or corrupt`,
      );
    }
    for (const r of layout.reserved) {
      if (start < r.end && r.start < end) {
        throw new VhdsyncError('BAD_BAT', `${name}: BAT entry for block ${i} (byte ${start}) overlaps the ${r.what}`);
      }
    }
    starts[k++] = start;
  }
  starts.sort();
  const lastStart = count > 0 && bat[count - 1] !== BAT_UNUSED ? bat[count - 1] * SECTOR : -1;
  const full = layout.bitmapBytes + layout.blockSize;
  for (let j = 0; j + 1 < starts.length; j++) {
    const need = starts[j] === lastStart ? blockExtent(count - 1, layout) : full;
    if (starts[j + 1] - starts[j] < need) {
      const a = indexOfStart(bat, starts[j]);
      const b = indexOfStart(bat, starts[j + 1], a);
      throw new VhdsyncError('BAD_BAT', `${name}: BAT entries for blocks ${a} and ${b} overlap (bytes ${starts[j]} and ${starts[j + 1]})`);
    }
  }
}

function indexOfStart(bat: Uint32Array, start: number, not = -1): number {
  for (let i = 0; i < bat.length; i++) if (i !== not && bat[i] !== BAT_UNUSED && bat[i] * SECTOR === start) return i;
  return -1;
}
