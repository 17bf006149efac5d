import { readFile } from 'node:fs/promises';
import { expect } from 'vitest';
import type { Disk } from '../../host/disk/index.js';

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function randomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function hex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
}

/** Index of the first differing byte, or -1 (clearer failures than comparing megabytes with toEqual). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  expect(firstDifference(actual, expected), `${what}: first differing byte`).toBe(-1);
}

/** Every virtual byte of an open disk. */
export async function readAll(disk: Disk): Promise<Uint8Array> {
  const out = new Uint8Array(disk.virtualSize);
  await disk.read(0, out);
  return out;
}

export async function fileBytes(p: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(p));
}
