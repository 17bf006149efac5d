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
import { VhdsyncError } from '../../errors.js';
import { MiB } from '../../units.js';
import { BlockDisk, type BlockContent } from '../block-disk.js';
import type { Disk, DiskType } from '../disk.js';
import type { ImageFile } from '../file-io.js';
import { isAllZero } from '../range.js';
import {
  ENTRY_SIZE, PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_ZERO, SB_PRESENT, SECTOR_BITMAP_BLOCK_SIZE, bitmapIndex,
  entryOffset, entryState, hasData, payloadIndex, putEntry, type BatLayout,
} from './bat.js';
import { VHDX_BITS, setBits } from './bitmap.js';
import { ImageReader, headerWriterFor, logTarget, type HeaderWriter, type LogState, type VhdxImage } from './image.js';
import { guidText, randomGuid, roundUp } from './le.js';
import { commitThroughLog } from './log.js';
import type { ParentLocator, VhdxParams } from './metadata.js';

/** Metadata pages changed in memory before they are written back through the log. */
const DIRTY_METADATA_BYTES = 4 * MiB;
const PAGE = 4096;

export interface VhdxDiskOptions {
  /** The next disk down the chain (differencing only). The child owns it and closes it. */
  parent?: Disk;
}

export class VhdxDisk extends BlockDisk {
  readonly format = 'vhdx' as const;
  readonly type: DiskType;
  readonly params: VhdxParams;
  readonly creator: string;
  readonly logState: LogState;
  readonly replayedEntries: number;
  readonly warnings: string[];

  private readonly layout: BatLayout;
  private readonly bat: Uint8Array;
  private readonly batOffset: number;
  private readonly headers: HeaderWriter;
  private fileSize: number;
  private nextFree: number;
  private sessionStarted = false;
  private dataWritten = false;
  private readonly dirtyBatPages = new Set<number>();

  constructor(
    file: ImageFile,
    private readonly image: VhdxImage,
    options: VhdxDiskOptions = {},
  ) {
    const p = image.params;
    super(
      file,
      new ImageReader(file, image.view),
      {
        virtualSize: p.virtualSize, blockSize: p.blockSize, blockCount: image.layout.blockCount, sectorSize: p.logicalSectorSize,
        bits: VHDX_BITS, bitmapUnitBytes: Math.max(image.layout.bitmapBytesPerBlock, PAGE),
      },
      options.parent,
    );
    this.params = p;
    this.type = p.hasParent ? 'differencing' : p.leaveBlocksAllocated ? 'fixed' : 'dynamic';
    this.layout = image.layout;
    this.creator = image.creator;
    this.logState = image.logState;
    this.replayedEntries = image.replayedEntries;
    this.warnings = image.warnings;
    this.bat = image.bat;
    this.batOffset = image.regions.bat.offset;
    this.headers = headerWriterFor(file, image);
    this.fileSize = image.fileSize;
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

  protected content(b: number): BlockContent {
    const st = this.state(b);
    if (st === PAYLOAD_FULLY_PRESENT) return 'full';
    if (st === PAYLOAD_PARTIALLY_PRESENT) return 'partial';
    if (st === PAYLOAD_ZERO) return 'zero';
    return 'absent'; // not present, undefined or unmapped: the parent's content, or zeros
  }

  protected dataPos(b: number): number {
    return entryOffset(this.bat, payloadIndex(this.layout, b));
  }

  /** Block `b`'s slice of its chunk's sector bitmap, inside a unit of at least one 4 KiB log page. */
  protected bitmapPlace(b: number): { at: number; from: number; length: number } {
    const l = this.layout;
    const sb = entryOffset(this.bat, bitmapIndex(l, Math.floor(b / l.chunkRatio)));
    const sliceAt = sb + (b % l.chunkRatio) * l.bitmapBytesPerBlock;
    const at = sliceAt - ((sliceAt - sb) % this.bitmapUnitBytes);
    return { at, from: sliceAt - at, length: l.bitmapBytesPerBlock };
  }

  /**
   * In place when the block is stored whole; through the sector bitmap in a differencing disk; otherwise
   * the block reads as zeros (not the parent's content), and keeps doing so with a fresh block of its own
   * (all of it reads as zeros until written).
   */
  protected async writePiece(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    await this.beginSession();
    const st = this.state(b);
    if (st === PAYLOAD_FULLY_PRESENT) return this.file.writeAt(piece, this.dataPos(b) + inBlock);
    if (this.type === 'differencing' && st !== PAYLOAD_ZERO) return this.writeSectors(b, inBlock, piece);
    if (isAllZero(piece)) return;
    const at = await this.allocate(this.blockSize);
    await this.file.writeAt(piece, at + inBlock);
    this.setEntry(payloadIndex(this.layout, b), PAYLOAD_FULLY_PRESENT, at);
  }

  /** [MS-VHDX] 2.2.2: new FileWriteGuid before the first write, new DataWriteGuid before the first visible change. */
  private async beginSession(): Promise<void> {
    if (this.sessionStarted) return;
    await this.headers.updateBoth({ dataWriteGuid: randomGuid() });
    this.sessionStarted = true;
  }

  protected async allocateSectors(b: number, s0: number, count: number, data: Uint8Array, inBlock: number): Promise<void> {
    await this.ensureSectorBitmap(b);
    const at = await this.allocate(this.blockSize);
    await this.file.writeAt(data, at + inBlock);
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

  protected async endWrite(): Promise<void> {
    this.dataWritten = true;
    const pages = this.dirtyBatPages.size + this.dirtyBitmaps.size * (this.bitmapUnitBytes / PAGE);
    if (pages * PAGE > DIRTY_METADATA_BYTES) await this.writeBack();
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    await this.exclusive(async () => {
      const hadMetadata = this.dirtyBatPages.size > 0 || this.dirtyBitmaps.size > 0;
      await this.writeBack();
      if (this.dataWritten && !hadMetadata) await this.file.sync();
      this.dataWritten = false;
    });
  }

  get unpublished(): boolean {
    return this.dirtyBatPages.size > 0 || this.dirtyBitmaps.size > 0;
  }

  /** The BAT and bitmap pages kept in memory reach the file (data made durable first, then through the log). */
  async publish(): Promise<void> {
    if (this.readOnly || this.closed || !this.unpublished) return;
    await this.exclusive(() => this.writeBack());
  }

  /** Make data durable, then commit the metadata pages that point at it through the log. */
  private async writeBack(): Promise<void> {
    if (this.dirtyBatPages.size === 0 && this.dirtyBitmaps.size === 0) return;
    await this.file.datasync();
    // A large update takes several log cycles, and a crash between two must leave valid metadata:
    // bitmap pages first (bits for blocks the BAT does not yet map are never read), then BAT pages from
    // the last down, so that a chunk's sector bitmap entry (after its payload entries) is committed no
    // later than the PARTIALLY_PRESENT entries that need it.
    const pages: Array<{ offset: number; data: Uint8Array }> = [];
    for (const [at, unit] of [...this.dirtyBitmaps].sort((x, y) => x[0] - y[0])) {
      for (let k = 0; k < unit.length; k += PAGE) pages.push({ offset: at + k, data: unit.slice(k, k + PAGE) });
    }
    for (const p of [...this.dirtyBatPages].sort((x, y) => y - x)) {
      pages.push({ offset: this.batOffset + p * PAGE, data: this.bat.slice(p * PAGE, (p + 1) * PAGE) });
    }
    await commitThroughLog(logTarget(this.file, this.image.log, this.headers, () => this.fileSize), pages);
    this.dirtyBatPages.clear();
    this.bitmapsWritten();
  }
}
