/**
 * VHDX as a Disk: fixed, dynamic and differencing, 512-byte or 4 KiB logical sectors, blocks of 1 to
 * 256 MiB. Payload blocks are found through the BAT; a differencing disk decides sector by sector through
 * its chunk's LSB-first sector bitmap (set: this file; clear: the parent).
 *
 * Writes. The first write of an open gives the file a new FileWriteGuid and DataWriteGuid (both header
 * slots, made durable before any data lands). New blocks (payload: one block; sector bitmap: 1 MiB) are
 * appended at a 1 MiB boundary by extending the file, so they read as zeros until written. BAT entries
 * and bitmap changes are kept in memory (reads see them at once) and reach the file in `flush()`: the
 * data is made durable first, then the changed 4 KiB metadata pages go through the log ([MS-VHDX] 2.3)
 * and are written in place. A crash leaves either the previous metadata or a log any VHDX reader replays
 * (our open, Hyper-V, `qemu-img check -r all`); never metadata pointing at data that is not on disk.
 */
import { VhdsyncError } from '../errors.js';
import { MiB } from '../units.js';
import type { BlockStatus, Disk, DiskType } from './disk.js';
import type { ImageFile } from './file-io.js';
import { checkBlockIndex, checkOpen, checkRange, checkWritable, isAllZero } from './range.js';
import { rangeStatus } from './vhd-dynamic.js';
import {
  ENTRY_SIZE, PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_ZERO, SB_PRESENT, SECTOR_BITMAP_BLOCK_SIZE, bitmapIndex,
  entryOffset, entryState, hasData, payloadIndex, putEntry, type BatLayout,
} from './vhdx-bat.js';
import { VHDX_BITS, countBits, forEachRun, setBits } from './vhdx-bitmap.js';
import { readThroughBitmap, type PieceReader } from './sector-runs.js';
import { ImageReader, headerWriterFor, logTarget, type HeaderWriter, type LogState, type VhdxImage } from './vhdx-image.js';
import { guidText, randomGuid, roundUp } from './vhdx-le.js';
import { commitThroughLog } from './vhdx-log.js';
import type { ParentLocator, VhdxParams } from './vhdx-metadata.js';

/** Clean bitmap units kept in memory. */
const BITMAP_CACHE_BYTES = 8 * MiB;
/** Metadata pages changed in memory before they are written back through the log. */
const DIRTY_METADATA_BYTES = 4 * MiB;
const PAGE = 4096;

export interface VhdxDiskOptions {
  /** The next disk down the chain (differencing only). The child owns it and closes it. */
  parent?: Disk;
}

export class VhdxDisk implements Disk {
  readonly format = 'vhdx' as const;
  readonly type: DiskType;
  readonly sectorSize: number;
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly readOnly: boolean;
  readonly parent?: Disk;
  readonly params: VhdxParams;
  readonly creator: string;
  readonly logState: LogState;
  readonly replayedEntries: number;
  readonly warnings: string[];

  private readonly layout: BatLayout;
  private readonly bat: Uint8Array;
  private readonly batOffset: number;
  private readonly reader: ImageReader;
  private readonly headers: HeaderWriter;
  private fileSize: number;
  private nextFree: number;
  private sessionStarted = false;
  private dataWritten = false;
  private readonly dirtyBatPages = new Set<number>();
  /** Clean bitmap units by file offset, least recently used first. */
  private readonly units = new Map<number, Promise<Uint8Array>>();
  private readonly unitCacheLimit: number;
  /** Bitmap units changed in memory and not yet written. Never evicted before write-back. */
  private readonly dirtyUnits = new Map<number, Uint8Array>();
  private readonly unitBytes: number;
  private mutex: Promise<unknown> = Promise.resolve();
  private closed = false;
  private scratch: Uint8Array | undefined;

