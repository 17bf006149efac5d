/**
 * Creating VHDX images: fixed, dynamic, and differencing over a VHDX parent. The layout is the one qemu
 * and Hyper-V use: header section (identifier, two headers, two region tables) in the first MiB, then the
 * log (1 MiB by default), the BAT and the metadata region, then data. A fixed disk's blocks are all
 * FULLY_PRESENT and laid out in order (the file is sparse until written). A new image is written under a
 * temporary name, made durable, then given its name, so a crash never leaves a half-made image.
 */
import { dirname, relative, resolve } from 'node:path';
import { VhdsyncError } from '../../errors.js';
import { writeNewFile } from '../../fsutil.js';
import { MiB, formatSize } from '../../units.js';
import { ENTRY_SIZE, PAYLOAD_FULLY_PRESENT, batLayout, payloadIndex, putEntry } from './bat.js';
import { VhdxDisk } from './disk.js';
import { HEADER_OFFSETS, HEADER_SECTION_SIZE, VHDX_CREATOR, buildFileIdentifier, buildHeader } from './header.js';
import { isPowerOfTwo, randomGuid, roundUp } from './le.js';
import {
  MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, MIN_BLOCK_SIZE, buildMetadataRegion, buildParentLocator, linkageText, type VhdxParams,
} from './metadata.js';
import { REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, buildRegionTable } from './region.js';
import { openDisk } from '../open.js';

/** Hyper-V's default block size for a new dynamic VHDX. */
export const DEFAULT_VHDX_BLOCK_SIZE = 32 * MiB;
const DEFAULT_LOG_SIZE = 1 * MiB;
const METADATA_REGION_SIZE = 1 * MiB;

export interface CreateVhdxOptions {
  /** Virtual size in bytes: a multiple of the logical sector size, at most 64 TiB. */
  size: number;
  type: 'fixed' | 'dynamic';
  /** A power of two from 1 MiB to 256 MiB (default 32 MiB). */
  blockSize?: number;
  /** 512 (default) or 4096. */
  logicalSectorSize?: number;
  /** 512 or 4096 (default: the logical sector size). */
  physicalSectorSize?: number;
  /** Log length, a multiple of 1 MiB (default 1 MiB). */
  logSize?: number;
  overwrite?: boolean;
}

export interface CreateVhdxDifferencingOptions {
  /** Default: the parent's block size. */
  blockSize?: number;
  overwrite?: boolean;
}

/** Create an empty fixed or dynamic VHDX. */
export async function createVhdx(path: string, options: CreateVhdxOptions): Promise<void> {
  const logical = options.logicalSectorSize ?? 512;
  const physical = options.physicalSectorSize ?? logical;
  for (const [what, v] of [['logical', logical], ['physical', physical]] as const) {
    if (v !== 512 && v !== 4096) throw new VhdsyncError('USAGE', `${path}: ${what} sector size must be 512 or 4096 (got ${v})`);
  }
  if (options.type !== 'fixed' && options.type !== 'dynamic') {
    throw new VhdsyncError('USAGE', `${path}: unknown VHDX type '${String(options.type)}' (use fixed or dynamic)`);
  }
  checkSize(path, options.size, logical);
  const blockSize = options.blockSize ?? DEFAULT_VHDX_BLOCK_SIZE;
  checkBlockSize(path, blockSize);
  await writeImage(path, options.overwrite ?? false, {
    params: {
      blockSize,
      leaveBlocksAllocated: options.type === 'fixed',
      hasParent: false,
      virtualSize: options.size,
      page83: randomGuid(),
      logicalSectorSize: logical,
      physicalSectorSize: physical,
    },
    logSize: options.logSize ?? DEFAULT_LOG_SIZE,
  });
}

/**
 * Create a differencing VHDX over the VHDX at `parentPath`: same virtual size, sector sizes and virtual
 * disk id; `parent_linkage` is the parent's current DataWriteGuid, so writing the parent afterwards
 * breaks the chain (as in Hyper-V).
 */
