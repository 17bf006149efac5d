/**
 * The big-endian layer of the VHD format: every multi-byte integer on disk goes through here, so byte
 * order is converted in exactly one place. 64-bit values become `number`; callers bound them before use.
 */
import { toHex } from '../../bytes.js';
export const SECTOR = 512;

export function getU16(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

export function getU32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

/** A u64 as a number. Values above 2^53 lose precision but stay huge, so range checks still reject them. */
export function getU64(b: Uint8Array, off: number): number {
  return getU32(b, off) * 0x1_0000_0000 + getU32(b, off + 4);
}

/** True when the 8 bytes at `off` are all 0xFF (the VHD "no offset" marker). */
export function isAllOnes64(b: Uint8Array, off: number): boolean {
  return getU32(b, off) === 0xffffffff && getU32(b, off + 4) === 0xffffffff;
}

export function putU16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

export function putU32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** Store a non-negative safe integer as a big-endian u64. */
export function putU64(b: Uint8Array, off: number, v: number): void {
  putU32(b, off, Math.floor(v / 0x1_0000_0000));
  putU32(b, off + 4, v % 0x1_0000_0000);
}

export function putAllOnes64(b: Uint8Array, off: number): void {
  b.fill(0xff, off, off + 8);
}

export function roundUp(v: number, multiple: number): number {
  return Math.ceil(v / multiple) * multiple;
}

/** ASCII text of a fixed-size field, for cookies and creator codes (non-printable bytes shown as \xNN). */
export function ascii(b: Uint8Array, off: number, len: number): string {
  let s = '';
  for (let i = off; i < off + len; i++) {
    const c = b[i];
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : c === 0 ? '\\0' : `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return s;
}

export function putAscii(b: Uint8Array, off: number, text: string): void {
  for (let i = 0; i < text.length; i++) b[off + i] = text.charCodeAt(i) & 0xff;
}

/** RFC 4122 text of 16 raw bytes (VHD stores UUIDs in plain byte order). */
export function uuidText(b: Uint8Array): string {
  const h = toHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
