/**
 * `vhdsync resize`: change an image's virtual size in place — raw, fixed or dynamic VHD, fixed or dynamic
 * VHDX — holding the image's writer lock (ARCHITECTURE.md "Rules every file keeps") for the whole change. Growing
 * is crash-safe for every format (vhd/resize.ts, vhdx/resize.ts say how): a kill at any moment leaves an
 * image that opens at the old size or the new one, the old content intact and the new part zeros.
 * Shrinking loses the data past the new end, so it is refused unless asked for (`shrink`), and even then
 * only where it is a plain cut: raw images and fixed VHDs. Differencing disks are refused: a child has its
 * parent's size, and a parent resized under its children breaks them.
 */
import { VhdsyncError } from '../errors.js';
import { formatSize } from '../units.js';
import { refuseResyncSource } from '../resync-source.js';
import { lockFile, type Holder } from '../writer-lock.js';
import type { ImageFormat } from './detect.js';
import type { DiskType } from './disk.js';
import { SECTOR } from './vhd/be.js';
import { DiskFile } from './file-io.js';
import { readImage } from './image.js';
import { openDisk } from './open.js';
import { VhdDynamicDisk } from './vhd/dynamic.js';
import { DISK_TYPE_DIFFERENCING, DISK_TYPE_FIXED } from './vhd/footer.js';
import { readFooterCandidates, readVhdMetadata, type VhdMetadata } from './vhd/image.js';
import { checkVhdSize, growDynamicVhd, resizeFixedVhd, type StepHook } from './vhd/resize.js';
import { checkVhdxSize, growVhdx } from './vhdx/resize.js';

/** The size asked for: an absolute size, or a change (`+1G`, `-512M`) from the current one. */
export type ResizeTarget = { to: number } | { by: number };

export interface ResizeOptions {
  /** Allow a smaller size (raw images and fixed VHDs only): the data past the new end is lost. */
  shrink?: boolean;
  /** Skip detection (as `-f`): `raw` takes any file. */
  format?: ImageFormat;
  /** Another process writing the image: refuse at once (default), or wait (true: forever; a number: at most that many ms). */
  wait?: boolean | number;
  onWait?: (holder: Holder | undefined) => void;
  /** Called between two durable steps (the crash tests kill there). */
  onStep?: StepHook;
  /** A check made once the lock is held, before anything is written (the CLI refuses a replica with an unfinished resync). */
  beforeWrite?: () => Promise<void>;
}

export interface ResizeResult {
  image: string;
  format: ImageFormat;
  type: DiskType;
  oldSize: number;
  newSize: number;
  /** False when the image already had the size asked for. */
  changed: boolean;
  notes: string[];
}

/** `10G`, `+1G`, `-512M` (as qemu-img resize reads them); `parse` turns the number part into bytes. */
export function parseResizeTarget(text: string, parse: (t: string) => number): ResizeTarget {
  const t = text.trim();
  if (t.startsWith('+')) return { by: parse(t.slice(1)) };
  if (t.startsWith('-')) return { by: -parse(t.slice(1)) };
  return { to: parse(t) };
}

export async function resizeImage(path: string, target: ResizeTarget, options: ResizeOptions = {}): Promise<ResizeResult> {
  const lock = await lockFile(path, { what: path, wait: options.wait, onWait: options.onWait });
  try {
    await refuseResyncSource(path, 'resizing it');
    await options.beforeWrite?.();
    const result = await resizeLocked(path, target, options);
    if (result.changed) {
      // The image as any reader now finds it.
      const d = await openDisk(path, { readOnly: true, format: options.format });
      const seen = d.virtualSize;
      await d.close();
      if (seen !== result.newSize) throw new VhdsyncError('INTERNAL', `${path}: after the resize the image reads as ${seen} bytes, not ${result.newSize}`);
    }
    return result;
  } finally {
    await lock.release();
  }
}

