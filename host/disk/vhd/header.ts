/**
 * The VHD dynamic disk header (VHD spec "Dynamic Disk Header Format", 1024 bytes, cookie `cxsparse`)
 * and its parent locators. Pure functions over bytes; no I/O here.
 */
import { getCore } from '../../core/index.js';
import { VhdsyncError } from '../../errors.js';
import { MiB } from '../../units.js';
import { ascii, getU32, getU64, isAllOnes64, putAllOnes64, putAscii, putU32, putU64 } from './be.js';

export const HEADER_SIZE = 1024;
export const HEADER_COOKIE = 'cxsparse';
export const MIN_BLOCK_SIZE = 512;
/** Larger blocks exist in no known writer; refusing them bounds per-block metadata (a 256 MiB block has a 64 KiB bitmap). */
export const MAX_BLOCK_SIZE = 256 * MiB;
export const DEFAULT_BLOCK_SIZE = 2 * MiB;
/** Locator payloads are paths; anything larger than this is not one. */
export const MAX_LOCATOR_BYTES = 64 * 1024;

export const LOCATOR_NONE = 0;
export const LOCATOR_W2RU = 0x57327275; // relative path, UTF-16LE
export const LOCATOR_W2KU = 0x57326b75; // absolute path, UTF-16LE
export const LOCATOR_WI2R = 0x57693272; // relative path, ANSI (deprecated)
export const LOCATOR_WI2K = 0x5769326b; // absolute path, ANSI (deprecated)
export const LOCATOR_MACX = 0x4d616358; // file URL, UTF-8

export interface ParentLocator {
  /** Platform code, e.g. LOCATOR_W2RU. */
  code: number;
  /** The code as four ASCII characters ("W2ru"). */
  codeName: string;
  /** Bytes or sectors depending on the writer (vhd-formats §1.6); never used for layout. */
  dataSpace: number;
  dataLength: number;
  dataOffset: number;
}

export interface DynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Uint8Array;
  parentTimestamp: number;
  parentUnicodeName: string;
  /** Non-empty locator entries, in header order. */
  locators: ParentLocator[];
}

export function headerChecksum(bytes: Uint8Array): number {
  return getCore().vhdChecksum(bytes.subarray(0, HEADER_SIZE), 36);
}

/**
 * Parse and validate a 1024-byte dynamic header. Checks the cookie, the checksum and the block size
 * (a power of two between 512 bytes and 256 MiB). Layout against the file size is checked by the caller.
 */
export function parseDynamicHeader(bytes: Uint8Array, name = 'image'): DynamicHeader {
  if (bytes.length < HEADER_SIZE) {
    throw new VhdsyncError('TRUNCATED', `${name}: VHD dynamic header is ${bytes.length} bytes, expected ${HEADER_SIZE}; the file is truncated`);
  }
  if (ascii(bytes, 0, 8) !== HEADER_COOKIE) {
    throw new VhdsyncError('BAD_COOKIE', `${name}: bad VHD dynamic header cookie '${ascii(bytes, 0, 8)}' (expected 'cxsparse')`);
  }
  const stored = getU32(bytes, 36);
  const computed = headerChecksum(bytes);
  if (stored !== computed) {
    throw new VhdsyncError(
      'BAD_CHECKSUM',
      `${name}: VHD dynamic header checksum is 0x${stored.toString(16).padStart(8, '0')} but the header sums to 0x${computed.toString(16).padStart(8, '0')}; the header is corrupt`,
    );
  }
  const blockSize = getU32(bytes, 32);
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new VhdsyncError('BAD_BLOCK_SIZE', `${name}: VHD block size ${blockSize} is not a power of two between 512 bytes and 256 MiB`);
  }
  const tableOffset = isAllOnes64(bytes, 16) ? Number.POSITIVE_INFINITY : getU64(bytes, 16);
  const locators: ParentLocator[] = [];
  for (let i = 0; i < 8; i++) {
    const o = 576 + i * 24;
    const code = getU32(bytes, o);
    if (code === LOCATOR_NONE) continue;
    locators.push({
      code,
      codeName: ascii(bytes, o, 4),
      dataSpace: getU32(bytes, o + 4),
      dataLength: getU32(bytes, o + 8),
      dataOffset: getU64(bytes, o + 16),
    });
  }
  return {
    tableOffset,
    headerVersion: getU32(bytes, 24),
    maxTableEntries: getU32(bytes, 28),
    blockSize,
    checksum: stored,
    parentUniqueId: bytes.slice(40, 56),
    parentTimestamp: getU32(bytes, 56),
    parentUnicodeName: decodeParentName(bytes.subarray(64, 576)),
    locators,
  };
}

