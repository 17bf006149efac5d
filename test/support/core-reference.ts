/**
 * Straightforward TypeScript references for the core's tests: slow, obvious code written from the
 * definitions, never from the wasm sources. Hash digests are checked against hash-wasm instead.
 */
import { createXXHash128, type IHasher } from 'hash-wasm';
import { loadCoreSync, type Core } from '../../host/core/index.js';

/** Both builds, for describe.each: every behaviour must hold for SIMD and scalar alike. */
export const BUILDS = [
  { name: 'scalar', simd: false },
  { name: 'simd', simd: true },
] as const;

export function coreFor(simd: boolean): Core {
  const core = loadCoreSync({ simd });
  if (core.simd !== simd) throw new Error(`asked for simd=${simd}, got simd=${core.simd}`);
  return core;
}

let hasher: IHasher | undefined;

/** hash-wasm's XXH3-128 (an independent C implementation), canonical hex. */
export async function oracle128(): Promise<(data: Uint8Array) => string> {
  const h = (hasher ??= await createXXHash128());
  return (data) => {
    h.init();
    h.update(data);
    return h.digest('hex');
  };
}

/** LSB-first bitmap from a predicate over block indexes. */
export function bitmapOf(blocks: number, test: (i: number) => boolean): Uint8Array {
  const out = new Uint8Array(Math.ceil(blocks / 8));
  for (let i = 0; i < blocks; i++) if (test(i)) out[i >> 3] |= 1 << (i & 7);
  return out;
}

export function refZeroBlocks(data: Uint8Array, blockSize: number): Uint8Array {
  const n = Math.ceil(data.length / blockSize);
  return bitmapOf(n, (i) => data.subarray(i * blockSize, (i + 1) * blockSize).every((b) => b === 0));
}

export function refDiffBlocks(a: Uint8Array, b: Uint8Array, blockSize: number): Uint8Array {
  const n = Math.ceil(a.length / blockSize);
  return bitmapOf(n, (i) => {
    for (let j = i * blockSize; j < Math.min((i + 1) * blockSize, a.length); j++) if (a[j] !== b[j]) return true;
    return false;
  });
}

/** VHD spec: one's complement of the sum of all bytes, the checksum field counted as zero. */
export function refVhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  bytes.forEach((b, i) => {
    if (i < checksumOffset || i >= checksumOffset + 4) sum += b;
  });
  return ~sum >>> 0;
}

/** MSB-first bit i of a VHD sector bitmap. */
export function refBit(bitmap: Uint8Array, i: number): boolean {
  return (bitmap[i >> 3] & (0x80 >> (i & 7))) !== 0;
}

export function refBitmapCount(bitmap: Uint8Array, first: number, count: number): number {
  let n = 0;
  for (let i = first; i < first + count; i++) if (refBit(bitmap, i)) n++;
  return n;
}

export function refBitmapSet(bitmap: Uint8Array, first: number, count: number, value: boolean): void {
  for (let i = first; i < first + count; i++) {
    if (value) bitmap[i >> 3] |= 0x80 >> (i & 7);
    else bitmap[i >> 3] &= ~(0x80 >> (i & 7));
  }
}

/** Bit-at-a-time CRC-32C (reflected 0x82F63B78), the definition itself. */
export function refCrc32c(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}
