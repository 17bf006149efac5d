/**
 * Growing a fixed or dynamic VHD in place (and shrinking a fixed one), so that a SIGKILL or a power
 * failure at any point leaves an image that opens at the old size or at the new one, with the old
 * content intact and the grown part reading as zeros. No peer does this for VHD (`qemu-img resize`
 * refuses vpc); vhd-lib grows a BAT by moving the first block to the end (`_freeFirstBlockSpace`), which
 * is what we do too, one block at a time, each move made durable before the BAT points at it.
 *
 * Why these orders:
 *  - Fixed: the footer must always be the last 512 bytes, and a fixed VHD whose file is longer than
 *    size + 512 still opens at the footer's size. So the old footer is first copied to the new end (the
 *    image still says "old size"), then the old footer's sector is zeroed, and only then does the footer at
 *    the new end get the new size: no state reads the old footer as data.
 *  - Dynamic: the footer and its copy at offset 0 must agree, and cannot be written at once. The reader
 *    falls back to the copy when the trailing footer is damaged (an interrupted block allocation), so the
 *    trailing one is damaged on purpose first, then the copy gets the new size, then the trailing one.
 *    Everything the new size needs (BAT entries, the last block's tail zeroed) is on disk before.
 */
import { VhdsyncError } from '../../errors.js';
import { formatSize } from '../../units.js';
import { SECTOR, ascii, putAscii, putU16, putU32, putU64, roundUp } from './be.js';
import type { ImageFile } from '../file-io.js';
import { BAT_UNUSED, MAX_BLOCK_OFFSET, batBytesFor, putBatEntry } from './bat.js';
import { CREATOR_APP, FOOTER_SIZE, VHD_MAX_SIZE, chsGeometry, footerChecksum, geometrySize } from './footer.js';
import { HEADER_SIZE, headerChecksum } from './header.js';
import { MAX_BLOCKS, type VhdMetadata } from './image.js';

/** Called between two durable steps (tests make a crash land there). */
export type StepHook = (step: string) => Promise<void> | void;

export interface VhdResizeOutcome {
  /** Things the user should know (creator changed, blocks moved), one line each. */
  notes: string[];
}

/** Copy in slices of this many bytes (moving a block, zeroing a tail). */
const SLICE = 1 << 20;

/** Creators whose images qemu below 10.0 sizes by CHS geometry (vhd-formats §1.5). */
const CHS_CREATORS = ['vpc ', 'qemu'];

/** The footer bytes for a new virtual size: current size and geometry change; original size, id and timestamp stay. */
export function resizedFooter(footer: Uint8Array, size: number, notes: string[]): Uint8Array {
  const b = footer.slice(0, FOOTER_SIZE);
  const g = chsGeometry(size);
  putU64(b, 48, size);
  putU16(b, 56, g.cylinders);
  b[58] = g.heads;
  b[59] = g.sectorsPerTrack;
  const creator = ascii(b, 28, 4);
  if (CHS_CREATORS.includes(creator) && geometrySize(g) !== size) {
    // qemu < 10 would read this image at its (smaller) CHS size: say "current size" the way Hyper-V does.
    putAscii(b, 28, CREATOR_APP);
    notes.push(`creator application '${creator.trim()}' changed to '${CREATOR_APP.trim()}': ${size} bytes is not a CHS size, and qemu reads a '${creator.trim()}' image by CHS`);
  }
  putU32(b, 64, footerChecksum(b));
  return b;
}

export function checkVhdSize(path: string, size: number): void {
  if (size % SECTOR !== 0) throw new VhdsyncError('BAD_SIZE', `${path}: size ${size} is not a multiple of 512 bytes (a VHD's sector)`);
  if (size <= 0) throw new VhdsyncError('BAD_SIZE', `${path}: size must be a positive number of bytes`);
  if (size > VHD_MAX_SIZE) throw new VhdsyncError('BAD_SIZE', `${path}: size ${formatSize(size)} exceeds the VHD limit of 2040 GiB; use a VHDX`);
}