  constructor(
    private readonly file: ImageFile,
    private readonly image: VhdxImage,
    options: VhdxDiskOptions = {},
  ) {
    const p = image.params;
    this.params = p;
    this.type = p.hasParent ? 'differencing' : p.leaveBlocksAllocated ? 'fixed' : 'dynamic';
    this.sectorSize = p.logicalSectorSize;
    this.virtualSize = p.virtualSize;
    this.blockSize = p.blockSize;
    this.layout = image.layout;
    this.blockCount = image.layout.blockCount;
    this.readOnly = file.readOnly;
    this.parent = options.parent;
    this.creator = image.creator;
    this.logState = image.logState;
    this.replayedEntries = image.replayedEntries;
    this.warnings = image.warnings;
    this.bat = image.bat;
    this.batOffset = image.regions.bat.offset;
    this.reader = new ImageReader(file, image.view);
    this.headers = headerWriterFor(file, image);
    this.fileSize = image.fileSize;
    this.unitBytes = Math.max(this.layout.bitmapBytesPerBlock, PAGE);
    this.unitCacheLimit = Math.max(16, Math.floor(BITMAP_CACHE_BYTES / this.unitBytes));
    let end = image.fileSize;
    const l = this.layout;
    for (let b = 0; b < l.blockCount; b++) {
      const i = payloadIndex(l, b);
      if (hasData(entryState(this.bat, i))) end = Math.max(end, entryOffset(this.bat, i) + l.blockSize);
    }
    if (l.differencing) {
      for (let c = 0; c * l.chunkRatio < l.blockCount; c++) {
        const i = bitmapIndex(l, c);
        if (entryState(this.bat, i) === SB_PRESENT) end = Math.max(end, entryOffset(this.bat, i) + SECTOR_BITMAP_BLOCK_SIZE);
      }
    }
    this.nextFree = roundUp(end, MiB);
  }

  get path(): string {
    return this.file.path;
  }

  /** The current header's DataWriteGuid: changes on the first write of every writable open. */
  get dataWriteGuid(): string {
    return guidText(this.headers.header.dataWriteGuid);
  }

  get dataWriteGuidBytes(): Uint8Array {
    return this.headers.header.dataWriteGuid.slice();
  }

  get fileWriteGuid(): string {
    return guidText(this.headers.header.fileWriteGuid);
  }

  get headerSequence(): bigint {
    return this.headers.header.sequenceNumber;
  }

  /** Page 83 data: the virtual disk id (a differencing disk shares its parent's). */
  get virtualDiskId(): string {
    return guidText(this.params.page83);
  }

  get parentLocator(): ParentLocator | undefined {
    return this.params.parentLocator;
  }

  private state(b: number): number {
    return entryState(this.bat, payloadIndex(this.layout, b));
  }

  /** Does block `b` hold content of its own in this file (stored data, or defined zeros in a differencing disk)? */
  isAllocated(b: number): boolean {
    checkBlockIndex(this.path, this.blockCount, b);
    const st = this.state(b);
    return hasData(st) || (st === PAYLOAD_ZERO && this.type === 'differencing');
  }

  /** Blocks with data stored in this file. */
  allocatedBlocks(): number {
    let n = 0;
    for (let b = 0; b < this.blockCount; b++) if (hasData(this.state(b))) n++;
    return n;
  }

  blockStatus(index: number): BlockStatus {
    checkBlockIndex(this.path, this.blockCount, index);
    const st = this.state(index);
    if (hasData(st)) return 'present';
    if (st === PAYLOAD_ZERO) return 'zero';
    if (!this.parent) return 'absent';
    const start = index * this.blockSize;
    return rangeStatus(this.parent, start, Math.min(this.blockSize, this.virtualSize - start));
  }

