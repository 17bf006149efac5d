/**
 * Reading a VHD's metadata from its file: which footer to trust, the dynamic header, the BAT, and the
 * layout checks that tie them to the file size. Everything is bounded by the file size before any
 * allocation, so a lying header cannot make us allocate or loop in proportion to its fields.
 */
import { VhdsyncError } from '../../errors.js';
import { SECTOR, roundUp } from './be.js';
import type { ImageFile } from '../file-io.js';
import { BAT_UNUSED, batBytesFor, bitmapBytesFor, parseBat, validateBat, type BatLayout } from './bat.js';
import { DISK_TYPE_FIXED, FOOTER_SIZE, hasFooterCookie, parseFooter, type VhdFooter } from './footer.js';
import { HEADER_SIZE, MAX_LOCATOR_BYTES, parseDynamicHeader, type DynamicHeader } from './header.js';
import { bytesEqual } from '../../bytes.js';

/** 2^25 entries (a 128 MiB BAT): 2040 GiB at 64 KiB blocks. Real writers use 512 KiB or 2 MiB. */
export const MAX_BLOCKS = 1 << 25;

export interface VhdMetadata {
  fileSize: number;
  footer: VhdFooter;
  /** The footer bytes in use (trailing footer, or the copy at offset 0 after an interrupted write). */
  footerBytes: Uint8Array;
  footerSource: 'trailing' | 'copy';
  /** Dynamic/differencing: is the copy at offset 0 intact and equal to the trailing footer? */
  footerCopyValid: boolean;
  /** Things a careful reader should know (damaged footer copy, ...), one line each. */
  warnings: string[];
  dynamic?: DynamicMetadata;
}

export interface DynamicMetadata {
  header: DynamicHeader;
  headerOffset: number;
  /** Entries for the blocks of the disk (the on-disk table may hold more). */
  bat: Uint32Array;
  /** The on-disk table bytes, big-endian, padded to a sector (what we rewrite on flush). */
  batRaw: Uint8Array;
  blockCount: number;
  bitmapBytes: number;
  /** Where the trailing footer is (or belongs) and where the next block will be appended. */
  nextFree: number;
}

/** Read the first and last sectors of a file, the two places a VHD footer can be. */
export async function readFooterCandidates(file: ImageFile, fileSize: number): Promise<{ head: Uint8Array; tail: Uint8Array }> {
  const head = new Uint8Array(Math.min(FOOTER_SIZE, fileSize));
  const tail = new Uint8Array(Math.min(FOOTER_SIZE, fileSize));
  await file.readAt(head, 0, 'the first sector');
  await file.readAt(tail, fileSize - tail.length, 'the last sector');
  return { head, tail };
}

/** True when either footer position carries the `conectix` cookie. */
export function looksLikeVhd(head: Uint8Array, tail: Uint8Array): boolean {
  return (tail.length === FOOTER_SIZE && hasFooterCookie(tail)) || (head.length === FOOTER_SIZE && hasFooterCookie(head));
}

export async function readVhdMetadata(file: ImageFile, fileSize: number, head: Uint8Array, tail: Uint8Array): Promise<VhdMetadata> {
  const name = file.path;
  if (fileSize < FOOTER_SIZE) {
    throw new VhdsyncError('TRUNCATED', `${name}: ${fileSize} bytes is too small to be a VHD (the footer alone is 512 bytes)`);
  }
  const warnings: string[] = [];
  let trailing: VhdFooter | undefined;
  let trailingError: unknown;
  if (hasFooterCookie(tail)) {
    try {
      trailing = parseFooter(tail, name);
    } catch (e) {
      trailingError = e;
    }
  } else {
    trailingError = new VhdsyncError('BAD_COOKIE', `${name}: no VHD footer in the last 512 bytes (bad cookie)`);
  }
  let copy: VhdFooter | undefined;
  let copyError: unknown;
  if (hasFooterCookie(head)) {
    try {
      copy = parseFooter(head, `${name} (footer copy at offset 0)`);
    } catch (e) {
      copyError = e;
    }
  }

  let footer: VhdFooter;
  let footerBytes: Uint8Array;
  let footerSource: 'trailing' | 'copy';
  let footerCopyValid = false;
  if (trailing) {
    footer = trailing;
    footerBytes = tail;
    footerSource = 'trailing';
    if (trailing.diskType !== DISK_TYPE_FIXED) {
      if (copy) {
        if (!bytesEqual(head, tail)) {
          throw new VhdsyncError(
            'FOOTER_MISMATCH',
            `${name}: the footer copy at offset 0 differs from the trailing footer; the image was modified by a tool that updated only one of them`,
          );
        }
        footerCopyValid = true;
      } else {
        const why = copyError instanceof Error ? copyError.message.replace(/^.*?: /, '') : 'no footer copy at offset 0';
        warnings.push(`footer copy at offset 0 is damaged (${why}); the trailing footer is used`);
      }
    }
  } else if (copy && copy.diskType !== DISK_TYPE_FIXED) {
    footer = copy;
    footerBytes = head;
    footerSource = 'copy';
    footerCopyValid = true;
    const why = trailingError instanceof Error ? trailingError.message.replace(/^.*?: /, '') : 'missing';
    warnings.push(`trailing footer is damaged (${why}); using the copy at offset 0 (an interrupted block allocation leaves this state)`);
  } else {
    throw trailingError;
  }

  if (footer.diskType === DISK_TYPE_FIXED) {
    if (fileSize < footer.currentSize + FOOTER_SIZE) {
      throw new VhdsyncError(
        'TRUNCATED',
        `${name}: fixed VHD of ${footer.currentSize} bytes needs a ${footer.currentSize + FOOTER_SIZE}-byte file but the file has ${fileSize}; the image is truncated`,
      );
    }
    return { fileSize, footer, footerBytes, footerSource, footerCopyValid, warnings };
  }

  const dynamic = await readDynamic(file, fileSize, footer, footerSource === 'trailing');
  return { fileSize, footer, footerBytes, footerSource, footerCopyValid, warnings, dynamic };
}

