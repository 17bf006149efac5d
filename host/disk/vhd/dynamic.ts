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
import { VhdsyncError } from '../../errors.js';
import { MiB } from '../../units.js';
import { BlockDisk, type BlockContent } from '../block-disk.js';
import type { Disk, DiskType } from '../disk.js';
import { SECTOR } from './be.js';
import type { ImageFile } from '../file-io.js';
import { isAllZero } from '../range.js';
import { BAT_UNUSED, MAX_BLOCK_OFFSET, putBatEntry } from './bat.js';
import { VHD_BITS, setBits } from './bitmap.js';
import { DISK_TYPE_DIFFERENCING, type VhdFooter } from './footer.js';
import type { DynamicHeader } from './header.js';
import type { VhdMetadata } from './image.js';

/** Changed bitmaps are written back once they exceed this. */
const DIRTY_BITMAP_BYTES = 4 * MiB;

export interface VhdDynamicOptions {
  /** The next disk down the chain (differencing only). The child owns it and closes it. */
  parent?: Disk;
}

export class VhdDynamicDisk extends BlockDisk {
  readonly format = 'vhd' as const;
  readonly type: DiskType;
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

  constructor(file: ImageFile, meta: VhdMetadata, options: VhdDynamicOptions = {}) {
    const dyn = meta.dynamic;
    if (!dyn) throw new VhdsyncError('UNSUPPORTED', `${file.path}: not a dynamic or differencing VHD`);
    super(
      file,
      file,
      {
        virtualSize: meta.footer.currentSize, blockSize: dyn.header.blockSize, blockCount: dyn.blockCount, sectorSize: SECTOR,
        bits: VHD_BITS, bitmapUnitBytes: dyn.bitmapBytes,
      },
      options.parent,
    );
    this.type = meta.footer.diskType === DISK_TYPE_DIFFERENCING ? 'differencing' : 'dynamic';
    this.footer = meta.footer;
    this.header = dyn.header;
    this.footerSource = meta.footerSource;
    this.footerCopyValid = meta.footerCopyValid;
    this.warnings = meta.warnings;
    this.footerBytes = meta.footerBytes.slice();
    this.bat = dyn.bat;
    this.batRaw = dyn.batRaw;
    this.bitmapBytes = dyn.bitmapBytes;
    this.nextFree = dyn.nextFree;
  }

  protected content(b: number): BlockContent {
    if (this.bat[b] === BAT_UNUSED) return 'absent';
    // Dynamic disks: sectors whose bit is clear hold zeros on disk (VHD spec), so the bitmap is not needed.
    return this.type === 'dynamic' ? 'full' : 'partial';
  }

  protected dataPos(b: number): number {
    return this.bat[b] * SECTOR + this.bitmapBytes;
  }

  protected bitmapPlace(b: number): { at: number; from: number; length: number } {
    return { at: this.bat[b] * SECTOR, from: 0, length: this.bitmapBytes };
  }

  protected async writePiece(b: number, inBlock: number, piece: Uint8Array): Promise<void> {
    if (this.type === 'differencing') return this.writeSectors(b, inBlock, piece);
    if (this.bat[b] !== BAT_UNUSED) {
      await this.file.writeAt(piece, this.dataPos(b) + inBlock);
    } else if (!isAllZero(piece)) {
      // A dynamic disk reads unallocated blocks as zeros, so zeros need no block; anything else does.
      // Bitmap all ones, as qemu does: every sector of a new block is zero on disk or written now.
      await this.allocate(b, new Uint8Array(this.bitmapBytes).fill(0xff), piece, inBlock);
    }
  }

  protected async allocateSectors(b: number, s0: number, count: number, data: Uint8Array, inBlock: number): Promise<void> {
    const bitmap = new Uint8Array(this.bitmapBytes);
    setBits(bitmap, s0, count);
    await this.allocate(b, bitmap, data, inBlock);
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
    this.cacheBitmap(at, Promise.resolve(bitmap));
  }

  protected async endWrite(): Promise<void> {
    if (this.dirtyBitmaps.size * this.bitmapBytes > DIRTY_BITMAP_BYTES) await this.writeBack();
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    await this.exclusive(async () => {
      await this.writeBack();
      await this.file.sync();
    });
  }

  get unpublished(): boolean {
    return this.pendingBat.size > 0 || this.dirtyBitmaps.size > 0;
  }

  /** The BAT entries and bitmaps kept in memory reach the file (after a datasync of their data), without a full sync. */
  async publish(): Promise<void> {
    if (this.readOnly || this.closed || !this.unpublished) return;
    await this.exclusive(() => this.writeBack());
  }

  /** Make data durable, then write the metadata that points at it. */
  private async writeBack(): Promise<void> {
    if (this.pendingBat.size === 0 && this.dirtyBitmaps.size === 0) return;
    await this.file.datasync();
    for (const [at, bitmap] of this.dirtyBitmaps) await this.file.writeAt(bitmap, at);
    this.bitmapsWritten();
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
}
