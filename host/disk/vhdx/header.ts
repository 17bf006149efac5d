/**
 * The VHDX header section ([MS-VHDX] 2.2): the file type identifier at 0 and two 4 KiB headers at 64 KiB
 * and 128 KiB. The current header is the valid one (signature `head`, version 1, CRC-32C) with the higher
 * sequence number; writers update the other one with sequence + 1, so a torn header write always leaves
 * the previous header valid. Pure functions over bytes; I/O lives in image.ts.
 */
import { VhdsyncError } from '../../errors.js';
import { crcValid, le16, le32, le64, le64Big, putLe16, putLe32, putLe64, putLe64Big, putSignature, sealCrc, shownSignature, signature, utf16le } from './le.js';
import { KiB, MiB } from '../../units.js';

export const HEADER1_OFFSET = 64 * KiB;
export const HEADER2_OFFSET = 128 * KiB;
export const HEADER_OFFSETS = [HEADER1_OFFSET, HEADER2_OFFSET] as const;
export const HEADER_SIZE = 4 * KiB;
/** The header section (identifier, headers, region tables) fills the first MiB; nothing else may live there. */
export const HEADER_SECTION_SIZE = 1 * MiB;
export const FILE_SIGNATURE = 'vhdxfile';
/** Bytes of the identifier we read and write: signature + 256 UTF-16 code units of creator. */
export const FILE_ID_SIZE = 8 + 512;
/** The creator string vhdsync writes into the file identifier of the VHDX images it makes. */
export const VHDX_CREATOR = 'vhdsync';

export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: Uint8Array;
  dataWriteGuid: Uint8Array;
  /** All zero when the log is empty. */
  logGuid: Uint8Array;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export function hasFileSignature(b: Uint8Array): boolean {
  return b.length >= 8 && signature(b, 0, 8) === FILE_SIGNATURE;
}

/** The creator string of the file type identifier (diagnostic only, e.g. "QEMU v7.2.22"). */
export function parseFileIdentifier(b: Uint8Array, path: string): { creator: string } {
  if (!hasFileSignature(b)) {
    throw new VhdsyncError('BAD_COOKIE', `${path}: not a VHDX: the file starts with '${shownSignature(b, 0, 8)}', not 'vhdxfile'`);
  }
  const raw = utf16le(b, 8, Math.min(512, b.length - 8));
  const nul = raw.indexOf('\0');
  return { creator: nul < 0 ? raw : raw.slice(0, nul) };
}

/** Did vhdsync make this VHDX (its file identifier, `b` at least the signature, names our creator)? */
export function madeByVhdsync(b: Uint8Array): boolean {
  return hasFileSignature(b) && parseFileIdentifier(b, 'image').creator === VHDX_CREATOR;
}

export function buildFileIdentifier(creator: string): Uint8Array {
  const b = new Uint8Array(FILE_ID_SIZE);
  putSignature(b, 0, FILE_SIGNATURE);
  const text = creator.slice(0, 255);
  for (let i = 0; i < text.length; i++) putLe16(b, 8 + i * 2, text.charCodeAt(i));
  return b;
}

/** A header if `b` (4 KiB) holds a valid one, else the reason it is not. */
export function parseHeader(b: Uint8Array): VhdxHeader | { invalid: string } {
  if (b.length < HEADER_SIZE) return { invalid: 'truncated' };
  if (signature(b, 0, 4) !== 'head') return { invalid: `signature '${shownSignature(b, 0, 4)}' instead of 'head'` };
  if (!crcValid(b.subarray(0, HEADER_SIZE))) return { invalid: 'CRC-32C mismatch' };
  const version = le16(b, 66);
  if (version !== 1) return { invalid: `version ${version} (only 1 exists)` };
  return {
    sequenceNumber: le64Big(b, 8),
    fileWriteGuid: b.slice(16, 32),
    dataWriteGuid: b.slice(32, 48),
    logGuid: b.slice(48, 64),
    logVersion: le16(b, 64),
    version,
    logLength: le32(b, 68),
    logOffset: le64(b, 72),
  };
}

export function buildHeader(h: VhdxHeader): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  putSignature(b, 0, 'head');
  putLe64Big(b, 8, h.sequenceNumber);
  b.set(h.fileWriteGuid, 16);
  b.set(h.dataWriteGuid, 32);
  b.set(h.logGuid, 48);
  putLe16(b, 64, h.logVersion);
  putLe16(b, 66, h.version);
  putLe32(b, 68, h.logLength);
  putLe64(b, 72, h.logOffset);
  sealCrc(b);
  return b;
}

export interface PickedHeader {
  /** 0: the header at 64 KiB, 1: the one at 128 KiB. */
  index: 0 | 1;
  header: VhdxHeader;
  /** The other header when it is valid too. */
  other?: VhdxHeader;
  warnings: string[];
}

/**
 * Choose the current header ([MS-VHDX] 2.2.2.1): the valid one with the higher sequence number. Two
 * valid headers with equal numbers are corrupt unless identical (Disk2vhd writes identical copies).
 */
export function pickHeader(h1: Uint8Array, h2: Uint8Array, path: string): PickedHeader {
  const a = parseHeader(h1);
  const b = parseHeader(h2);
  const okA = !('invalid' in a);
  const okB = !('invalid' in b);
  if (!okA && !okB) {
    throw new VhdsyncError(
      'BAD_CHECKSUM',
      `${path}: both VHDX headers are invalid (at 64 KiB: ${(a as { invalid: string }).invalid}; at 128 KiB: ${(b as { invalid: string }).invalid}); the image is corrupt`,
    );
  }
  const picked: PickedHeader = okA && okB
    ? pickOfTwo(a as VhdxHeader, b as VhdxHeader, h1, h2, path)
    : okA
      ? { index: 0, header: a as VhdxHeader, warnings: [`header at 128 KiB is invalid (${(b as { invalid: string }).invalid}); using the one at 64 KiB`] }
      : { index: 1, header: b as VhdxHeader, warnings: [`header at 64 KiB is invalid (${(a as { invalid: string }).invalid}); using the one at 128 KiB`] };
  checkHeader(picked.header, path);
  return picked;
}

function pickOfTwo(a: VhdxHeader, b: VhdxHeader, h1: Uint8Array, h2: Uint8Array, path: string): PickedHeader {
  if (a.sequenceNumber > b.sequenceNumber) return { index: 0, header: a, other: b, warnings: [] };
  if (b.sequenceNumber > a.sequenceNumber) return { index: 1, header: b, other: a, warnings: [] };
  for (let i = 0; i < 80; i++) {
    if (h1[i] !== h2[i]) {
      throw new VhdsyncError('BAD_CHECKSUM', `${path}: the two VHDX headers differ but carry the same sequence number ${a.sequenceNumber}; the image is corrupt`);
    }
  }
  return { index: 0, header: a, other: b, warnings: [] };
}

/** Structural checks of the current header's log fields ([MS-VHDX] 2.2.2). */
function checkHeader(h: VhdxHeader, path: string): void {
  if (h.logVersion !== 0) {
    throw new VhdsyncError('UNSUPPORTED', `${path}: VHDX log version ${h.logVersion} is not supported (only 0 exists)`);
  }
  if (h.logLength % MiB !== 0 || h.logOffset % MiB !== 0 || h.logOffset < HEADER_SECTION_SIZE || !Number.isSafeInteger(h.logOffset)) {
    throw new VhdsyncError(
      'BAD_SIZE',
      `${path}: VHDX log at ${h.logOffset} (+${h.logLength}) is not a whole number of MiB after the header section; the image is corrupt`,
    );
  }
}
