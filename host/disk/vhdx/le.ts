/**
 * The little-endian layer of the VHDX format ([MS-VHDX] 2.1: every field is little-endian, GUIDs are
 * Microsoft's mixed-endian layout, strings UTF-16LE) and its CRC-32C checksums. Byte order is converted
 * here and nowhere else. 64-bit values become `number`; callers bound them before use.
 */
import { getCore } from '../../core/index.js';


export function le16(b: Uint8Array, off: number): number {
  return b[off] | (b[off + 1] << 8);
}

export function le32(b: Uint8Array, off: number): number {
  return (b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)) >>> 0;
}

/** A u64 as a number. Values above 2^53 lose precision but stay huge, so range checks still reject them. */
export function le64(b: Uint8Array, off: number): number {
  return le32(b, off + 4) * 0x1_0000_0000 + le32(b, off);
}

/** A u64 exactly (sequence numbers are compared, not used as offsets). */
export function le64Big(b: Uint8Array, off: number): bigint {
  return (BigInt(le32(b, off + 4)) << 32n) | BigInt(le32(b, off));
}

export function putLe16(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
}

export function putLe32(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}

/** Store a non-negative safe integer as a little-endian u64. */
export function putLe64(b: Uint8Array, off: number, v: number): void {
  putLe32(b, off, v % 0x1_0000_0000);
  putLe32(b, off + 4, Math.floor(v / 0x1_0000_0000));
}

export function putLe64Big(b: Uint8Array, off: number, v: bigint): void {
  putLe32(b, off, Number(v & 0xffffffffn));
  putLe32(b, off + 4, Number((v >> 32n) & 0xffffffffn));
}

/** ASCII of a signature field, for comparisons and messages. */
export function signature(b: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = off; i < off + len && i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

export function putSignature(b: Uint8Array, off: number, text: string): void {
  for (let i = 0; i < text.length; i++) b[off + i] = text.charCodeAt(i) & 0xff;
}

/** Printable form of a signature for error messages (`vhdxfilf`, `\x00\x00...`). */
export function shownSignature(b: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = off; i < off + len && i < b.length; i++) {
    const c = b[i];
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return s;
}

// ---- GUIDs: Data1 u32 LE, Data2 u16 LE, Data3 u16 LE, Data4 8 raw bytes ([MS-DTYP] 2.3.4.2) ----

export const GUID_SIZE = 16;

/** Lowercase text (`2dc27766-f623-4200-9d64-115e9bfd4a08`) of the 16 on-disk bytes at `off`. */
export function guidText(b: Uint8Array, off = 0): string {
  const h = (i: number) => b[off + i].toString(16).padStart(2, '0');
  const d1 = h(3) + h(2) + h(1) + h(0);
  const d2 = h(5) + h(4);
  const d3 = h(7) + h(6);
  const d4a = h(8) + h(9);
  let d4b = '';
  for (let i = 10; i < 16; i++) d4b += h(i);
  return `${d1}-${d2}-${d3}-${d4a}-${d4b}`;
}

const GUID_RE = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i;

export function isGuidText(text: string): boolean {
  return GUID_RE.test(text.trim());
}

/** On-disk bytes of a GUID written as text (braces optional, any case). Throws on malformed text. */
export function guidBytes(text: string): Uint8Array {
  const m = GUID_RE.exec(text.trim());
  if (!m) throw new Error(`not a GUID: ${text}`);
  const hex = (m[1] + m[2] + m[3] + m[4] + m[5]).toLowerCase();
  const raw = new Uint8Array(16);
  for (let i = 0; i < 16; i++) raw[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  const out = new Uint8Array(16);
  out.set([raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]], 0);
  out.set(raw.subarray(8), 8);
  return out;
}

/** A random (version 4) GUID, from Web Crypto so this module runs in browsers too. */
export function randomGuid(): Uint8Array {
  return guidBytes(globalThis.crypto.randomUUID());
}

export function isZeroGuid(b: Uint8Array, off = 0): boolean {
  for (let i = 0; i < 16; i++) if (b[off + i] !== 0) return false;
  return true;
}

export function guidEqual(a: Uint8Array, aOff: number, b: Uint8Array, bOff = 0): boolean {
  for (let i = 0; i < 16; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

// ---- UTF-16LE strings ----

export function utf16le(b: Uint8Array, off: number, byteLength: number): string {
  let s = '';
  for (let i = 0; i + 1 < byteLength; i += 2) s += String.fromCharCode(le16(b, off + i));
  return s;
}

export function encodeUtf16le(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 2);
  for (let i = 0; i < text.length; i++) putLe16(out, i * 2, text.charCodeAt(i));
  return out;
}

// ---- CRC-32C ([MS-VHDX] 2.2.2: over the whole structure with the checksum field taken as zero) ----

const ZERO4 = new Uint8Array(4);

/** CRC-32C of `b` as if the 4 bytes at `field` were zero (the buffer is not modified). */
export function crcWithZeroField(b: Uint8Array, field = 4): number {
  const core = getCore();
  let c = core.crc32c(b.subarray(0, field));
  c = core.crc32c(ZERO4, c);
  return core.crc32c(b.subarray(field + 4), c);
}

/** Store the CRC-32C of `b` (field zeroed) into its checksum field at `field`. */
export function sealCrc(b: Uint8Array, field = 4): void {
  putLe32(b, field, crcWithZeroField(b, field));
}

export function crcValid(b: Uint8Array, field = 4): boolean {
  return le32(b, field) === crcWithZeroField(b, field);
}

export function roundUp(v: number, multiple: number): number {
  return Math.ceil(v / multiple) * multiple;
}

export function isPowerOfTwo(v: number): boolean {
  return Number.isSafeInteger(v) && v > 0 && (v & (v - 1)) === 0 && v <= 0x4000_0000;
}
