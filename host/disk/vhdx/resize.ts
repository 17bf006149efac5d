/**
 * Growing a fixed or dynamic VHDX in place, as Hyper-V's Resize-VHD does: the new BAT entries and then
 * the metadata's Virtual Disk Size ([MS-VHDX] 2.6.2.2) go through the log ([MS-VHDX] 2.3), so a crash
 * leaves the old metadata or a log that every VHDX reader replays (our open, Hyper-V, `qemu-img check
 * -r all`). New space is made durable before any metadata points at it: a fixed VHDX gets its new
 * blocks (sparse, reading as zeros) at the end of the file first; a dynamic one's new blocks are not
 * present (zeros). The BAT region is not moved: when it cannot hold the larger table, the resize is refused.
 */
import { VhdsyncError } from '../../errors.js';
import { MiB, formatSize } from '../../units.js';
import type { ImageFile } from '../file-io.js';
import {
  ENTRY_SIZE, PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, batLayout, entryOffset, entryState, hasData, payloadIndex, putEntry,
} from './bat.js';
import { headerWriterFor, logTarget, type VhdxImage } from './image.js';
import { le64, putLe64, randomGuid, roundUp } from './le.js';
import { commitThroughLog } from './log.js';
import { MAX_VIRTUAL_SIZE, METADATA_TABLE_SIZE, parseMetadataTable } from './metadata.js';
import { zeroRange, type StepHook } from '../vhd/resize.js';

const PAGE = 4096;

export function checkVhdxSize(path: string, size: number, sector: number): void {
  if (size <= 0) throw new VhdsyncError('BAD_SIZE', `${path}: size must be a positive number of bytes`);
  if (size % sector !== 0) throw new VhdsyncError('BAD_SIZE', `${path}: size ${size} is not a multiple of the ${sector}-byte logical sector`);
  if (size > MAX_VIRTUAL_SIZE) throw new VhdsyncError('BAD_SIZE', `${path}: size ${formatSize(size)} exceeds the VHDX limit of 64 TiB`);
}