  /**
   * The virtual byte ranges of block `b` whose content this file defines (sectors with their bit set in a
   * partially present block; the whole block when fully present, or zero in a differencing disk), in order.
   */
  async ownedRanges(b: number): Promise<Array<{ offset: number; length: number }>> {
    checkOpen(this.path, this.closed);
    checkBlockIndex(this.path, this.blockCount, b);
    const st = this.state(b);
    const start = b * this.blockSize;
    const len = Math.min(this.blockSize, this.virtualSize - start);
    if (st === PAYLOAD_FULLY_PRESENT || (st === PAYLOAD_ZERO && this.type === 'differencing')) return [{ offset: start, length: len }];
    if (st !== PAYLOAD_PARTIALLY_PRESENT) return [];
    const bitmap = await this.bitmap(b);
    const ss = this.sectorSize;
    const out: Array<{ offset: number; length: number }> = [];
    forEachRun(bitmap, 0, Math.ceil(len / ss), (s, e, set) => {
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
      throw new VhdsyncError('OUT_OF_RANGE', `${this.path}: range at byte ${offset} is not inside one block of this file`);
    }
    if (this.state(b) === PAYLOAD_ZERO) into.fill(0);
    else await this.reader.readAt(into, this.dataPos(b) + inBlock, `block ${b}`);
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
      const st = this.state(b);
      if (st === PAYLOAD_FULLY_PRESENT) {
        await this.reader.readAt(into.subarray(done, done + n), this.dataPos(b) + inBlock, `block ${b}`);
      } else if (st === PAYLOAD_PARTIALLY_PRESENT) {
        await this.readPartialPiece(b, inBlock, into.subarray(done, done + n));
      } else if (st === PAYLOAD_ZERO) {
        into.fill(0, done, done + n); // zeros, never the parent ([MS-VHDX] 2.5.1.1)
      } else {
        // Not described here: the parent's content (differencing) or zeros. Coalesce such a run of blocks.
        let next = b + 1;
        while (done + n < into.length && next < this.blockCount && this.describesNothing(this.state(next))) {
          n = Math.min(n + bs, into.length - done);
          next++;
        }
        const dst = into.subarray(done, done + n);
        if (this.parent) await this.parent.read(pos, dst);
        else dst.fill(0);
      }
      done += n;
    }
  }

  private describesNothing(st: number): boolean {
    return !hasData(st) && st !== PAYLOAD_ZERO;
  }

  private async readPartialPiece(b: number, inBlock: number, dst: Uint8Array): Promise<void> {
    await readThroughBitmap(this.pieceReader(b), await this.bitmap(b), b * this.blockSize, this.dataPos(b), inBlock, dst);
  }