async function resizeLocked(path: string, target: ResizeTarget, options: ResizeOptions): Promise<ResizeResult> {
  const step: StepHook = options.onStep ?? (() => undefined);
  const file = await DiskFile.open(path, false);
  try {
    const fileSize = await file.size();
    const image = await readImage(file, fileSize, false, options.format); // a dirty VHDX log is replayed first
    const format = image.format;
    const wanted = (current: number): number => {
      const size = 'to' in target ? target.to : current + target.by;
      if (!Number.isSafeInteger(size) || size <= 0) throw new VhdsyncError('BAD_SIZE', `${path}: the new size must be a positive number of bytes (it is ${formatSize(current)} now)`);
      return size;
    };
    /** A smaller size: refused for `unshrinkable` kinds, and for the others unless --shrink says the data past the end may go. */
    const refuseShrink = (current: number, size: number, unshrinkable?: string): void => {
      if (size >= current) return;
      if (unshrinkable !== undefined) {
        throw new VhdsyncError('UNSUPPORTED', `${path}: vhdsync does not shrink a ${unshrinkable} (${current} to ${size} bytes); only raw images and fixed VHDs can be cut, with --shrink`);
      }
      if (!options.shrink) {
        throw new VhdsyncError('USAGE', `${path}: ${formatSize(size)} is smaller than the ${formatSize(current)} the disk has; shrinking loses the data past the new end: run again with --shrink if that is what you want`);
      }
    };
    const result = (type: DiskType, oldSize: number, newSize: number, notes: string[] = []): ResizeResult => ({
      image: path, format, type, oldSize, newSize, changed: oldSize !== newSize, notes,
    });

    if (image.format === 'raw') {
      const size = wanted(fileSize);
      if (size % SECTOR !== 0) throw new VhdsyncError('BAD_SIZE', `${path}: size ${size} is not a multiple of 512 bytes`);
      refuseShrink(fileSize, size);
      if (size !== fileSize) {
        await file.truncate(size); // one step: the file has the old length or the new one
        await file.sync();
      }
      return result('fixed', fileSize, size);
    }

    if (image.format === 'vhdx') {
      const p = image.image.params;
      if (p.hasParent) throw differencing(path);
      const size = wanted(p.virtualSize);
      checkVhdxSize(path, size, p.logicalSectorSize);
      refuseShrink(p.virtualSize, size, 'VHDX');
      const type: DiskType = p.leaveBlocksAllocated ? 'fixed' : 'dynamic';
      if (size === p.virtualSize) return result(type, size, size);
      const { notes } = await growVhdx(file, image.image, size, step);
      return result(type, p.virtualSize, size, notes);
    }

    let meta = image.meta;
    if (meta.footer.diskType === DISK_TYPE_DIFFERENCING) throw differencing(path);
    if (meta.footer.savedState) {
      throw new VhdsyncError('STATE', `${path}: the VHD is marked as holding a saved VM state; the VHD spec forbids changing it until the VM is resumed and shut down`);
    }
    const old = meta.footer.currentSize;
    const size = wanted(old);
    checkVhdSize(path, size);
    if (meta.footer.diskType === DISK_TYPE_FIXED) {
      refuseShrink(old, size);
      if (size === old) return result('fixed', old, size);
      const { notes } = await resizeFixedVhd(file, meta, size, step);
      return result('fixed', old, size, notes);
    }
    refuseShrink(old, size, 'dynamic VHD');
    if (size === old) return result('dynamic', old, size);
    if (meta.footerSource !== 'trailing' || !meta.footerCopyValid) {
      // An interrupted block allocation (or resize) left one footer damaged: put both back first.
      await new VhdDynamicDisk(file, meta).repairFooters(meta.footerCopyValid);
      meta = await reread(file);
    }
    const { notes } = await growDynamicVhd(file, meta, size, step);
    return result('dynamic', old, size, notes);
  } finally {
    await file.close();
  }
}

async function reread(file: DiskFile): Promise<VhdMetadata> {
  const size = await file.size();
  const { head, tail } = await readFooterCandidates(file, size);
  return readVhdMetadata(file, size, head, tail);
}

function differencing(path: string): VhdsyncError {
  return new VhdsyncError(
    'UNSUPPORTED',
    `${path}: a differencing disk has its parent's size and cannot be resized alone (and resizing a parent breaks its children); merge the chain into one image first`,
  );
}
