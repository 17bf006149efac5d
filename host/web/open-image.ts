/**
 * Opening a disk image picked in the browser: the routine `openDisk` reads a file with
 * (host/disk/image.ts: the one detection, then the format's structures), over a Blob — VHDX, VHD or
 * raw; qcow2, VMDK, VDI and QED refused by name, as a `.vhd`/`.avhd`/`.vhdx`/`.avhdx` without its
 * signature. There are no paths in a browser, so a differencing disk, whose data lives partly in its
 * parent, is refused.
 */
import { VhdsyncError } from '../errors.js';
import type { Disk } from '../disk/disk.js';
import { readImage } from '../disk/image.js';
import { RawDisk } from '../disk/raw.js';
import { VhdDynamicDisk } from '../disk/vhd/dynamic.js';
import { VhdFixedDisk } from '../disk/vhd/fixed.js';
import { DISK_TYPE_DIFFERENCING, DISK_TYPE_FIXED } from '../disk/vhd/footer.js';
import { VhdxDisk } from '../disk/vhdx/disk.js';
import { BlobFile } from './blob-file.js';

/** What the page shows about one image. */
export interface ImageInfo {
  name: string;
  fileSize: number;
  format: Disk['format'];
  type: Disk['type'];
  virtualSize: number;
  blockSize: number;
  /** Things worth knowing that do not stop the compare (a damaged footer copy, ...). */
  warnings: string[];
}

export interface OpenedImage {
  disk: Disk;
  file: BlobFile;
  info: ImageInfo;
}

/** Open `file` read-only. Anything malformed is a VhdsyncError with one line naming the file. */
export async function openImage(file: Blob & { readonly name: string }): Promise<OpenedImage> {
  const name = file.name;
  const blob = new BlobFile(file, name);
  const size = await blob.size();
  if (size === 0) throw new VhdsyncError('TRUNCATED', `${name}: the file is empty; it is not a disk image`);
  const disk = await detect(blob, size, name);
  const warnings = 'warnings' in disk ? (disk as { warnings: string[] }).warnings : [];
  return {
    disk,
    file: blob,
    info: {
      name,
      fileSize: size,
      format: disk.format,
      type: disk.type,
      virtualSize: disk.virtualSize,
      blockSize: disk.blockSize,
      warnings,
    },
  };
}

async function detect(file: BlobFile, size: number, name: string): Promise<Disk> {
  // Read-only: a VHDX log left by a crash is replayed in memory, the picked file is never written.
  const image = await readImage(file, size, true);
  if (image.format === 'vhdx') {
    if (image.image.params.hasParent) {
      throw new VhdsyncError(
        'UNSUPPORTED',
        `${name}: a differencing VHDX; its unchanged data lives in its parent, which a page cannot open from one picked file. Merge the chain first, or run 'vhdsync compare' on the command line`,
      );
    }
    return new VhdxDisk(file, image.image);
  }
  if (image.format === 'raw') return RawDisk.fromFile(file, size);
  const meta = image.meta;
  if (meta.footer.diskType === DISK_TYPE_FIXED) return new VhdFixedDisk(file, meta);
  if (meta.footer.diskType === DISK_TYPE_DIFFERENCING) {
    const parent = meta.dynamic?.header.parentUnicodeName || 'its parent';
    throw new VhdsyncError(
      'UNSUPPORTED',
      `${name}: a differencing VHD; its unchanged data lives in ${parent}, which a page cannot open from one picked file. Merge the chain first, or run 'vhdsync compare' on the command line`,
    );
  }
  return new VhdDynamicDisk(file, meta);
}
