// Block tests over a buffer, returned as LSB-first bitmaps (bit i & 7 of byte i >> 3 = block i):
// which blocks are all zero, and which blocks differ between two buffers.
//
// Scanning stops at the first non-zero / differing word of a block. The SIMD build tests 64 bytes
// per step with v128; the scalar build 32 bytes with u64 words. Both give identical bitmaps.

/** True when the `n` bytes at `p` are all zero. */
function isZero(p: usize, n: usize): bool {
  const end = p + n;
  if (ASC_FEATURE_SIMD) {
    while (p + 64 <= end) {
      const x = v128.or(v128.or(v128.load(p, 0), v128.load(p, 16)), v128.or(v128.load(p, 32), v128.load(p, 48)));
      if (v128.any_true(x)) return false;
      p += 64;
    }
  } else {
    while (p + 32 <= end) {
      if ((load<u64>(p, 0) | load<u64>(p, 8) | load<u64>(p, 16) | load<u64>(p, 24)) != 0) return false;
      p += 32;
    }
  }
  while (p + 8 <= end) {
    if (load<u64>(p) != 0) return false;
    p += 8;
  }
  while (p < end) {
    if (load<u8>(p) != 0) return false;
    p++;
  }
  return true;
}

/** True when the `n` bytes at `a` and at `b` are equal. */
function isEqual(a: usize, b: usize, n: usize): bool {
  const end = a + n;
  if (ASC_FEATURE_SIMD) {
    while (a + 64 <= end) {
      const x = v128.or(
        v128.or(v128.xor(v128.load(a, 0), v128.load(b, 0)), v128.xor(v128.load(a, 16), v128.load(b, 16))),
        v128.or(v128.xor(v128.load(a, 32), v128.load(b, 32)), v128.xor(v128.load(a, 48), v128.load(b, 48))),
      );
      if (v128.any_true(x)) return false;
      a += 64;
      b += 64;
    }
  } else {
    while (a + 32 <= end) {
      const x = (load<u64>(a, 0) ^ load<u64>(b, 0)) | (load<u64>(a, 8) ^ load<u64>(b, 8)) |
        (load<u64>(a, 16) ^ load<u64>(b, 16)) | (load<u64>(a, 24) ^ load<u64>(b, 24));
      if (x != 0) return false;
      a += 32;
      b += 32;
    }
  }
  while (a + 8 <= end) {
    if (load<u64>(a) != load<u64>(b)) return false;
    a += 8;
    b += 8;
  }
  while (a < end) {
    if (load<u8>(a) != load<u8>(b)) return false;
    a++;
    b++;
  }
  return true;
}

// @ts-ignore: decorator
@inline function blockCount(len: usize, blockSize: usize): usize {
  return (len + blockSize - 1) / blockSize;
}

// @ts-ignore: decorator
@inline function setBit(out: usize, i: usize): void {
  const q = out + (i >> 3);
  store<u8>(q, <u32>load<u8>(q) | (1 << <u32>(i & 7)));
}

/** Bitmap at `out` (ceil(blocks / 8) bytes, fully written) of the all-zero blocks of `len` bytes at `p`. */
export function zeroBlocks(p: usize, len: usize, blockSize: usize, out: usize): void {
  const n = blockCount(len, blockSize);
  memory.fill(out, 0, (n + 7) >> 3);
  for (let i: usize = 0; i < n; i++) {
    const off = i * blockSize;
    if (isZero(p + off, min(blockSize, len - off))) setBit(out, i);
  }
}

/** Bitmap at `out` of the blocks where the `len` bytes at `a` and at `b` differ. */
export function diffBlocks(a: usize, b: usize, len: usize, blockSize: usize, out: usize): void {
  const n = blockCount(len, blockSize);
  memory.fill(out, 0, (n + 7) >> 3);
  for (let i: usize = 0; i < n; i++) {
    const off = i * blockSize;
    if (!isEqual(a + off, b + off, min(blockSize, len - off))) setBit(out, i);
  }
}
