/**
 * Creating VHDs: fixed and dynamic of any size up to 2040 GiB, and differencing over a parent (parent
 * unique id, timestamp, unicode name, W2ru and W2ku locators). A new image is written to a temporary
 * file, made durable, and only then given its name, so a crash never leaves a half-made image under it.
 */
import { randomUUID } from 'node:crypto';
import { basename, dirname, relative, resolve } from 'node:path';
import { VhdsyncError } from '../../errors.js';
import { writeNewFile } from '../../fsutil.js';
import { formatSize } from '../../units.js';
import { SECTOR, roundUp } from './be.js';
import { openDisk } from '../open.js';
import { MAX_BLOCKS } from './image.js';
import { batBytesFor } from './bat.js';
import {
  CREATOR_APP, CREATOR_APP_RAW_PARENT, DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, FOOTER_SIZE, VHD_MAX_SIZE,
  buildFooter, type Geometry, type VhdFooter,
} from './footer.js';
import {
  DEFAULT_BLOCK_SIZE, HEADER_SIZE, LOCATOR_W2KU, LOCATOR_W2RU, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, buildDynamicHeader, encodeUtf16,
  isPowerOfTwo, type DynamicHeader,
} from './header.js';
import { idFromHex } from '../../bytes.js';

export interface CreateVhdOptions {
  /** Virtual size in bytes: a multiple of 512, at most 2040 GiB. */
  size: number;
  type: 'fixed' | 'dynamic';
  /** Dynamic only: a power of two from 512 bytes to 256 MiB (default 2 MiB). */
  blockSize?: number;
  /** Replace an existing file (default: refuse with EXISTS). */
  overwrite?: boolean;
}

export interface CreateDifferencingOptions {
  /** Default: the parent's block size when it is a dynamic VHD, else 2 MiB. */
  blockSize?: number;
  overwrite?: boolean;
}

const HEADER_OFFSET = FOOTER_SIZE;
const BAT_OFFSET = HEADER_OFFSET + HEADER_SIZE;

/** Create an empty fixed or dynamic VHD (creator `win `, so qemu and Hyper-V both read current_size). */
export async function createVhd(path: string, options: CreateVhdOptions): Promise<void> {
  const { size, type } = options;
  checkSize(path, size);
  const uniqueId = idFromHex(randomUUID());
  if (type === 'fixed') {
    const footer = buildFooter({ diskType: DISK_TYPE_FIXED, currentSize: size, uniqueId });
    await writeNewFile(path, options.overwrite ?? false, async (fh) => {
      await fh.truncate(size); // sparse: the data area reads as zeros
      await fh.write(footer, 0, FOOTER_SIZE, size);
    });
    return;
  }
  if (type !== 'dynamic') throw new VhdsyncError('USAGE', `${path}: unknown VHD type '${String(type)}' (use fixed or dynamic)`);
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(path, blockSize, size);
  const image = dynamicImage({ diskType: DISK_TYPE_DYNAMIC, size, blockSize, uniqueId });
  await writeNewFile(path, options.overwrite ?? false, async (fh) => {
    await fh.write(image, 0, image.length, 0);
  });
}

/**
 * Create a differencing VHD over `parentPath`, which may be a VHD or a raw image. Over a raw image the
 * child is a vhdsync extension: creator application `vhds`, parent unique id all zeros, and locators
 * naming the raw file; `openDisk` accepts a raw parent only for such a child, checking its size.
 */
export async function createDifferencing(path: string, parentPath: string, options: CreateDifferencingOptions = {}): Promise<void> {
  if (resolve(path) === resolve(parentPath)) {
    throw new VhdsyncError('USAGE', `${path}: a differencing disk cannot be its own parent`);
  }
  const parent = await openDisk(parentPath, { readOnly: true });
  let parentFooter: VhdFooter | undefined;
  let parentHeader: DynamicHeader | undefined;
  try {
    parentFooter = (parent as Partial<{ footer: VhdFooter }>).footer;
    parentHeader = (parent as Partial<{ header: DynamicHeader }>).header;
    if (parent.format !== 'vhd' && parent.format !== 'raw') {
      throw new VhdsyncError('UNSUPPORTED', `${parentPath}: a ${parent.format} parent is not supported for a VHD differencing disk`);
    }
    checkSize(parentPath, parent.virtualSize);
  } finally {
    await parent.close();
  }
  const blockSize = options.blockSize ?? parentHeader?.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(path, blockSize, parent.virtualSize);
  const image = dynamicImage({
    diskType: DISK_TYPE_DIFFERENCING,
    size: parent.virtualSize,
    blockSize,
    uniqueId: idFromHex(randomUUID()),
    geometry: parentFooter?.geometry,
    creatorApp: parentFooter ? CREATOR_APP : CREATOR_APP_RAW_PARENT,
    parent: {
      uniqueId: parentFooter?.uniqueId ?? new Uint8Array(16),
      timestamp: parentFooter?.timestamp ?? 0,
      name: basename(parentPath),
      relative: windowsRelative(relative(dirname(resolve(path)), resolve(parentPath))),
      absolute: resolve(parentPath),
    },
  });
  await writeNewFile(path, options.overwrite ?? false, async (fh) => {
    await fh.write(image, 0, image.length, 0);
  });
}