/** Grow the (non-differencing) VHDX `image`, opened writable on `file` (its log already replayed). */
export async function growVhdx(file: ImageFile, image: VhdxImage, size: number, step: StepHook): Promise<{ notes: string[] }> {
  const path = file.path;
  const p = image.params;
  const old = p.virtualSize;
  const oldLayout = image.layout;
  const layout = batLayout({ blockSize: p.blockSize, logicalSectorSize: p.logicalSectorSize, virtualSize: size, differencing: false });
  const region = image.regions.bat;
  if (layout.entryCount * ENTRY_SIZE > region.length) {
    throw new VhdsyncError(
      'UNSUPPORTED',
      `${path}: the BAT region (${formatSize(region.length)}) holds ${region.length / ENTRY_SIZE} entries and ${formatSize(size)} in ${formatSize(p.blockSize)} blocks needs ${layout.entryCount}; vhdsync does not move the BAT region (convert to a new VHDX of the larger size instead)`,
    );
  }
  const where = await metadataItems(file, image);
  const sizeItem = where.virtualDiskSize!;
  const sizeAt = image.regions.metadata.offset + sizeItem.offset;
  let fileSize = image.fileSize;

  // The table as it will be: the old entries, then the new ones.
  const firstNew = oldLayout.entryCount;
  const pageFrom = Math.floor((firstNew * ENTRY_SIZE) / PAGE) * PAGE;
  const pageTo = roundUp(layout.entryCount * ENTRY_SIZE, PAGE);
  const table = new Uint8Array(Math.max(0, pageTo - pageFrom));
  if (table.length > 0) await file.readAt(table.subarray(0, Math.min(table.length, fileSize - region.offset - pageFrom)), region.offset + pageFrom, 'the BAT');
  const local = (i: number) => i - pageFrom / ENTRY_SIZE;

  // Where the stored blocks end (new fixed blocks go after them, 1 MiB aligned, as the writer allocates).
  let end = fileSize;
  for (let b = 0; b < oldLayout.blockCount; b++) {
    const i = payloadIndex(oldLayout, b);
    if (hasData(entryState(image.bat, i))) end = Math.max(end, entryOffset(image.bat, i) + p.blockSize);
  }
  let nextFree = roundUp(end, MiB);

  // A last block cut short by the old size becomes whole, its new part zeros (before the size shows it).
  const last = oldLayout.blockCount - 1;
  const lastEntry = payloadIndex(oldLayout, last);
  if (old % p.blockSize !== 0 && hasData(entryState(image.bat, lastEntry))) {
    const start = entryOffset(image.bat, lastEntry);
    const blockEnd = start + p.blockSize;
    for (let b = 0; b < last; b++) {
      const i = payloadIndex(oldLayout, b);
      const o = entryOffset(image.bat, i);
      if (hasData(entryState(image.bat, i)) && o < blockEnd && start < o + p.blockSize) {
        throw new VhdsyncError('UNSUPPORTED', `${path}: the last block (at ${formatSize(start)}) cannot grow to a whole block: block ${b} follows it; convert to a new VHDX of the larger size instead`);
      }
    }
    for (const r of [image.regions.bat, image.regions.metadata, image.log]) {
      if (r.offset < blockEnd && start < r.offset + r.length) {
        throw new VhdsyncError('UNSUPPORTED', `${path}: the last block (at ${formatSize(start)}) cannot grow to a whole block: VHDX metadata follows it`);
      }
    }
    await zeroRange(file, start + (old - last * p.blockSize), blockEnd);
    if (blockEnd > fileSize) await file.truncate(blockEnd);
    fileSize = Math.max(fileSize, blockEnd);
    await file.sync();
    await step('last block completed');
  }

  // New entries: not present (zeros) in a dynamic disk; a fixed one stores every block.
  const headers = headerWriterFor(file, image);
  await headers.updateBoth({ dataWriteGuid: randomGuid() }); // [MS-VHDX] 2.2.2: the disk's content changes
  await step('headers');
  const fresh: number[] = [];
  for (let b = 0; b < layout.blockCount; b++) {
    const i = payloadIndex(layout, b);
    if (i >= firstNew) fresh.push(b);
  }
  for (let i = firstNew; i < layout.entryCount; i++) putEntry(table, local(i), PAYLOAD_NOT_PRESENT, 0);
  if (p.leaveBlocksAllocated && fresh.length > 0) {
    const base = nextFree;
    fresh.forEach((b, k) => putEntry(table, local(payloadIndex(layout, b)), PAYLOAD_FULLY_PRESENT, base + k * p.blockSize));
    nextFree = base + fresh.length * p.blockSize;
    if (nextFree / MiB >= 2 ** 44) throw new VhdsyncError('BAD_SIZE', `${path}: the file would grow past what a VHDX BAT can address`);
    await file.truncate(nextFree); // sparse: the new blocks read as zeros
    fileSize = nextFree;
  }
  // Sector bitmap entries among the new ones stay NOT_PRESENT (0): a disk without a parent has none.
  await file.sync();
  await step('new space');

  // The metadata page holding the size, last: the BAT pages before it may take several log cycles.
  const pageAt = Math.floor(sizeAt / PAGE) * PAGE;
  const metaPage = new Uint8Array(PAGE * (sizeAt + 8 > pageAt + PAGE ? 2 : 1));
  await file.readAt(metaPage, pageAt, 'the metadata');
  if (le64(metaPage, sizeAt - pageAt) !== old) {
    throw new VhdsyncError('INTERNAL', `${path}: the metadata's virtual size is not the one read at open; nothing was changed in the metadata`);
  }
  putLe64(metaPage, sizeAt - pageAt, size);
  const pages: Array<{ offset: number; data: Uint8Array }> = [];
  for (let k = 0; k < table.length; k += PAGE) pages.push({ offset: region.offset + pageFrom + k, data: table.slice(k, k + PAGE) });
  for (let k = 0; k < metaPage.length; k += PAGE) pages.push({ offset: pageAt + k, data: metaPage.slice(k, k + PAGE) });
  await commitThroughLog({ ...logTarget(file, image.log, headers, () => fileSize), onStep: step }, pages);
  return { notes: [] };
}

async function metadataItems(file: ImageFile, image: VhdxImage) {
  const mt = new Uint8Array(METADATA_TABLE_SIZE);
  await file.readAt(mt, image.regions.metadata.offset, 'the metadata table');
  return parseMetadataTable(mt, image.regions.metadata.length, file.path);
}
