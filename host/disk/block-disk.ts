/**
 * What VHD dynamic and differencing disks and VHDX disks share: a disk cut into blocks that this file
 * holds whole, holds sector by sector through a bitmap (differencing), declares zero, or leaves to the
 * parent. Here: reading across blocks, splitting writes by block under one lock, the differencing
 * read-modify-write of partial sectors, and the cache of sector bitmaps. Each format says where a
 * block's state, data and bitmap are recorded, how a block is allocated and how metadata reaches the file.
 */
import { VhdsyncError } from '../errors.js';
import { MiB } from '../units.js';
import type { BlockStatus, ByteRange, Disk, DiskFormat, DiskLayer, DiskType } from './disk.js';
import type { ImageFile } from './file-io.js';
import { checkBlockIndex, checkOpen, checkRange, checkWritable } from './range.js';
import { forEachRunOf, readThroughBitmap, type PieceReader, type SectorBitmap } from './sector-runs.js';

/** Clean bitmaps kept in memory (bounded by bytes; 8 MiB of VHD bitmaps for 2 MiB blocks covers 32 GiB of disk). */
const BITMAP_CACHE_BYTES = 8 * MiB;

/** What this file says about one block. */
export type BlockContent =
  | 'absent' // nothing: the parent's content, or zeros without a parent
  | 'zero' // zeros, never the parent ([MS-VHDX] 2.5.1.1)
  | 'full' // every sector is stored in this file
  | 'partial'; // sectors with their bitmap bit set are stored here, the others are the parent's

export interface BlockGeometry {
  virtualSize: number;
  blockSize: number;
  blockCount: number;
  sectorSize: number;
  /** The format's bit order. */
  bits: SectorBitmap;
  /** Bytes of sector bitmap read, cached and written back as one piece. */
  bitmapUnitBytes: number;
}

/** Stored bytes are read through this (VHDX: with the pages of an unreplayed log patched in). */
export interface StoredBytes {
  readAt(into: Uint8Array, position: number, what: string): Promise<void>;
}

/** A block's sector bitmap: the cached unit that holds it (by file offset) and its slice of that unit. */
export interface BitmapRef {
  at: number;
  unit: Uint8Array;
  /** A live view into `unit`: a change must be marked with `markDirty(at, unit)`. */
  bits: Uint8Array;
}

export abstract class BlockDisk implements DiskLayer {
  abstract readonly format: DiskFormat;
  abstract readonly type: DiskType;
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly sectorSize: number;
  readonly readOnly: boolean;
  readonly parent?: Disk;
  protected closed = false;
  protected readonly bits: SectorBitmap;
  protected readonly bitmapUnitBytes: number;
  /** Bitmap units changed in memory and not yet written, by file offset. Never evicted before write-back. */
  protected readonly dirtyBitmaps = new Map<number, Uint8Array>();
  /** Clean bitmap units by file offset, least recently used first. */
  private readonly bitmapCache = new Map<number, Promise<Uint8Array>>();
  private readonly bitmapCacheLimit: number;
  private mutex: Promise<unknown> = Promise.resolve();
  private scratch: Uint8Array | undefined;

