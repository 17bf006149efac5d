// Batch digests: every block of a buffer, and one level of a hash tree, each in a single call
// (the host never makes one JS->WASM call per block).

import { xxh3_128 } from './xxh3';

/**
 * XXH3-128 of each `blockSize`-byte block of the `len` bytes at `p`, digests written back to back
 * at `out` (ceil(len / blockSize) x 16 bytes). A partial last block is hashed over its real length.
 */
export function hashBlocks(p: usize, len: usize, blockSize: usize, out: usize): void {
  while (len > blockSize) {
    xxh3_128(p, blockSize, out);
    p += blockSize;
    len -= blockSize;
    out += 16;
  }
  if (len > 0) xxh3_128(p, len, out);
}

/**
 * One level of a hash tree: each run of `fanout` 16-byte child digests (the last run may be
 * shorter) is hashed, as concatenated bytes, into one parent digest at `out`.
 */
export function hashTree(p: usize, count: usize, fanout: usize, out: usize): void {
  hashBlocks(p, count << 4, fanout << 4, out);
}