async function readDynamic(file: ImageFile, fileSize: number, footer: VhdFooter, hasTrailing: boolean): Promise<DynamicMetadata> {
  const name = file.path;
  const dataEnd = hasTrailing ? fileSize - FOOTER_SIZE : fileSize;
  const headerOffset = footer.dataOffset as number;
  if (headerOffset < FOOTER_SIZE || headerOffset + HEADER_SIZE > dataEnd) {
    throw new VhdsyncError(
      headerOffset + HEADER_SIZE > dataEnd ? 'TRUNCATED' : 'BAD_SIZE',
      `${name}: the dynamic header offset ${headerOffset} lies outside the file (${fileSize} bytes)`,
    );
  }
  const headerBytes = new Uint8Array(HEADER_SIZE);
  await file.readAt(headerBytes, headerOffset, 'the dynamic header');
  const header = parseDynamicHeader(headerBytes, name);

  const blockCount = Math.ceil(footer.currentSize / header.blockSize);
  if (blockCount > MAX_BLOCKS) {
    // A sparse file can be as large as a lying header wants: bound the BAT we hold in memory explicitly.
    throw new VhdsyncError(
      'BAD_BAT',
      `${name}: ${blockCount} blocks of ${header.blockSize} bytes are more than vhdsync handles (${MAX_BLOCKS}); the block size is too small for a disk this large`,
    );
  }
  if (header.maxTableEntries < blockCount) {
    throw new VhdsyncError(
      'BAD_BAT',
      `${name}: the BAT has ${header.maxTableEntries} entries but a ${footer.currentSize}-byte disk with ${header.blockSize}-byte blocks needs ${blockCount}`,
    );
  }
  const tableOffset = header.tableOffset;
  const tableBytes = header.maxTableEntries * 4;
  if (!Number.isSafeInteger(tableOffset) || tableOffset + tableBytes > dataEnd) {
    throw new VhdsyncError(
      'TRUNCATED',
      `${name}: the BAT (${header.maxTableEntries} entries at byte ${tableOffset}) extends past the end of the file (${fileSize} bytes)`,
    );
  }
  const tableSpan = batBytesFor(header.maxTableEntries);
  const overlaps = (a0: number, a1: number, b0: number, b1: number) => a0 < b1 && b0 < a1;
  if (overlaps(tableOffset, tableOffset + tableBytes, 0, FOOTER_SIZE) || overlaps(tableOffset, tableOffset + tableBytes, headerOffset, headerOffset + HEADER_SIZE)) {
    throw new VhdsyncError('BAD_BAT', `${name}: the BAT at byte ${tableOffset} overlaps the footer copy or the dynamic header`);
  }
  // Read the sectors holding the entries the disk uses (we rewrite whole sectors of them on flush).
  const batRaw = new Uint8Array(Math.min(batBytesFor(blockCount), tableSpan, dataEnd - tableOffset));
  await file.readAt(batRaw, tableOffset, 'the BAT');
  const bat = parseBat(batRaw, blockCount, name);

  const bitmapBytes = bitmapBytesFor(header.blockSize);
  const reserved: BatLayout['reserved'] = [
    { start: 0, end: FOOTER_SIZE, what: 'footer copy' },
    { start: headerOffset, end: headerOffset + HEADER_SIZE, what: 'dynamic header' },
    { start: tableOffset, end: tableOffset + tableBytes, what: 'BAT' },
  ];
  for (const l of header.locators) {
    if (l.dataLength > 0 && l.dataLength <= MAX_LOCATOR_BYTES && l.dataOffset + l.dataLength <= fileSize) {
      reserved.push({ start: l.dataOffset, end: l.dataOffset + l.dataLength, what: `${l.codeName} parent locator` });
    }
  }
  validateBat(bat, { virtualSize: footer.currentSize, blockSize: header.blockSize, bitmapBytes, dataEnd, reserved }, name);

  // New blocks go where the trailing footer is; never below the metadata or an existing block.
  let nextFree = roundUp(dataEnd, SECTOR);
  for (const r of reserved) nextFree = Math.max(nextFree, roundUp(r.end, SECTOR));
  for (let i = 0; i < blockCount; i++) {
    if (bat[i] !== BAT_UNUSED) nextFree = Math.max(nextFree, bat[i] * SECTOR + bitmapBytes + header.blockSize);
  }
  return { header, headerOffset, bat, batRaw, blockCount, bitmapBytes, nextFree };
}
