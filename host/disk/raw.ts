/**
 * A raw image: the file is the disk. Also the base of the fixed VHD, which is raw data plus a footer.
 */
import { MiB } from '../units.js';
import type { BlockStatus, Disk, DiskFormat, DiskType } from './disk.js';
import type { ImageFile } from './file-io.js';
import { checkBlockIndex, checkOpen, checkRange, checkWritable } from './range.js';

/** Raw and fixed images have no allocation unit; 2 MiB is the convention the resync iterates by. */
export const FLAT_BLOCK_SIZE = 2 * MiB;

export class RawDisk implements Disk {
  readonly format: DiskFormat = 'raw';
  readonly type: DiskType = 'fixed';
  readonly sectorSize = 512;
  readonly blockSize = FLAT_BLOCK_SIZE;
  readonly blockCount: number;
  readonly readOnly: boolean;
  readonly parent?: Disk = undefined;
  protected closed = false;

  protected constructor(
    protected readonly file: ImageFile,
    readonly virtualSize: number,
  ) {
    this.readOnly = file.readOnly;
    this.blockCount = Math.ceil(virtualSize / this.blockSize);
  }

  get path(): string {
    return this.file.path;
  }

  /** Wrap an already open file whose first `virtualSize` bytes are the disk. */
  static fromFile(file: ImageFile, virtualSize: number): RawDisk {
    return new RawDisk(file, virtualSize);
  }

  blockStatus(index: number): BlockStatus {
    checkBlockIndex(this.path, this.blockCount, index);
    return 'present';
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    checkOpen(this.path, this.closed);
    checkRange(this.path, this.virtualSize, offset, into.length);
    await this.file.readAt(into, offset);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkOpen(this.path, this.closed);
    checkWritable(this.path, this.readOnly);
    checkRange(this.path, this.virtualSize, offset, data.length);
    await this.file.writeAt(data, offset);
  }

  async writeRun(offset: number, parts: readonly Uint8Array[]): Promise<void> {
    checkOpen(this.path, this.closed);
    checkWritable(this.path, this.readOnly);
    checkRange(this.path, this.virtualSize, offset, parts.reduce((n, p) => n + p.byteLength, 0));
    if (this.file.writevAt) await this.file.writevAt(parts, offset);
    else for (let at = offset, i = 0; i < parts.length; at += parts[i++].byteLength) await this.file.writeAt(parts[i], at);
  }

  async flush(): Promise<void> {
    if (this.readOnly || this.closed) return;
    await this.file.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.file.close();
    }
  }
}