/** Resize a fixed VHD whose metadata is `meta` (its trailing footer valid). Shrinking drops the data past the new end. */
export async function resizeFixedVhd(file: ImageFile, meta: VhdMetadata, size: number, step: StepHook): Promise<VhdResizeOutcome> {
  const notes: string[] = [];
  const old = meta.footer.currentSize;
  const tail = meta.fileSize - FOOTER_SIZE;
  const newFooter = resizedFooter(meta.footerBytes, size, notes);
  if (size < old) {
    // The data past the new end is given up: a crash before the truncate leaves the old size with the
    // footer's 512 bytes over data the shrink discards.
    await file.writeAt(newFooter, size);
    await file.sync();
    await step('footer');
    await file.truncate(size + FOOTER_SIZE);
    await file.sync();
    return { notes };
  }
  // 1. The old footer (old size) at the new end: the file is longer, the image still the old one.
  if (tail !== size) {
    await file.writeAt(meta.footerBytes, size);
    if (size + FOOTER_SIZE < meta.fileSize) await file.truncate(size + FOOTER_SIZE);
    await file.sync();
    await step('old footer at the new end');
  }
  // 2. What becomes visible reads as zeros (the old footer's sector, and anything a tool left there).
  await zeroRange(file, old, Math.min(size, tail + FOOTER_SIZE));
  await file.sync();
  await step('grown area zeroed');
  // 3. The new size.
  await file.writeAt(newFooter, size);
  await file.sync();
  return { notes };
}

/** Grow a dynamic VHD whose metadata is `meta` (both footers valid and equal). */
export async function growDynamicVhd(file: ImageFile, meta: VhdMetadata, size: number, step: StepHook): Promise<VhdResizeOutcome> {
  const dyn = meta.dynamic!;
  const path = file.path;
  const notes: string[] = [];
  const old = meta.footer.currentSize;
  const { header, bitmapBytes } = dyn;
  const blockSize = header.blockSize;
  const oldCount = dyn.blockCount;
  const newCount = Math.ceil(size / blockSize);
  if (newCount > MAX_BLOCKS) {
    throw new VhdsyncError('BAD_SIZE', `${path}: ${formatSize(size)} in ${formatSize(blockSize)} blocks is ${newCount} blocks, more than vhdsync handles (${MAX_BLOCKS})`);
  }
  const full = bitmapBytes + blockSize;
  const bat = dyn.bat;
  const batRaw = dyn.batRaw;
  const oldFooter = meta.footerBytes;
  // Where the trailing footer is now, and where the next block would go.
  let footerAt = meta.fileSize - FOOTER_SIZE;
  let nextFree = dyn.nextFree;

  const locators = header.locators.filter((l) => l.dataLength > 0).map((l) => ({ start: l.dataOffset, end: l.dataOffset + Math.max(l.dataLength, 1), what: `${l.codeName} parent locator` }));
  const fixedParts = [
    { start: 0, end: FOOTER_SIZE, what: 'footer copy' },
    { start: dyn.headerOffset, end: dyn.headerOffset + HEADER_SIZE, what: 'dynamic header' },
    ...locators,
  ];
  const overlaps = (a0: number, a1: number, b0: number, b1: number) => a0 < b1 && b0 < a1;

  // 1. A last block cut short by the old size becomes a whole block, its new part zeros.
  const last = oldCount - 1;
  if (old % blockSize !== 0 && bat[last] !== BAT_UNUSED) {
    const start = bat[last] * SECTOR;
    const end = start + full;
    for (const p of fixedParts) {
      if (overlaps(start, end, p.start, p.end)) throw notRoom(path, `the last block (byte ${start}) would grow over the ${p.what}`);
    }
    if (overlaps(start, end, header.tableOffset, header.tableOffset + batBytesFor(Math.max(header.maxTableEntries, newCount)))) {
      throw notRoom(path, `the last block (byte ${start}) would grow over the BAT`);
    }
    for (let b = 0; b < oldCount; b++) {
      if (b !== last && bat[b] !== BAT_UNUSED && overlaps(start, end, bat[b] * SECTOR, bat[b] * SECTOR + full)) {
        throw notRoom(path, `the last block (byte ${start}) would grow over block ${b}`);
      }
    }
    const visibleEnd = start + bitmapBytes + (old - last * blockSize);
    // The trailing footer may sit inside the part to zero; it is then damaged and the copy at 0 rules
    // until the footer is written again at the block's new end.
    await zeroRange(file, visibleEnd, end);
    if (footerAt < end) {
      footerAt = Math.max(footerAt, end);
      await file.writeAt(oldFooter, footerAt);
    }
    await file.sync();
    nextFree = Math.max(nextFree, end);
    await step('last block completed');
  }

  // 2. Room for the BAT: the blocks in its way move to the end of the file, one at a time.
  if (newCount > header.maxTableEntries) {
    const tableEnd = header.tableOffset + batBytesFor(newCount);
    for (const p of fixedParts) {
      if (overlaps(header.tableOffset, tableEnd, p.start, p.end)) {
        throw notRoom(path, `the BAT at byte ${header.tableOffset} cannot grow to ${newCount} entries: the ${p.what} follows it`);
      }
    }
    const inWay: number[] = [];
    for (let b = 0; b < oldCount; b++) {
      if (bat[b] !== BAT_UNUSED && overlaps(header.tableOffset, tableEnd, bat[b] * SECTOR, bat[b] * SECTOR + full)) inWay.push(b);
    }
    inWay.sort((x, y) => bat[x] - bat[y]);
    nextFree = Math.max(nextFree, roundUp(tableEnd, SECTOR), footerAt);
    for (const b of inWay) {
      const from = bat[b] * SECTOR;
      const to = nextFree;
      if (to > MAX_BLOCK_OFFSET) throw new VhdsyncError('BAD_SIZE', `${path}: moving block ${b} would put it past the 2 TiB a VHD BAT can address`);
      // The copy lands on the trailing footer (the copy at 0 rules meanwhile), then a footer follows it;
      // only once both are durable does the BAT entry point at the new place.
      await copyRange(file, from, to, full);
      footerAt = to + full;
      await file.writeAt(oldFooter, footerAt);
      await file.sync();
      await step(`block ${b} copied`);
      const sector = to / SECTOR;
      bat[b] = sector;
      putBatEntry(batRaw, b, sector);
      const s = Math.floor((b * 4) / SECTOR) * SECTOR;
      await file.writeAt(batRaw.subarray(s, Math.min(s + SECTOR, batRaw.length)), header.tableOffset + s);
      await file.sync();
      nextFree = footerAt;
      await step(`block ${b} moved`);
    }
    notes.push(...(inWay.length > 0 ? [`moved ${inWay.length} block${inWay.length === 1 ? '' : 's'} to the end of the file to make room for the larger BAT`] : []));
  }
  // New entries unused, written whether or not the table grows: nothing left there may point anywhere.
  if (newCount > oldCount) {
    const from = header.tableOffset + oldCount * 4;
    const to = header.tableOffset + (newCount > header.maxTableEntries ? batBytesFor(newCount) : newCount * 4);
    for (let at = from; at < to; at += SLICE) await file.writeAt(new Uint8Array(Math.min(SLICE, to - at)).fill(0xff), at);
    if (to > footerAt) {
      // The table grew over the trailing footer (an image with no block after its BAT): the copy at 0
      // rules until the footer is written again past the table.
      footerAt = Math.max(nextFree, roundUp(to, SECTOR));
      await file.writeAt(oldFooter, footerAt);
      nextFree = footerAt;
    }
    await file.sync();
    await step('new BAT entries');
  }
  if (newCount > header.maxTableEntries) {
    // Only the table size changes (and the checksum): every other byte of the header stays as it was.
    const h = new Uint8Array(HEADER_SIZE);
    await file.readAt(h, dyn.headerOffset, 'the dynamic header');
    putU32(h, 28, newCount);
    putU32(h, 36, headerChecksum(h));
    await file.writeAt(h, dyn.headerOffset);
    await file.sync();
    await step('header');
  }

  // 3. The footers: trailing damaged (the copy rules), the copy at 0 with the new size, then the trailing one.
  const newFooter = resizedFooter(oldFooter, size, notes);
  const finalAt = Math.max(footerAt, nextFree);
  await file.writeAt(new Uint8Array(8), footerAt);
  await file.sync();
  await step('trailing footer set aside');
  await file.writeAt(newFooter, 0);
  await file.sync();
  await step('footer copy');
  await file.writeAt(newFooter, finalAt);
  await file.sync();
  return { notes };
}

