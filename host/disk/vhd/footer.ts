/**
 * The VHD footer (VHD spec "Hard Disk Footer Format"): 512 big-endian bytes at the end of every VHD,
 * copied at offset 0 for dynamic and differencing disks. Pure functions over bytes; no I/O here.
 */
import { getCore } from '../../core/index.js';
import { VhdsyncError } from '../../errors.js';
import { GiB } from '../../units.js';
import {
  SECTOR, ascii, getU16, getU32, getU64, isAllOnes64, putAllOnes64, putAscii, putU16, putU32, putU64,
} from './be.js';

export const FOOTER_SIZE = 512;
export const FOOTER_COOKIE = 'conectix';
/** Largest virtual size accepted: qemu's VHD_MAX_SECTORS (0xff000000 sectors = 2040 GiB), Hyper-V's VHD limit. */
export const VHD_MAX_SIZE = 2040 * GiB;
/** VHD timestamps count seconds from 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);

/** Where the disk type field sits in the footer. */
const DISK_TYPE_OFFSET = 60;
export const DISK_TYPE_FIXED = 2;
export const DISK_TYPE_DYNAMIC = 3;
export const DISK_TYPE_DIFFERENCING = 4;
export type VhdDiskTypeCode = typeof DISK_TYPE_FIXED | typeof DISK_TYPE_DYNAMIC | typeof DISK_TYPE_DIFFERENCING;

/** Creator application written by vhdsync. `win ` makes every qemu version use current_size (vhd-formats §1.5). */
export const CREATOR_APP = 'win ';
/** Creator application that marks a vhdsync differencing disk whose parent is a raw image (a vhdsync extension). */
export const CREATOR_APP_RAW_PARENT = 'vhds';

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export interface VhdFooter {
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header, or null when the field is all ones (fixed disks). */
  dataOffset: number | null;
  /** Seconds since 2000-01-01 UTC. */
  timestamp: number;
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  /** The virtual size: what the VM sees (vhd-formats §1.5). */
  currentSize: number;
  geometry: Geometry;
  diskType: VhdDiskTypeCode;
  checksum: number;
  uniqueId: Uint8Array;
  savedState: boolean;
}

function fail(code: 'BAD_COOKIE' | 'BAD_CHECKSUM' | 'BAD_SIZE' | 'UNSUPPORTED' | 'TRUNCATED', name: string, what: string): never {
  throw new VhdsyncError(code, `${name}: ${what}`);
}

/** Checksum of a footer as stored (the field itself counted as zero). */
export function footerChecksum(bytes: Uint8Array): number {
  return getCore().vhdChecksum(bytes.subarray(0, FOOTER_SIZE), 64);
}

export function hasFooterCookie(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && ascii(bytes, 0, 8) === FOOTER_COOKIE;
}

/**
 * A footer's disk type, read from any 512 bytes with the cookie, the checksum unchecked: enough to
 * recognise a damaged differencing disk (one that may still be discarded as an overlay).
 */
export function footerDiskType(bytes: Uint8Array): number | undefined {
  return bytes.length >= FOOTER_SIZE && hasFooterCookie(bytes) ? getU32(bytes, DISK_TYPE_OFFSET) : undefined;
}

/** Is this a differencing VHD that vhdsync made over a raw image (creator `vhds`, zero parent id)? */
export function hasRawParent(footer: VhdFooter, parentUniqueId: Uint8Array): boolean {
  return footer.creatorApp === CREATOR_APP_RAW_PARENT && parentUniqueId.every((b) => b === 0);
}

/**
 * Parse and validate a 512-byte footer. `name` names the file (and where the footer sits) in errors.
 * Checks: cookie, checksum, disk type, virtual size (multiple of 512, at most 2040 GiB).
 */