export async function createVhdxDifferencing(path: string, parentPath: string, options: CreateVhdxDifferencingOptions = {}): Promise<void> {
  if (resolve(path) === resolve(parentPath)) throw new VhdsyncError('USAGE', `${path}: a differencing disk cannot be its own parent`);
  const parent = await openDisk(parentPath, { readOnly: true });
  let params: VhdxParams;
  let linkage: string;
  try {
    if (!(parent instanceof VhdxDisk)) {
      throw new VhdsyncError('UNSUPPORTED', `${parentPath}: a differencing VHDX needs a VHDX parent, and this is a ${parent.format} image`);
    }
    params = parent.params;
    linkage = linkageText(parent.dataWriteGuidBytes);
  } finally {
    await parent.close();
  }
  const blockSize = options.blockSize ?? params.blockSize;
  checkBlockSize(path, blockSize);
  const rel = relative(dirname(resolve(path)), resolve(parentPath)).replace(/\//g, '\\');
  const locator = buildParentLocator([
    ['parent_linkage', linkage],
    ['relative_path', rel.startsWith('..') ? rel : `.\\${rel}`],
    ['absolute_win32_path', resolve(parentPath)],
  ]);
  await writeImage(path, options.overwrite ?? false, {
    params: { ...params, blockSize, leaveBlocksAllocated: false, hasParent: true, parentLocator: undefined },
    locator,
    logSize: DEFAULT_LOG_SIZE,
  });
}

interface ImageSpec {
  params: VhdxParams;
  locator?: Uint8Array;
  logSize: number;
}

async function writeImage(path: string, overwrite: boolean, spec: ImageSpec): Promise<void> {
  const p = spec.params;
  if (spec.logSize % MiB !== 0 || spec.logSize < MiB) throw new VhdsyncError('USAGE', `${path}: log size must be a whole number of MiB`);
  const layout = batLayout({ blockSize: p.blockSize, logicalSectorSize: p.logicalSectorSize, virtualSize: p.virtualSize, differencing: p.hasParent });
  const logOffset = HEADER_SECTION_SIZE;
  const batOffset = logOffset + spec.logSize;
  const batLength = roundUp(layout.entryCount * ENTRY_SIZE, MiB);
  const metaOffset = batOffset + batLength;
  const dataOffset = metaOffset + METADATA_REGION_SIZE;
  const fileSize = p.leaveBlocksAllocated ? dataOffset + layout.blockCount * p.blockSize : dataOffset;

  const fileWriteGuid = randomGuid();
  const dataWriteGuid = randomGuid();
  const header = (seq: bigint) =>
    buildHeader({
      sequenceNumber: seq,
      fileWriteGuid,
      dataWriteGuid,
      logGuid: new Uint8Array(16),
      logVersion: 0,
      version: 1,
      logLength: spec.logSize,
      logOffset,
    });
  const regions = buildRegionTable({ bat: { offset: batOffset, length: batLength }, metadata: { offset: metaOffset, length: METADATA_REGION_SIZE } });
  const metadata = buildMetadataRegion(p, spec.locator);

  await writeNewFile(path, overwrite, async (fh) => {
    await fh.truncate(fileSize); // sparse: the log, an empty BAT and unwritten blocks read as zeros
    const put = async (b: Uint8Array, at: number) => {
      await fh.write(b, 0, b.length, at);
    };
    await put(buildFileIdentifier(VHDX_CREATOR), 0);
    await put(header(1n), HEADER_OFFSETS[0]);
    await put(header(2n), HEADER_OFFSETS[1]);
    await put(regions, REGION_TABLE1_OFFSET);
    await put(regions, REGION_TABLE2_OFFSET);
    await put(metadata, metaOffset);
    if (p.leaveBlocksAllocated) {
      // Written in slices so that a large fixed disk's BAT never sits in memory at once.
      const perSlice = 65536;
      for (let first = 0; first < layout.blockCount; first += perSlice) {
        const last = Math.min(layout.blockCount, first + perSlice) - 1;
        const from = payloadIndex(layout, first);
        const slice = new Uint8Array((payloadIndex(layout, last) - from + 1) * ENTRY_SIZE);
        for (let b = first; b <= last; b++) putEntry(slice, payloadIndex(layout, b) - from, PAYLOAD_FULLY_PRESENT, dataOffset + b * p.blockSize);
        await put(slice, batOffset + from * ENTRY_SIZE);
      }
    }
  });
}

function checkSize(path: string, size: number, sector: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw new VhdsyncError('BAD_SIZE', `${path}: size must be a positive number of bytes`);
  if (size % sector !== 0) throw new VhdsyncError('BAD_SIZE', `${path}: size ${size} is not a multiple of the ${sector}-byte logical sector`);
  if (size > MAX_VIRTUAL_SIZE) throw new VhdsyncError('BAD_SIZE', `${path}: size ${formatSize(size)} exceeds the VHDX limit of 64 TiB`);
}

function checkBlockSize(path: string, blockSize: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new VhdsyncError('BAD_BLOCK_SIZE', `${path}: VHDX block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`);
  }
}