function notRoom(path: string, why: string): VhdsyncError {
  return new VhdsyncError('UNSUPPORTED', `${path}: cannot grow this VHD in place: ${why}; convert it to a new image of the larger size instead (qemu-img convert, then vhdsync resize)`);
}

/** Write zeros over [from, to), only where the file holds something else (a sparse tail stays sparse). */
export async function zeroRange(file: ImageFile, from: number, to: number): Promise<void> {
  const size = await file.size();
  const end = Math.min(to, size);
  const buf = new Uint8Array(SLICE);
  for (let at = from; at < end; at += SLICE) {
    const n = Math.min(SLICE, end - at);
    const view = buf.subarray(0, n);
    const got = await file.readUpTo(view, at);
    let zero = true;
    for (let i = 0; i < got; i++) {
      if (view[i] !== 0) {
        zero = false;
        break;
      }
    }
    if (!zero) await file.writeAt(new Uint8Array(n), at);
  }
}

async function copyRange(file: ImageFile, from: number, to: number, length: number): Promise<void> {
  const buf = new Uint8Array(Math.min(SLICE, length));
  for (let done = 0; done < length; done += buf.length) {
    const n = Math.min(buf.length, length - done);
    const view = buf.subarray(0, n);
    const got = await file.readUpTo(view, from + done);
    if (got < n) view.fill(0, got);
    await file.writeAt(view, to + done);
  }
}