  private pieceReader(b: number): PieceReader {
    return {
      sectorSize: this.sectorSize,
      bits: VHDX_BITS,
      readOwn: (into, at) => this.reader.readAt(into, at, `block ${b}`),
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
      await this.beginSession();
      const bs = this.blockSize;
      let done = 0;
      while (done < data.length) {
        const pos = offset + done;
        const b = Math.floor(pos / bs);
        const inBlock = pos - b * bs;
        const n = Math.min(bs - inBlock, data.length - done);
        const piece = data.subarray(done, done + n);
        if (this.type === 'differencing') await this.writeDifferencingPiece(b, inBlock, piece);
        else await this.writePlainPiece(b, inBlock, piece);
        done += n;
      }
      this.dataWritten = true;
      if ((this.dirtyBatPages.size + this.dirtyUnits.size * (this.unitBytes / PAGE)) * PAGE > DIRTY_METADATA_BYTES) await this.writeBack();
    });
  }

  /** [MS-VHDX] 2.2.2: new FileWriteGuid before the first write, new DataWriteGuid before the first visible change. */
  private async beginSession(): Promise<void> {
    if (this.sessionStarted) return;
    await this.headers.updateBoth({ dataWriteGuid: randomGuid() });
    this.sessionStarted = true;
  }

  /** Fixed and dynamic: write in place, or give the block its own space (all of it reads as zeros until written). */
  private async writePlainPiece(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    if (this.state(b) === PAYLOAD_FULLY_PRESENT) {
      await this.file.writeAt(piece, this.dataPos(b) + inBlock);
      return;
    }
    if (isAllZero(piece)) return; // every other state reads as zeros here already
    const at = await this.allocate(this.blockSize);
    await this.file.writeAt(piece, at + inBlock);
    this.setEntry(payloadIndex(this.layout, b), PAYLOAD_FULLY_PRESENT, at);
  }

  /**
   * Differencing: written sectors end up with their bit set, even for zeros (a clear bit means "ask the
   * parent"). A write covering part of a sector this file does not hold yet first reads that sector
   * through the chain, so the rest of the sector keeps its current content.
   */
  private async writeDifferencingPiece(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    const st = this.state(b);
    if (st === PAYLOAD_FULLY_PRESENT) {
      await this.file.writeAt(piece, this.dataPos(b) + inBlock);
      return;
    }
    if (st === PAYLOAD_ZERO) {
      // The block reads as zeros and not from the parent: a fresh (zero) block of its own keeps that true.
      if (isAllZero(piece)) return;
      const at = await this.allocate(this.blockSize);
      await this.file.writeAt(piece, at + inBlock);
      this.setEntry(payloadIndex(this.layout, b), PAYLOAD_FULLY_PRESENT, at);
      return;
    }
    const ss = this.sectorSize;
    const s0 = Math.floor(inBlock / ss);
    const s1 = Math.ceil((inBlock + piece.length) / ss);
    const count = s1 - s0;
    const partial = st === PAYLOAD_PARTIALLY_PRESENT;
    const ref = partial ? await this.bitmapRef(b) : undefined;
    const owned = ref ? countBits(ref.bits, s0, count) === count : false;
    const aligned = inBlock % ss === 0 && (inBlock + piece.length) % ss === 0;
    let buf = piece;
    let bufStart = inBlock;
    if (!aligned && !owned) {
      buf = new Uint8Array(count * ss);
      bufStart = s0 * ss;
      await this.read(b * this.blockSize + bufStart, buf);
      buf.set(piece, inBlock - bufStart);
    }
    if (partial) {
      await this.file.writeAt(buf, this.dataPos(b) + bufStart);
      if (!owned) {
        setBits(ref!.bits, s0, count);
        this.markDirty(ref!.at, ref!.unit);
      }
      return;
    }
    await this.ensureSectorBitmap(b);
    const at = await this.allocate(this.blockSize);
    await this.file.writeAt(buf, at + bufStart);
    this.setEntry(payloadIndex(this.layout, b), PAYLOAD_PARTIALLY_PRESENT, at);
    const fresh = await this.bitmapRef(b);
    fresh.bits.fill(0); // bits left from an earlier life of this block must not claim the new (zero) data
    setBits(fresh.bits, s0, count);
    this.markDirty(fresh.at, fresh.unit);
  }

  /** Give block `b`'s chunk its 1 MiB sector bitmap block if it has none (fresh space reads as all clear). */
  private async ensureSectorBitmap(b: number): Promise<void> {
    const i = bitmapIndex(this.layout, Math.floor(b / this.layout.chunkRatio));
    if (entryState(this.bat, i) === SB_PRESENT) return;
    const at = await this.allocate(SECTOR_BITMAP_BLOCK_SIZE);
    this.setEntry(i, SB_PRESENT, at);
  }

  /** Append `length` bytes (rounded to 1 MiB) at a 1 MiB boundary; the new space reads as zeros. */
  private async allocate(length: number): Promise<number> {
    const at = this.nextFree;
    const end = at + roundUp(length, MiB);
    if (end / MiB >= 2 ** 44) throw new VhdsyncError('BAD_SIZE', `${this.path}: the file would grow past what a VHDX BAT can address`);
    await this.file.truncate(end);
    this.nextFree = end;
    this.fileSize = end;
    return at;
  }

  private setEntry(i: number, state: number, offset: number): void {
    putEntry(this.bat, i, state, offset);
    this.dirtyBatPages.add(Math.floor((i * ENTRY_SIZE) / PAGE));
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    await this.exclusive(async () => {
      const hadMetadata = this.dirtyBatPages.size > 0 || this.dirtyUnits.size > 0;
      await this.writeBack();
      if (this.dataWritten && !hadMetadata) await this.file.sync();
      this.dataWritten = false;
    });
  }

  /** Make data durable, then commit the metadata pages that point at it through the log. */
  private async writeBack(): Promise<void> {
    if (this.dirtyBatPages.size === 0 && this.dirtyUnits.size === 0) return;
    await this.file.datasync();
    // A large update takes several log cycles, and a crash between two must leave valid metadata:
    // bitmap pages first (bits for blocks the BAT does not yet map are never read), then BAT pages from
    // the last down, so that a chunk's sector bitmap entry (after its payload entries) is committed no
    // later than the PARTIALLY_PRESENT entries that need it.
    const pages: Array<{ offset: number; data: Uint8Array }> = [];
    for (const [at, unit] of [...this.dirtyUnits].sort((x, y) => x[0] - y[0])) {
      for (let k = 0; k < unit.length; k += PAGE) pages.push({ offset: at + k, data: unit.slice(k, k + PAGE) });
    }
    for (const p of [...this.dirtyBatPages].sort((x, y) => y - x)) {
      pages.push({ offset: this.batOffset + p * PAGE, data: this.bat.slice(p * PAGE, (p + 1) * PAGE) });
    }
    await commitThroughLog(logTarget(this.file, this.image.log, this.headers, () => this.fileSize), pages);
    this.dirtyBatPages.clear();
    const units = [...this.dirtyUnits];
    this.dirtyUnits.clear();
    for (const [at, unit] of units) this.cacheUnit(at, Promise.resolve(unit));
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

  private dataPos(b: number): number {
    return entryOffset(this.bat, payloadIndex(this.layout, b));
  }

  /** Block `b`'s slice of its chunk's sector bitmap (a live view: changes must be marked dirty). */
  private async bitmap(b: number): Promise<Uint8Array> {
    return (await this.bitmapRef(b)).bits;
  }

  /** The bitmap unit holding block `b`'s slice: its file offset, its bytes, and the slice. */
  private async bitmapRef(b: number): Promise<{ at: number; unit: Uint8Array; bits: Uint8Array }> {
    const l = this.layout;
    const sb = entryOffset(this.bat, bitmapIndex(l, Math.floor(b / l.chunkRatio)));
    const sliceAt = sb + (b % l.chunkRatio) * l.bitmapBytesPerBlock;
    const at = sliceAt - ((sliceAt - sb) % this.unitBytes);
    const unit = await this.unit(at);
    return { at, unit, bits: unit.subarray(sliceAt - at, sliceAt - at + l.bitmapBytesPerBlock) };
  }

  private unit(at: number): Promise<Uint8Array> {
    const dirty = this.dirtyUnits.get(at);
    if (dirty) return Promise.resolve(dirty);
    const cached = this.units.get(at);
    if (cached) {
      this.units.delete(at);
      this.units.set(at, cached);
      return cached;
    }
    const loading = (async () => {
      const bits = new Uint8Array(this.unitBytes);
      await this.reader.readAt(bits, at, 'a sector bitmap');
      return bits;
    })();
    loading.catch(() => this.units.delete(at));
    this.cacheUnit(at, loading);
    return loading;
  }

  private markDirty(at: number, unit: Uint8Array): void {
    this.units.delete(at);
    this.dirtyUnits.set(at, unit);
  }

  private cacheUnit(at: number, entry: Promise<Uint8Array>): void {
    this.units.delete(at);
    this.units.set(at, entry);
    while (this.units.size > this.unitCacheLimit) {
      const oldest = this.units.keys().next().value as number;
      this.units.delete(oldest);
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

  /** Run mutations one at a time (allocation moves `nextFree`; write-back must see a stable state). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(fn, fn);
    this.mutex = run.catch(() => undefined);
    return run;
  }
}