export function parseFooter(bytes: Uint8Array, name = 'image'): VhdFooter {
  if (bytes.length < FOOTER_SIZE) fail('TRUNCATED', name, `VHD footer is ${bytes.length} bytes, expected ${FOOTER_SIZE}`);
  if (!hasFooterCookie(bytes)) fail('BAD_COOKIE', name, `bad VHD footer cookie '${ascii(bytes, 0, 8)}' (expected 'conectix')`);
  const stored = getU32(bytes, 64);
  const computed = footerChecksum(bytes);
  if (stored !== computed) {
    fail('BAD_CHECKSUM', name, `VHD footer checksum is 0x${hex(stored)} but the footer sums to 0x${hex(computed)}; the footer is corrupt`);
  }
  const diskType = getU32(bytes, DISK_TYPE_OFFSET);
  if (diskType !== DISK_TYPE_FIXED && diskType !== DISK_TYPE_DYNAMIC && diskType !== DISK_TYPE_DIFFERENCING) {
    fail('UNSUPPORTED', name, `VHD disk type ${diskType} is not supported (only fixed 2, dynamic 3, differencing 4)`);
  }
  const currentSize = getU64(bytes, 48);
  if (currentSize > VHD_MAX_SIZE) fail('BAD_SIZE', name, `VHD virtual size ${currentSize} bytes exceeds the 2040 GiB VHD limit`);
  if (currentSize % SECTOR !== 0) fail('BAD_SIZE', name, `VHD virtual size ${currentSize} is not a multiple of 512 bytes`);
  const dataOffset = isAllOnes64(bytes, 16) ? null : getU64(bytes, 16);
  if (diskType !== DISK_TYPE_FIXED && (dataOffset === null || !Number.isSafeInteger(dataOffset))) {
    fail('BAD_SIZE', name, `VHD footer of a ${diskType === DISK_TYPE_DYNAMIC ? 'dynamic' : 'differencing'} disk has no valid dynamic header offset`);
  }
  return {
    features: getU32(bytes, 8),
    formatVersion: getU32(bytes, 12),
    dataOffset,
    timestamp: getU32(bytes, 24),
    creatorApp: ascii(bytes, 28, 4),
    creatorVersion: getU32(bytes, 32),
    creatorHostOs: ascii(bytes, 36, 4),
    originalSize: getU64(bytes, 40),
    currentSize,
    geometry: { cylinders: getU16(bytes, 56), heads: bytes[58], sectorsPerTrack: bytes[59] },
    diskType: diskType as VhdDiskTypeCode,
    checksum: stored,
    uniqueId: bytes.slice(68, 84),
    savedState: bytes[84] === 1,
  };
}

export interface FooterFields {
  diskType: VhdDiskTypeCode;
  currentSize: number;
  originalSize?: number;
  /** Offset of the dynamic header (dynamic/differencing); fixed disks store all ones. */
  dataOffset?: number;
  timestamp?: number;
  uniqueId: Uint8Array;
  geometry?: Geometry;
  creatorApp?: string;
}

/** Build a footer with a valid checksum. Geometry defaults to the spec's CHS algorithm. */
export function buildFooter(f: FooterFields): Uint8Array {
  const b = new Uint8Array(FOOTER_SIZE);
  putAscii(b, 0, FOOTER_COOKIE);
  putU32(b, 8, 0x00000002); // bit 1 is reserved and must be set
  putU32(b, 12, 0x00010000);
  if (f.diskType === DISK_TYPE_FIXED || f.dataOffset === undefined) putAllOnes64(b, 16);
  else putU64(b, 16, f.dataOffset);
  putU32(b, 24, f.timestamp ?? vhdTimestamp());
  putAscii(b, 28, f.creatorApp ?? CREATOR_APP);
  putU32(b, 32, 0x000a0000); // creator version 10.0, as Hyper-V writes it
  putAscii(b, 36, 'Wi2k');
  putU64(b, 40, f.originalSize ?? f.currentSize);
  putU64(b, 48, f.currentSize);
  const g = f.geometry ?? chsGeometry(f.currentSize);
  putU16(b, 56, g.cylinders);
  b[58] = g.heads;
  b[59] = g.sectorsPerTrack;
  putU32(b, DISK_TYPE_OFFSET, f.diskType);
  b.set(f.uniqueId.subarray(0, 16), 68);
  putU32(b, 64, footerChecksum(b));
  return b;
}

/** CHS geometry for a size, per the VHD spec appendix (integer arithmetic; rounds the size down). */
export function chsGeometry(size: number): Geometry {
  let totalSectors = Math.floor(size / SECTOR);
  if (totalSectors > 65535 * 16 * 255) totalSectors = 65535 * 16 * 255;
  let spt: number;
  let heads: number;
  let cth: number;
  if (totalSectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(totalSectors / spt);
  } else {
    spt = 17;
    cth = Math.floor(totalSectors / spt);
    heads = Math.floor((cth + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

export function geometrySize(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack * SECTOR;
}

/** Seconds since 2000-01-01 UTC, as a u32. */
export function vhdTimestamp(date = new Date()): number {
  return Math.max(0, Math.floor((date.getTime() - VHD_EPOCH_MS) / 1000)) >>> 0;
}

export function timestampDate(ts: number): Date {
  return new Date(VHD_EPOCH_MS + ts * 1000);
}

export function diskTypeName(t: VhdDiskTypeCode): 'fixed' | 'dynamic' | 'differencing' {
  return t === DISK_TYPE_FIXED ? 'fixed' : t === DISK_TYPE_DYNAMIC ? 'dynamic' : 'differencing';
}

function hex(v: number): string {
  return v.toString(16).padStart(8, '0');
}
