/**
 * Dynamic and differencing VHDs: blocks found through the BAT, each block a sector bitmap followed by
 * data. A differencing disk decides sector by sector (bit set: this file; clear: the parent).
 *
 * Durability and crash safety. A new block is appended where the trailing footer was: its data, then
 * its bitmap, then the footer again at the new end of file — a crash in between leaves an unreferenced
 * block and at worst a damaged trailing footer, which the reader recovers from the copy at offset 0.
 * BAT entries and bitmap changes of existing blocks are kept in memory (reads see them at once) and
 * written by `flush()` only after a datasync of the data they describe, so no on-disk metadata ever
 * points at data that is not on disk, whether the process is killed or the power fails. Unflushed
 * writes may be lost in a crash, as on any disk; the image always opens and reads consistently.
 */
import { VhdsyncError } from '../errors.js';
import { MiB } from '../units.js';
import type { BlockStatus, Disk, DiskType } from './disk.js';
import { SECTOR } from './endian.js';
import type { ImageFile } from './file-io.js';
import { checkBlockIndex, checkOpen, checkRange, checkWritable, isAllZero } from './range.js';
import { BAT_UNUSED, MAX_BLOCK_OFFSET, putBatEntry } from './vhd-bat.js';
import { VHD_BITS, countBits, forEachRun, setBits } from './vhd-bitmap.js';
import { readThroughBitmap, type PieceReader } from './sector-runs.js';
import { DISK_TYPE_DIFFERENCING, type VhdFooter } from './vhd-footer.js';
import type { DynamicHeader } from './vhd-header.js';
import type { VhdMetadata } from './vhd-metadata.js';

/** Clean bitmaps kept in memory (bounded by bytes; 8 MiB = 16384 bitmaps of 2 MiB blocks = 32 GiB of disk). */
const BITMAP_CACHE_BYTES = 8 * MiB;
/** Changed bitmaps are written back once they exceed this. */
const DIRTY_BITMAP_BYTES = 4 * MiB;

export interface VhdDynamicOptions {
  /** The next disk down the chain (differencing only). The child owns it and closes it. */
  parent?: Disk;
}

export class VhdDynamicDisk implements Disk {
  readonly format = 'vhd' as const;
  readonly type: DiskType;
  readonly sectorSize = SECTOR;
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly readOnly: boolean;
  readonly parent?: Disk;
  readonly footer: VhdFooter;
  readonly header: DynamicHeader;
  readonly footerSource: 'trailing' | 'copy';
  /** Was the footer copy at offset 0 intact (and equal to the trailing footer) when opened? */
  readonly footerCopyValid: boolean;
  readonly warnings: string[];

  private readonly bat: Uint32Array;
  private readonly batRaw: Uint8Array;
  private readonly bitmapBytes: number;
  private readonly footerBytes: Uint8Array;
  private nextFree: number;
  /** Blocks whose BAT entry is set in memory but not yet on disk. */
  private readonly pendingBat = new Set<number>();
  /** Clean bitmaps, least recently used first. */
  private readonly bitmapCache = new Map<number, Promise<Uint8Array>>();
  private readonly bitmapCacheLimit: number;
  /** Bitmaps changed in memory and not yet written. Never evicted before write-back. */
  private readonly dirtyBitmaps = new Map<number, Uint8Array>();
  private mutex: Promise<unknown> = Promise.resolve();
  private closed = false;
  private scratch: Uint8Array | undefined;

