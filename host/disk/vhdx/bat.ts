/**
 * The VHDX block allocation table ([MS-VHDX] 2.5): 64-bit entries (bits 0–2 state, 20–63 file offset in
 * MiB), payload entries interleaved with one sector-bitmap entry after every `chunkRatio` of them. The
 * table stays as raw little-endian bytes (what is logged and written back); these helpers decode and
 * encode single entries and check a loaded table against the file.
 */
import { VhdsyncError } from '../../errors.js';
import { MiB, formatSize } from '../../units.js';
import { HEADER_SECTION_SIZE } from './header.js';
import { le32, putLe32 } from './le.js';
import type { Extent } from './region.js';

export const PAYLOAD_NOT_PRESENT = 0;
export const PAYLOAD_UNDEFINED = 1;
export const PAYLOAD_ZERO = 2;
export const PAYLOAD_UNMAPPED = 3;
/** The 0.95 draft's value for UNMAPPED; qemu still accepts it, and so do we. */
export const PAYLOAD_UNMAPPED_V095 = 5;
export const PAYLOAD_FULLY_PRESENT = 6;
export const PAYLOAD_PARTIALLY_PRESENT = 7;
export const SB_NOT_PRESENT = 0;
export const SB_PRESENT = 6;

export const ENTRY_SIZE = 8;
/** [MS-VHDX] 2.5: a sector bitmap block is 1 MiB and describes 2^23 sectors (one chunk). */
export const SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB;
export const SECTORS_PER_CHUNK = 2 ** 23;

export interface BatLayout {
  blockSize: number;
  logicalSectorSize: number;
  virtualSize: number;
  differencing: boolean;
  blockCount: number;
  /** Payload blocks per chunk (per sector bitmap block). */
  chunkRatio: number;
  sectorsPerBlock: number;
  /** Bytes of one block's slice of its chunk's sector bitmap. */
  bitmapBytesPerBlock: number;
  entryCount: number;
}

export function batLayout(p: { blockSize: number; logicalSectorSize: number; virtualSize: number; differencing: boolean }): BatLayout {
  const chunkRatio = (SECTORS_PER_CHUNK * p.logicalSectorSize) / p.blockSize;
  const blockCount = Math.ceil(p.virtualSize / p.blockSize);
  const sectorsPerBlock = p.blockSize / p.logicalSectorSize;
  // qemu vhdx_calc_bat_entries: a differencing table always ends with its chunk's bitmap entry.
  const entryCount = p.differencing
    ? Math.ceil(blockCount / chunkRatio) * (chunkRatio + 1)
    : blockCount + Math.floor((blockCount - 1) / chunkRatio);
  return { ...p, chunkRatio, blockCount, sectorsPerBlock, bitmapBytesPerBlock: sectorsPerBlock / 8, entryCount };
}

/** BAT index of payload block `b`. */
export function payloadIndex(l: BatLayout, b: number): number {
  return b + Math.floor(b / l.chunkRatio);
}

/** BAT index of the sector bitmap entry of chunk `c`. */
export function bitmapIndex(l: BatLayout, c: number): number {
  return c * (l.chunkRatio + 1) + l.chunkRatio;
}

export function entryState(raw: Uint8Array, i: number): number {
  return raw[i * ENTRY_SIZE] & 7;
}

/** File offset in bytes (FileOffsetMB << 20). Absurd values stay absurd (they are checked, never truncated). */
export function entryOffset(raw: Uint8Array, i: number): number {
  const lo = le32(raw, i * ENTRY_SIZE);
  const hi = le32(raw, i * ENTRY_SIZE + 4);
  return ((lo >>> 20) + hi * 4096) * MiB;
}

/** Encode an entry. States without an offset store 0 there: Hyper-V refuses a non-zero reserved offset (qemu). */
export function putEntry(raw: Uint8Array, i: number, state: number, offset: number): void {
  const hasOffset = state === PAYLOAD_FULLY_PRESENT || state === PAYLOAD_PARTIALLY_PRESENT;
  const mb = hasOffset ? offset / MiB : 0;
  putLe32(raw, i * ENTRY_SIZE, (((mb % 4096) << 20) | (state & 7)) >>> 0);
  putLe32(raw, i * ENTRY_SIZE + 4, Math.floor(mb / 4096));
}

export function hasData(state: number): boolean {
  return state === PAYLOAD_FULLY_PRESENT || state === PAYLOAD_PARTIALLY_PRESENT;
}

/**
 * Check every entry against the file: known states only, PARTIALLY_PRESENT only in a differencing disk
 * and only with its chunk's bitmap present, and every stored block inside the file, outside the header
 * section, log, BAT and metadata regions, and clear of every other block.
 */
export function validateBat(raw: Uint8Array, l: BatLayout, fileSize: number, reserved: Extent[], path: string): void {
  const bad = (msg: string) => new VhdsyncError('BAD_BAT', `${path}: ${msg}; the image is corrupt`);
  const taken = [{ offset: 0, length: HEADER_SECTION_SIZE }, ...reserved];
  const starts: number[] = [];
  const ends: number[] = [];
  const names: string[] = [];
  const place = (offset: number, length: number, name: string) => {
    if (offset < HEADER_SECTION_SIZE || !Number.isSafeInteger(offset)) throw bad(`${name} points into the header section (offset ${offset})`);
    if (offset + length > fileSize) {
      throw bad(`${name} at ${formatSize(offset)} lies past the end of the ${formatSize(fileSize)} file`);
    }
    for (const t of taken) {
      if (offset < t.offset + t.length && t.offset < offset + length) throw bad(`${name} at ${formatSize(offset)} overlaps the VHDX metadata`);
    }
    starts.push(offset);
    ends.push(offset + length);
    names.push(name);
  };
  const chunks = Math.ceil(l.blockCount / l.chunkRatio);
  const chunkHasPartial = new Uint8Array(chunks);
  for (let b = 0; b < l.blockCount; b++) {
    const i = payloadIndex(l, b);
    const st = entryState(raw, i);
    if (st === 4) throw bad(`BAT entry of block ${b} has the reserved state 4`);
    if (st === PAYLOAD_PARTIALLY_PRESENT) {
      if (!l.differencing) throw bad(`block ${b} is PARTIALLY_PRESENT in a disk without a parent`);
      chunkHasPartial[Math.floor(b / l.chunkRatio)] = 1;
    }
    if (hasData(st)) place(entryOffset(raw, i), Math.min(l.blockSize, l.virtualSize - b * l.blockSize), `block ${b}`);
  }
  if (l.differencing) {
    for (let c = 0; c < chunks; c++) {
      const i = bitmapIndex(l, c);
      const st = entryState(raw, i);
      if (st === SB_PRESENT) place(entryOffset(raw, i), SECTOR_BITMAP_BLOCK_SIZE, `the sector bitmap of chunk ${c}`);
      else if (st !== SB_NOT_PRESENT) throw bad(`the sector bitmap entry of chunk ${c} has the invalid state ${st}`);
      else if (chunkHasPartial[c]) throw bad(`chunk ${c} has partially present blocks but no sector bitmap`);
    }
  }
  const order = starts.map((_, k) => k).sort((x, y) => starts[x] - starts[y]);
  for (let k = 1; k < order.length; k++) {
    const prev = order[k - 1];
    const cur = order[k];
    if (starts[cur] < ends[prev]) throw bad(`${names[cur]} overlaps ${names[prev]} at ${formatSize(starts[cur])}`);
  }
}
