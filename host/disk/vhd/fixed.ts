/**
 * A fixed VHD: the virtual disk stored flat, followed by a 512-byte footer. Reads and writes go straight
 * to the file; the footer never changes.
 */
import type { DiskFormat } from '../disk.js';
import type { ImageFile } from '../file-io.js';
import { RawDisk } from '../raw.js';
import type { VhdFooter } from './footer.js';
import type { VhdMetadata } from './image.js';

export class VhdFixedDisk extends RawDisk {
  override readonly format: DiskFormat = 'vhd';
  readonly footer: VhdFooter;
  readonly warnings: string[];

  constructor(file: ImageFile, meta: VhdMetadata) {
    super(file, meta.footer.currentSize);
    this.footer = meta.footer;
    this.warnings = meta.warnings;
  }
}