interface DynamicImageSpec {
  diskType: typeof DISK_TYPE_DYNAMIC | typeof DISK_TYPE_DIFFERENCING;
  size: number;
  blockSize: number;
  uniqueId: Uint8Array;
  geometry?: Geometry;
  creatorApp?: string;
  parent?: { uniqueId: Uint8Array; timestamp: number; name: string; relative: string; absolute: string };
}

/** The bytes of an empty dynamic/differencing VHD: footer copy, header, BAT, locator data, footer. */
export function dynamicImage(spec: DynamicImageSpec): Uint8Array {
  const entries = Math.ceil(spec.size / spec.blockSize);
  const batBytes = batBytesFor(entries);
  let end = BAT_OFFSET + batBytes;
  const locators: Array<{ code: number; dataSpace: number; dataLength: number; dataOffset: number; data: Uint8Array }> = [];
  if (spec.parent) {
    for (const [code, text] of [[LOCATOR_W2RU, spec.parent.relative], [LOCATOR_W2KU, spec.parent.absolute]] as const) {
      const data = encodeUtf16(text, true); // locator data is UTF-16LE (vhd-formats §1.6)
      const space = roundUp(Math.max(data.length, 1), SECTOR);
      // Data space in bytes, as Virtual PC and Hyper-V write it; readers use only offset and length.
      locators.push({ code, dataSpace: space, dataLength: data.length, dataOffset: end, data });
      end += space;
    }
  }
  const footer = buildFooter({
    diskType: spec.diskType,
    currentSize: spec.size,
    dataOffset: HEADER_OFFSET,
    uniqueId: spec.uniqueId,
    geometry: spec.geometry,
    creatorApp: spec.creatorApp,
  });
  const header = buildDynamicHeader({
    tableOffset: BAT_OFFSET,
    maxTableEntries: entries,
    blockSize: spec.blockSize,
    parentUniqueId: spec.parent?.uniqueId,
    parentTimestamp: spec.parent?.timestamp,
    parentUnicodeName: spec.parent?.name,
    locators,
  });
  const image = new Uint8Array(end + FOOTER_SIZE);
  image.set(footer, 0);
  image.set(header, HEADER_OFFSET);
  image.fill(0xff, BAT_OFFSET, BAT_OFFSET + entries * 4);
  for (const l of locators) image.set(l.data, l.dataOffset);
  image.set(footer, end);
  return image;
}

function checkSize(path: string, size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw new VhdsyncError('BAD_SIZE', `${path}: size must be a positive number of bytes`);
  if (size % SECTOR !== 0) throw new VhdsyncError('BAD_SIZE', `${path}: size ${size} is not a multiple of 512 bytes`);
  if (size > VHD_MAX_SIZE) {
    throw new VhdsyncError('BAD_SIZE', `${path}: size ${formatSize(size)} exceeds the VHD limit of 2040 GiB; use a raw image (VHDX later)`);
  }
}

function checkBlockSize(path: string, blockSize: number, size: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new VhdsyncError('BAD_BLOCK_SIZE', `${path}: block size ${blockSize} is not a power of two between 512 bytes and 256 MiB`);
  }
  if (Math.ceil(size / blockSize) > MAX_BLOCKS) {
    throw new VhdsyncError('BAD_BLOCK_SIZE', `${path}: block size ${formatSize(blockSize)} is too small for ${formatSize(size)} (at most ${MAX_BLOCKS} blocks)`);
  }
}

/** `../x/p.vhd` → `..\x\p.vhd`; a name in the same directory becomes `.\p.vhd`, as Hyper-V writes it. */
function windowsRelative(rel: string): string {
  const w = rel.replace(/\//g, '\\');
  return w.startsWith('..') ? w : `.\\${w}`;
}