  constructor(
    private readonly file: ImageFile,
    meta: VhdMetadata,
    options: VhdDynamicOptions = {},
  ) {
    const dyn = meta.dynamic;
    if (!dyn) throw new VhdsyncError('UNSUPPORTED', `${file.path}: not a dynamic or differencing VHD`);
    this.type = meta.footer.diskType === DISK_TYPE_DIFFERENCING ? 'differencing' : 'dynamic';
    this.footer = meta.footer;
    this.header = dyn.header;
    this.footerSource = meta.footerSource;
    this.footerCopyValid = meta.footerCopyValid;
    this.warnings = meta.warnings;
    this.footerBytes = meta.footerBytes.slice();
    this.virtualSize = meta.footer.currentSize;
    this.blockSize = dyn.header.blockSize;
    this.blockCount = dyn.blockCount;
    this.readOnly = file.readOnly;
    this.parent = options.parent;
    this.bat = dyn.bat;
    this.batRaw = dyn.batRaw;
    this.bitmapBytes = dyn.bitmapBytes;
    this.nextFree = dyn.nextFree;
    this.bitmapCacheLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / this.bitmapBytes));
  }

  get path(): string {
    return this.file.path;
  }

  /** Number of blocks allocated in this file (not counting ancestors). */
  allocatedBlocks(): number {
    let n = 0;
    for (let i = 0; i < this.blockCount; i++) if (this.bat[i] !== BAT_UNUSED) n++;
    return n;
  }

  /** Is block `index` allocated in this file? */
  isAllocated(index: number): boolean {
    checkBlockIndex(this.path, this.blockCount, index);
    return this.bat[index] !== BAT_UNUSED;
  }

  blockStatus(index: number): BlockStatus {
    checkBlockIndex(this.path, this.blockCount, index);
    if (this.bat[index] !== BAT_UNUSED) return 'present';
    if (!this.parent) return 'absent';
    const start = index * this.blockSize;
    return rangeStatus(this.parent, start, Math.min(this.blockSize, this.virtualSize - start));
  }

  /**
   * The virtual byte ranges of block `index` whose data is stored in this file (for a differencing disk
   * the sectors whose bitmap bit is set; for a dynamic disk the whole allocated block). Ranges are
   * clipped to the virtual size and returned in order.
   */
  async ownedRanges(index: number): Promise<Array<{ offset: number; length: number }>> {
    checkOpen(this.path, this.closed);
    checkBlockIndex(this.path, this.blockCount, index);
    if (this.bat[index] === BAT_UNUSED) return [];
    const start = index * this.blockSize;
    const len = Math.min(this.blockSize, this.virtualSize - start);
    if (this.type === 'dynamic') return [{ offset: start, length: len }];
    const bitmap = await this.bitmap(index);
    const out: Array<{ offset: number; length: number }> = [];
    forEachRun(bitmap, 0, Math.ceil(len / SECTOR), (s, e, set) => {
      if (set) out.push({ offset: start + s * SECTOR, length: Math.min(e * SECTOR, len) - s * SECTOR });
    });
    return out;
  }

  /** Read bytes stored in this file for a range inside one allocated block, ignoring bitmap and parent. */
  async readOwn(offset: number, into: Uint8Array): Promise<void> {
    checkOpen(this.path, this.closed);
    checkRange(this.path, this.virtualSize, offset, into.length);
    const b = Math.floor(offset / this.blockSize);
    const inBlock = offset - b * this.blockSize;
    if (inBlock + into.length > this.blockSize || this.bat[b] === BAT_UNUSED) {
      throw new VhdsyncError('OUT_OF_RANGE', `${this.path}: range at byte ${offset} is not inside one allocated block`);
    }
    await this.file.readAt(into, this.dataPos(b) + inBlock, `block ${b}`);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    checkOpen(this.path, this.closed);
    checkRange(this.path, this.virtualSize, offset, into.length);
    const bs = this.blockSize;
    let done = 0;
    while (done < into.length) {
      const pos = offset + done;
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      let n = Math.min(bs - inBlock, into.length - done);
      if (this.bat[b] === BAT_UNUSED) {
        // Coalesce a run of unallocated blocks into one parent read or one fill.
        let next = b + 1;
        while (done + n < into.length && next < this.blockCount && this.bat[next] === BAT_UNUSED) {
          n = Math.min(n + bs, into.length - done);
          next++;
        }
        const dst = into.subarray(done, done + n);
        if (this.parent) await this.parent.read(pos, dst);
        else dst.fill(0);
      } else if (this.type === 'dynamic') {
        // Dynamic disks: sectors whose bit is clear hold zeros on disk (VHD spec), so the bitmap is not needed.
        await this.file.readAt(into.subarray(done, done + n), this.dataPos(b) + inBlock, `block ${b}`);
      } else {
        await this.readDifferencingPiece(b, inBlock, into.subarray(done, done + n));
      }
      done += n;
    }
  }

  private async readDifferencingPiece(b: number, inBlock: number, dst: Uint8Array): Promise<void> {
    await readThroughBitmap(this.pieceReader(b), await this.bitmap(b), b * this.blockSize, this.dataPos(b), inBlock, dst);
  }

  private pieceReader(b: number): PieceReader {
    return {
      sectorSize: SECTOR,
      bits: VHD_BITS,
      readOwn: (into, at) => this.file.readAt(into, at, `block ${b}`),
      readParent: (offset, into) => this.readParent(offset, into),
      takeScratch: (n) => this.takeScratch(n),
      releaseScratch: (v) => this.releaseScratch(v),
    };
  }

  private async readParent(offset: number, into: Uint8Array): Promise<void> {
    if (this.parent) await this.parent.read(offset, into);
    else into.fill(0);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkOpen(this.path, this.closed);
    checkWritable(this.path, this.readOnly);
    checkRange(this.path, this.virtualSize, offset, data.length);
    await this.exclusive(async () => {
      const bs = this.blockSize;
      let done = 0;
      while (done < data.length) {
        const pos = offset + done;
        const b = Math.floor(pos / bs);
        const inBlock = pos - b * bs;
        const n = Math.min(bs - inBlock, data.length - done);
        const piece = data.subarray(done, done + n);
        if (this.type === 'dynamic') await this.writeDynamicPiece(b, inBlock, piece);
        else await this.writeDifferencingPiece(b, inBlock, piece);
        done += n;
      }
      if (this.dirtyBitmaps.size * this.bitmapBytes > DIRTY_BITMAP_BYTES) await this.writeBack();
    });
  }

  private async writeDynamicPiece(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    if (this.bat[b] !== BAT_UNUSED) {
      await this.file.writeAt(piece, this.dataPos(b) + inBlock);
    } else if (!isAllZero(piece)) {
      // A dynamic disk reads unallocated blocks as zeros, so zeros need no block; anything else does.
      // Bitmap all ones, as qemu does: every sector of a new block is zero on disk or written now.
      const bitmap = new Uint8Array(this.bitmapBytes).fill(0xff);
      await this.allocate(b, bitmap, piece, inBlock);
    }
  }

  /**
   * Differencing: the written sectors must end up with their bit set, even when the data is zeros (a
   * clear bit means "ask the parent"). A write that covers part of a sector not yet in this file first
   * reads that sector through the chain, so the rest of the sector keeps its current content.
   */
  private async writeDifferencingPiece(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    const s0 = Math.floor(inBlock / SECTOR);
    const s1 = Math.ceil((inBlock + piece.length) / SECTOR);
    const count = s1 - s0;
    const allocated = this.bat[b] !== BAT_UNUSED;
    const bitmap = allocated ? await this.bitmap(b) : undefined;
    const aligned = inBlock % SECTOR === 0 && (inBlock + piece.length) % SECTOR === 0;
    let buf = piece;
    let bufStart = inBlock;
    if (!aligned && !(bitmap && countBits(bitmap, s0, count) === count)) {
      buf = new Uint8Array(count * SECTOR);
      bufStart = s0 * SECTOR;
      await this.read(b * this.blockSize + bufStart, buf);
      buf.set(piece, inBlock - bufStart);
    }
    if (bitmap) {
      await this.file.writeAt(buf, this.dataPos(b) + bufStart);
      if (countBits(bitmap, s0, count) !== count) {
        setBits(bitmap, s0, count);
        this.markDirty(b, bitmap);
      }
    } else {
      const fresh = new Uint8Array(this.bitmapBytes);
      setBits(fresh, s0, count);
      await this.allocate(b, fresh, buf, bufStart);
    }
  }

  /** Append block `b`: data, then bitmap, then the footer at the new end of file; the BAT entry waits for flush. */
  private async allocate(b: number, bitmap: Uint8Array, data: Uint8Array, inBlock: number): Promise<void> {
    const at = this.nextFree;
    const end = at + this.bitmapBytes + this.blockSize;
    if (at > MAX_BLOCK_OFFSET) {
      throw new VhdsyncError('BAD_SIZE', `${this.path}: the file would grow past the 2 TiB a VHD BAT can address`);
    }
    await this.file.writeAt(data, at + this.bitmapBytes + inBlock);
    await this.file.writeAt(bitmap, at);
    await this.file.writeAt(this.footerBytes, end);
    this.nextFree = end;
    const sector = at / SECTOR;
    this.bat[b] = sector;
    putBatEntry(this.batRaw, b, sector);
    this.pendingBat.add(b);
    this.cacheBitmap(b, bitmap);
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    await this.exclusive(async () => {
      await this.writeBack();
      await this.file.sync();
    });
  }

  /** Make data durable, then write the metadata that points at it. */
  private async writeBack(): Promise<void> {
    if (this.pendingBat.size === 0 && this.dirtyBitmaps.size === 0) return;
    await this.file.datasync();
    for (const [b, bitmap] of this.dirtyBitmaps) {
      await this.file.writeAt(bitmap, this.bat[b] * SECTOR);
    }
    const dirtyBitmaps = [...this.dirtyBitmaps];
    this.dirtyBitmaps.clear();
    for (const [b, bitmap] of dirtyBitmaps) this.cacheBitmap(b, bitmap);
    const sectors = new Set<number>();
    for (const b of this.pendingBat) sectors.add(Math.floor((b * 4) / SECTOR));
    for (const s of [...sectors].sort((x, y) => x - y)) {
      const from = s * SECTOR;
      await this.file.writeAt(this.batRaw.subarray(from, Math.min(from + SECTOR, this.batRaw.length)), this.header.tableOffset + from);
    }
    this.pendingBat.clear();
  }

  /**
   * Put the footers right after opening writable an image whose trailing footer (or copy at offset 0)
   * was damaged, for example by an interrupted block allocation.
   */
  async repairFooters(footerCopyValid: boolean): Promise<boolean> {
    if (this.readOnly) return false;
    let repaired = false;
    await this.exclusive(async () => {
      if (this.footerSource === 'copy') {
        await this.file.writeAt(this.footerBytes, this.nextFree);
        repaired = true;
      }
      if (!footerCopyValid) {
        await this.file.writeAt(this.footerBytes, 0);
        repaired = true;
      }
      if (repaired) await this.file.sync();
    });
    return repaired;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      try {
        await this.file.close();
      } finally {
        await this.parent?.close();
      }
    }
  }

  /** A reusable buffer for scattered reads (a fresh one when a concurrent read holds it). */
  private takeScratch(length: number): Uint8Array {
    const s = this.scratch;
    this.scratch = undefined;
    return s && s.length >= length ? s.subarray(0, length) : new Uint8Array(Math.max(length, 64 * 1024)).subarray(0, length);
  }

  private releaseScratch(view: Uint8Array): void {
    const whole = new Uint8Array(view.buffer, 0, view.buffer.byteLength);
    if (!this.scratch || this.scratch.length < whole.length) this.scratch = whole;
  }

  private dataPos(b: number): number {
    return this.bat[b] * SECTOR + this.bitmapBytes;
  }

  private bitmap(b: number): Promise<Uint8Array> {
    const dirty = this.dirtyBitmaps.get(b);
    if (dirty) return Promise.resolve(dirty);
    const cached = this.bitmapCache.get(b);
    if (cached) {
      this.bitmapCache.delete(b);
      this.bitmapCache.set(b, cached);
      return cached;
    }
    const loading = (async () => {
      const bits = new Uint8Array(this.bitmapBytes);
      await this.file.readAt(bits, this.bat[b] * SECTOR, `the sector bitmap of block ${b}`);
      return bits;
    })();
    loading.catch(() => this.bitmapCache.delete(b));
    this.insertCache(b, loading);
    return loading;
  }

  private cacheBitmap(b: number, bitmap: Uint8Array): void {
    this.bitmapCache.delete(b);
    this.insertCache(b, Promise.resolve(bitmap));
  }

  private insertCache(b: number, entry: Promise<Uint8Array>): void {
    this.bitmapCache.set(b, entry);
    while (this.bitmapCache.size > this.bitmapCacheLimit) {
      const oldest = this.bitmapCache.keys().next().value as number;
      this.bitmapCache.delete(oldest);
    }
  }

  private markDirty(b: number, bitmap: Uint8Array): void {
    this.bitmapCache.delete(b);
    this.dirtyBitmaps.set(b, bitmap);
  }

  /** Run mutations one at a time (allocation moves `nextFree`; write-back must see a stable state). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(fn, fn);
    this.mutex = run.catch(() => undefined);
    return run;
  }
}

/** Status of a byte range of any disk, combining the blocks that cover it. */
export function rangeStatus(disk: Disk, offset: number, length: number): BlockStatus {
  if (length <= 0) return 'absent';
  const first = Math.floor(offset / disk.blockSize);
  const last = Math.floor((offset + length - 1) / disk.blockSize);
  let sawZero = false;
  for (let i = first; i <= last; i++) {
    const s = disk.blockStatus(i);
    if (s === 'present') return 'present';
    if (s === 'zero') sawZero = true;
  }
  return sawZero ? 'zero' : 'absent';
}
