/**
 * Opening any disk image by path: detect the format (detect.ts: VHDX, VHD or raw; qcow2, VMDK, VDI
 * and QED refused by name), then build the backend and, for a differencing VHD or VHDX, the chain of
 * parents.
 */
import { realpath } from 'node:fs/promises';
import { VhdsyncError, ioError } from '../errors.js';
import type { ImageFormat } from './detect.js';
import type { Disk, DiskLayer } from './disk.js';
import { DiskFile } from './file-io.js';
import { readImage } from './image.js';
import { RawDisk } from './raw.js';
import { uuidText } from './vhd/be.js';
import { VhdDynamicDisk } from './vhd/dynamic.js';
import { VhdFixedDisk } from './vhd/fixed.js';
import { DISK_TYPE_DIFFERENCING, DISK_TYPE_FIXED, hasRawParent } from './vhd/footer.js';
import type { VhdMetadata } from './vhd/image.js';
import { resolveParent } from './vhd/parent.js';
import { VhdxDisk } from './vhdx/disk.js';
import { hasFileSignature } from './vhdx/header.js';
import type { VhdxImage } from './vhdx/image.js';
import { resolveVhdxParent } from './vhdx/parent.js';
import { bytesEqual } from '../bytes.js';

export interface OpenOptions {
  /** Open without write access (default false). Parents in a chain are always opened read-only. */
  readOnly?: boolean;
  /** Skip detection. `raw` treats any file as a raw image; `vhd` and `vhdx` refuse any other format. */
  format?: ImageFormat;
}

/** Longest parent chain we follow; deeper chains are treated as a loop. */
export const MAX_CHAIN_DEPTH = 64;

export type VhdDisk = VhdFixedDisk | VhdDynamicDisk;

/**
 * Open a disk image. Throws a VhdsyncError with one clear line for anything malformed; a differencing
 * VHD's parents are found through its locators and opened read-only (`disk.parent`).
 */
export async function openDisk(path: string, options: OpenOptions = {}): Promise<Disk> {
  return openLink(path, options.readOnly ?? false, options.format, []);
}

/**
 * Open one VHD file without its parent (a differencing disk then reads unallocated sectors as zeros):
 * the VHD half of `openDiskAlone`, which `info`, merge and discard use; exported in `vhdsync/formats`.
 */