export interface HeaderFields {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
  parentUniqueId?: Uint8Array;
  parentTimestamp?: number;
  parentUnicodeName?: string;
  locators?: Array<{ code: number; dataSpace: number; dataLength: number; dataOffset: number }>;
}

/** Build a dynamic header with a valid checksum. */
export function buildDynamicHeader(f: HeaderFields): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  putAscii(b, 0, HEADER_COOKIE);
  putAllOnes64(b, 8); // unused data offset: all 64 bits set, as Microsoft's tools expect
  putU64(b, 16, f.tableOffset);
  putU32(b, 24, 0x00010000);
  putU32(b, 28, f.maxTableEntries);
  putU32(b, 32, f.blockSize);
  if (f.parentUniqueId) b.set(f.parentUniqueId.subarray(0, 16), 40);
  putU32(b, 56, f.parentTimestamp ?? 0);
  if (f.parentUnicodeName) {
    const name = encodeUtf16(f.parentUnicodeName, false);
    b.set(name.subarray(0, Math.min(name.length, 510)), 64); // keep a terminating NUL
  }
  (f.locators ?? []).slice(0, 8).forEach((l, i) => {
    const o = 576 + i * 24;
    putU32(b, o, l.code);
    putU32(b, o + 4, l.dataSpace);
    putU32(b, o + 8, l.dataLength);
    putU64(b, o + 16, l.dataOffset);
  });
  putU32(b, 36, headerChecksum(b));
  return b;
}

/**
 * The header's parent name is UTF-16BE, NUL-padded. A little-endian one was found in the wild and
 * Windows mounts it (libvhdi#22): when every high byte is zero in the LE reading but not in the BE one,
 * read it as LE.
 */
export function decodeParentName(field: Uint8Array): string {
  let end = 0;
  while (end + 1 < field.length && (field[end] !== 0 || field[end + 1] !== 0)) end += 2;
  const units = field.subarray(0, end);
  if (units.length === 0) return '';
  return looksLittleEndian(units) ? decodeUtf16(units, true) : decodeUtf16(units, false);
}

function looksLittleEndian(units: Uint8Array): boolean {
  // ASCII text in LE has a zero second byte in every pair and a non-zero first byte.
  for (let i = 0; i + 1 < units.length; i += 2) if (units[i] === 0 || units[i + 1] !== 0) return false;
  return true;
}

export function decodeUtf16(bytes: Uint8Array, littleEndian: boolean): string {
  let s = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const u = littleEndian ? bytes[i] | (bytes[i + 1] << 8) : (bytes[i] << 8) | bytes[i + 1];
    if (u === 0) break;
    s += String.fromCharCode(u);
  }
  return s;
}

export function encodeUtf16(text: string, littleEndian: boolean): Uint8Array {
  const b = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) {
    const u = text.charCodeAt(i);
    b[i * 2 + (littleEndian ? 0 : 1)] = u & 0xff;
    b[i * 2 + (littleEndian ? 1 : 0)] = u >>> 8;
  }
  return b;
}

/** The path a locator's data spells, or null for platform codes we cannot interpret (`Mac `). */
export function decodeLocatorData(code: number, data: Uint8Array): string | null {
  switch (code) {
    case LOCATOR_W2RU:
    case LOCATOR_W2KU:
      return decodeUtf16(data, true);
    case LOCATOR_WI2R:
    case LOCATOR_WI2K: {
      const nul = data.indexOf(0);
      return new TextDecoder('latin1').decode(nul < 0 ? data : data.subarray(0, nul));
    }
    case LOCATOR_MACX: {
      const nul = data.indexOf(0);
      const url = new TextDecoder().decode(nul < 0 ? data : data.subarray(0, nul));
      return url.startsWith('file://') ? decodeURIComponent(url.slice(7)) : url;
    }
    default:
      return null;
  }
}

export function isPowerOfTwo(v: number): boolean {
  return Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
}
