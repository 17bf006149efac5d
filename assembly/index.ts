// Entry of the scalar build (build/core.wasm). Every export takes pointers and lengths into
// linear memory and writes its results to caller-given pointers; u32 results only.

export { alloc, free } from './mem';
export { xxh3_128 } from './xxh3';
export { hashBlocks, hashTree } from './tree';
export { zeroBlocks, diffBlocks } from './compare';
export { vhdChecksum, decodeBat, bitmapCount, bitmapSet } from './vhd';
export { crc32c } from './crc32c';

/** 1 when this build uses v128 kernels (compiled with --enable simd), else 0. */
export function simd(): u32 {
  return ASC_FEATURE_SIMD ? 1 : 0;
}