export async function openVhdAlone(path: string, options: { readOnly?: boolean } = {}): Promise<VhdDisk> {
  const readOnly = options.readOnly ?? true;
  const file = await DiskFile.open(path, readOnly);
  try {
    const image = await readImage(file, await file.size(), readOnly, 'vhd');
    if (image.format !== 'vhd') throw new VhdsyncError('INTERNAL', `${path}: detection forced to VHD found ${image.format}`);
    return await buildVhd(file, image.meta, readOnly);
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Open one VHD or VHDX file without its parent (a differencing disk then reads what its parent would
 * supply as zeros). For tools that look at a single file: `info`, merge, discard.
 */
export async function openDiskAlone(path: string, options: { readOnly?: boolean } = {}): Promise<VhdDisk | VhdxDisk> {
  const readOnly = options.readOnly ?? true;
  if (!(await isVhdxFile(path))) return openVhdAlone(path, options);
  const file = await DiskFile.open(path, readOnly);
  try {
    const image = await readImage(file, await file.size(), readOnly, 'vhdx');
    if (image.format !== 'vhdx') throw new VhdsyncError('INTERNAL', `${path}: detection forced to VHDX found ${image.format}`);
    return new VhdxDisk(file, image.image);
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Open one dynamic or differencing VHD, or any VHDX, without its parent, as the layer of a chain it is:
 * what it defines itself (merge, the pre-resync point). A fixed VHD has no blocks of its own to list.
 */
export async function openDiskLayer(path: string, options: { readOnly?: boolean } = {}): Promise<DiskLayer> {
  const disk = await openDiskAlone(path, options);
  if (!(disk instanceof VhdFixedDisk)) return disk;
  await disk.close();
  throw new VhdsyncError('UNSUPPORTED', `${path}: a fixed VHD, not a layer of a differencing chain (a dynamic or differencing disk)`);
}

/** Does the file start with the VHDX signature `vhdxfile`? */
export async function isVhdxFile(path: string): Promise<boolean> {
  const file = await DiskFile.open(path, true);
  try {
    const head = new Uint8Array(8);
    return (await file.readUpTo(head, 0)) === 8 && hasFileSignature(head);
  } finally {
    await file.close();
  }
}

interface ChainLink {
  real: string;
  shown: string;
}

async function openLink(path: string, readOnly: boolean, format: OpenOptions['format'], chain: ChainLink[]): Promise<Disk> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (e) {
    throw ioError(path, e);
  }
  if (chain.some((l) => l.real === real)) {
    const names = [...chain.map((l) => l.shown), path].join(' -> ');
    throw new VhdsyncError('PARENT_LOOP', `${chain[0].shown}: the parent chain loops (${names})`);
  }
  if (chain.length >= MAX_CHAIN_DEPTH) {
    throw new VhdsyncError('PARENT_LOOP', `${chain[0].shown}: the parent chain is deeper than ${MAX_CHAIN_DEPTH} disks; it probably loops`);
  }
  const file = await DiskFile.open(path, readOnly);
  try {
    const size = await file.size();
    const parentOf = chain.length > 0 ? chain[chain.length - 1].shown : undefined;
    const image = await readImage(file, size, readOnly, format, parentOf);
    if (image.format === 'raw') return RawDisk.fromFile(file, size);
    if (image.format === 'vhdx') return await openVhdx(file, image.image, path, real, chain);
    const meta = image.meta;
    if (meta.footer.diskType !== DISK_TYPE_DIFFERENCING) return await buildVhd(file, meta, readOnly);

    const header = meta.dynamic!.header;
    const found = await resolveParent(file, size, header);
    const rawParent = hasRawParent(meta.footer, header.parentUniqueId);
    const parent = await openLink(found.path, true, rawParent ? 'raw' : 'vhd', [...chain, { real, shown: path }]);
    try {
      checkParent(path, meta, parent, found.path, rawParent);
      return await buildVhd(file, meta, readOnly, parent);
    } catch (e) {
      await parent.close().catch(() => undefined);
      throw e;
    }
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}

/** A VHDX and, for a differencing one, its parent chain (the parent must be a VHDX whose DataWriteGuid is the child's linkage). */
async function openVhdx(file: DiskFile, image: VhdxImage, path: string, real: string, chain: ChainLink[]): Promise<VhdxDisk> {
  if (!image.params.hasParent) return new VhdxDisk(file, image);
  const found = await resolveVhdxParent(path, image.params.parentLocator!);
  const parent = await openLink(found.path, true, 'vhdx', [...chain, { real, shown: path }]);
  try {
    const p = parent as VhdxDisk;
    const linkage = image.params.parentLocator!.linkage;
    if (!linkage.includes(p.dataWriteGuid)) {
      throw new VhdsyncError(
        'PARENT_MISMATCH',
        `${path}: parent ${found.path} has DataWriteGuid ${p.dataWriteGuid} but the child expects ${linkage.join(' or ')}; the parent was written to or replaced`,
      );
    }
    if (p.virtualSize !== image.params.virtualSize || p.sectorSize !== image.params.logicalSectorSize) {
      throw new VhdsyncError(
        'PARENT_MISMATCH',
        `${path}: parent ${found.path} is ${p.virtualSize} bytes in ${p.sectorSize}-byte sectors, the child ${image.params.virtualSize} in ${image.params.logicalSectorSize}; the chain does not belong together`,
      );
    }
    return new VhdxDisk(file, image, { parent });
  } catch (e) {
    await parent.close().catch(() => undefined);
    throw e;
  }
}

async function buildVhd(file: DiskFile, meta: VhdMetadata, readOnly: boolean, parent?: Disk): Promise<VhdDisk> {
  if (meta.footer.diskType === DISK_TYPE_FIXED) return new VhdFixedDisk(file, meta);
  const disk = new VhdDynamicDisk(file, meta, { parent });
  if (!readOnly) await disk.repairFooters(meta.footerCopyValid);
  return disk;
}

function checkParent(childPath: string, meta: VhdMetadata, parent: Disk, parentPath: string, rawParent: boolean): void {
  const header = meta.dynamic!.header;
  if (!rawParent) {
    const p = parent as Partial<VhdDisk>;
    if (!p.footer) {
      throw new VhdsyncError('PARENT_MISMATCH', `${childPath}: parent ${parentPath} is not a VHD`);
    }
    if (!bytesEqual(p.footer.uniqueId, header.parentUniqueId)) {
      throw new VhdsyncError(
        'PARENT_MISMATCH',
        `${childPath}: parent ${parentPath} has unique id ${uuidText(p.footer.uniqueId)} but the child expects ${uuidText(header.parentUniqueId)}; the parent was replaced`,
      );
    }
    if (p.footer.timestamp !== header.parentTimestamp) {
      // Virtual PC compares timestamps too, but a copied or restored parent changes them (simh#352): warn only.
      meta.warnings.push(`parent ${parentPath} timestamp differs from the one recorded in the child`);
    }
  }
  if (parent.virtualSize !== meta.footer.currentSize) {
    const which = parent.virtualSize > meta.footer.currentSize ? 'larger' : 'smaller';
    throw new VhdsyncError(
      'PARENT_MISMATCH',
      `${childPath}: parent ${parentPath} is ${parent.virtualSize} bytes, ${which} than the child's ${meta.footer.currentSize}; the chain does not belong together`,
    );
  }
}