  protected constructor(
    protected readonly file: ImageFile,
    private readonly stored: StoredBytes,
    geometry: BlockGeometry,
    parent: Disk | undefined,
  ) {
    this.virtualSize = geometry.virtualSize;
    this.blockSize = geometry.blockSize;
    this.blockCount = geometry.blockCount;
    this.sectorSize = geometry.sectorSize;
    this.bits = geometry.bits;
    this.bitmapUnitBytes = geometry.bitmapUnitBytes;
    this.bitmapCacheLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / geometry.bitmapUnitBytes));
    this.readOnly = file.readOnly;
    this.parent = parent;
  }

  get path(): string {
    return this.file.path;
  }

  /** What this file says about block `b`. */
  protected abstract content(b: number): BlockContent;
  /** File offset of block `b`'s data (its content is 'full' or 'partial'). */
  protected abstract dataPos(b: number): number;
  /** Where block `b`'s sector bitmap lies: the unit's file offset, and the slice's offset and length in it. */
  protected abstract bitmapPlace(b: number): { at: number; from: number; length: number };
  /** Write `piece` at `inBlock` inside block `b` (called under the lock). */
  protected abstract writePiece(b: number, inBlock: number, piece: Uint8Array): Promise<void>;
  /** Give block `b` data and a bitmap with sectors [s0, s0 + count) set, and write `data` at `inBlock`. */
  protected abstract allocateSectors(b: number, s0: number, count: number, data: Uint8Array, inBlock: number): Promise<void>;
  /** Called under the lock once every piece of a write is in the file: write back metadata that piled up. */
  protected abstract endWrite(): Promise<void>;
  abstract flush(): Promise<void>;

  /** Does this file define the content itself (stored data, or declared zeros in a differencing disk)? */
  private defines(content: BlockContent): boolean {
    return content === 'full' || content === 'partial' || (content === 'zero' && this.type === 'differencing');
  }

  /** Does block `b` hold content of its own in this file (stored data, or defined zeros in a differencing disk)? */
  isAllocated(b: number): boolean {
    checkBlockIndex(this.path, this.blockCount, b);
    return this.defines(this.content(b));
  }

  /** Blocks with data stored in this file (not counting ancestors). */
  allocatedBlocks(): number {
    let n = 0;
    for (let b = 0; b < this.blockCount; b++) {
      const c = this.content(b);
      if (c === 'full' || c === 'partial') n++;
    }
    return n;
  }

  blockStatus(index: number): BlockStatus {
    checkBlockIndex(this.path, this.blockCount, index);
    const c = this.content(index);
    if (c === 'full' || c === 'partial') return 'present';
    if (c === 'zero') return 'zero';
    if (!this.parent) return 'absent';
    const start = index * this.blockSize;
    return rangeStatus(this.parent, start, Math.min(this.blockSize, this.virtualSize - start));
  }

  /**
   * The virtual byte ranges of block `b` whose content this file defines (sectors with their bit set in a
   * partial block; the whole block when full, or zero in a differencing disk), clipped to the virtual size, in order.
   */
  async ownedRanges(b: number): Promise<ByteRange[]> {
    checkOpen(this.path, this.closed);
    checkBlockIndex(this.path, this.blockCount, b);
    const c = this.content(b);
    const start = b * this.blockSize;
    const len = Math.min(this.blockSize, this.virtualSize - start);
    if (c !== 'partial') return this.defines(c) ? [{ offset: start, length: len }] : [];
    const bitmap = (await this.bitmapRef(b)).bits;
    const ss = this.sectorSize;
    const out: ByteRange[] = [];
    forEachRunOf(this.bits, bitmap, 0, Math.ceil(len / ss), (s, e, set) => {
      if (set) out.push({ offset: start + s * ss, length: Math.min(e * ss, len) - s * ss });
    });
    return out;
  }

  /** Read this file's own content for a range inside one block, ignoring the bitmap and the parent. */
  async readOwn(offset: number, into: Uint8Array): Promise<void> {
    checkOpen(this.path, this.closed);
    checkRange(this.path, this.virtualSize, offset, into.length);
    const b = Math.floor(offset / this.blockSize);
    const inBlock = offset - b * this.blockSize;
    if (inBlock + into.length > this.blockSize || !this.isAllocated(b)) {
      throw new VhdsyncError('OUT_OF_RANGE', `${this.path}: range at byte ${offset} is not inside one allocated block`);
    }
    if (this.content(b) === 'zero') into.fill(0);
    else await this.stored.readAt(into, this.dataPos(b) + inBlock, `block ${b}`);
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
      const c = this.content(b);
      if (c === 'full') {
        await this.stored.readAt(into.subarray(done, done + n), this.dataPos(b) + inBlock, `block ${b}`);
      } else if (c === 'partial') {
        const bitmap = (await this.bitmapRef(b)).bits;
        await readThroughBitmap(this.pieceReader(b), bitmap, b * bs, this.dataPos(b), inBlock, into.subarray(done, done + n));
      } else if (c === 'zero') {
        into.fill(0, done, done + n);
      } else {
        // Coalesce a run of blocks this file says nothing about into one parent read or one fill.
        let next = b + 1;
        while (done + n < into.length && next < this.blockCount && this.content(next) === 'absent') {
          n = Math.min(n + bs, into.length - done);
          next++;
        }
        await this.readParent(pos, into.subarray(done, done + n));
      }
      done += n;
    }
  }

  private pieceReader(b: number): PieceReader {
    return {
      sectorSize: this.sectorSize,
      bits: this.bits,
      readOwn: (into, at) => this.stored.readAt(into, at, `block ${b}`),
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
    if (data.length === 0) return;
    await this.exclusive(async () => {
      const bs = this.blockSize;
      let done = 0;
      while (done < data.length) {
        const pos = offset + done;
        const b = Math.floor(pos / bs);
        const inBlock = pos - b * bs;
        const n = Math.min(bs - inBlock, data.length - done);
        await this.writePiece(b, inBlock, data.subarray(done, done + n));
        done += n;
      }
      await this.endWrite();
    });
  }

  /**
   * Differencing: written sectors end up with their bit set, even for zeros (a clear bit means "ask the
   * parent"). A write covering part of a sector this file does not hold yet first reads that sector
   * through the chain, so the rest of the sector keeps its current content.
   */
  protected async writeSectors(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    const ss = this.sectorSize;
    const s0 = Math.floor(inBlock / ss);
    const count = Math.ceil((inBlock + piece.length) / ss) - s0;
    const ref = this.content(b) === 'partial' ? await this.bitmapRef(b) : undefined;
    const owned = ref !== undefined && this.bits.countBits(ref.bits, s0, count) === count;
    const aligned = inBlock % ss === 0 && (inBlock + piece.length) % ss === 0;
    let buf = piece;
    let bufStart = inBlock;
    if (!aligned && !owned) {
      buf = new Uint8Array(count * ss);
      bufStart = s0 * ss;
      await this.read(b * this.blockSize + bufStart, buf);
      buf.set(piece, inBlock - bufStart);
    }
    if (!ref) return this.allocateSectors(b, s0, count, buf, bufStart);
    await this.file.writeAt(buf, this.dataPos(b) + bufStart);
    if (!owned) {
      this.bits.setBits(ref.bits, s0, count);
      this.markDirty(ref.at, ref.unit);
    }
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

  /** Run mutations one at a time (allocation moves the end of the file; write-back must see a stable state). */
  protected exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(fn, fn);
    this.mutex = run.catch(() => undefined);
    return run;
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

  protected async bitmapRef(b: number): Promise<BitmapRef> {
    const { at, from, length } = this.bitmapPlace(b);
    const unit = await this.bitmapUnit(at, b);
    return { at, unit, bits: unit.subarray(from, from + length) };
  }

  private bitmapUnit(at: number, b: number): Promise<Uint8Array> {
    const dirty = this.dirtyBitmaps.get(at);
    if (dirty) return Promise.resolve(dirty);
    const cached = this.bitmapCache.get(at);
    if (cached) {
      this.bitmapCache.delete(at);
      this.bitmapCache.set(at, cached);
      return cached;
    }
    const loading = (async () => {
      const unit = new Uint8Array(this.bitmapUnitBytes);
      await this.stored.readAt(unit, at, `the sector bitmap of block ${b}`);
      return unit;
    })();
    loading.catch(() => this.bitmapCache.delete(at));
    this.cacheBitmap(at, loading);
    return loading;
  }

  /** Keep a clean bitmap unit (one just written to the file, or being read). */
  protected cacheBitmap(at: number, unit: Promise<Uint8Array>): void {
    this.bitmapCache.delete(at);
    this.bitmapCache.set(at, unit);
    while (this.bitmapCache.size > this.bitmapCacheLimit) {
      const oldest = this.bitmapCache.keys().next().value as number;
      this.bitmapCache.delete(oldest);
    }
  }

  protected markDirty(at: number, unit: Uint8Array): void {
    this.bitmapCache.delete(at);
    this.dirtyBitmaps.set(at, unit);
  }

  /** The dirty units have reached the file: they become clean cache entries. */
  protected bitmapsWritten(): void {
    const written = [...this.dirtyBitmaps];
    this.dirtyBitmaps.clear();
    for (const [at, unit] of written) this.cacheBitmap(at, Promise.resolve(unit));
  }
}

/** Status of a byte range of any disk, combining the blocks that cover it. */
function rangeStatus(disk: Disk, offset: number, length: number): BlockStatus {
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
