// XXH3-128, seed 0, default secret: the block digest of vhdsync.
//
// Follows the XXH3 description in xxHash's doc/xxhash_spec.md and the reference xxhash.h (v0.8):
// four length classes (0-16, 17-128, 129-240, > 240) with their own mixing, and a "long" loop of
// 64-byte stripes over 8 u64 accumulators for anything above 240 bytes. The output is written in
// the canonical form (XXH128_canonicalFromHash): high64 big-endian, then low64 big-endian, which
// is what `xxhsum -H2` prints.
//
// Results come back through memory (never as u64 returns: those become BigInts on the JS side).

import { accumulateSimd } from './xxh3.simd';

// @ts-ignore: decorator
@inline const PRIME32_1: u64 = 0x9E3779B1;
// @ts-ignore: decorator
@inline const PRIME32_2: u64 = 0x85EBCA77;
// @ts-ignore: decorator
@inline const PRIME32_3: u64 = 0xC2B2AE3D;
// @ts-ignore: decorator
@inline const PRIME64_1: u64 = 0x9E3779B185EBCA87;
// @ts-ignore: decorator
@inline const PRIME64_2: u64 = 0xC2B2AE3D27D4EB4F;
// @ts-ignore: decorator
@inline const PRIME64_3: u64 = 0x165667B19E3779F9;
// @ts-ignore: decorator
@inline const PRIME64_4: u64 = 0x85EBCA77C2B2AE63;
// @ts-ignore: decorator
@inline const PRIME64_5: u64 = 0x27D4EB2F165667C5;
// @ts-ignore: decorator
@inline const PRIME_MX1: u64 = 0x165667919E3779F9;
// @ts-ignore: decorator
@inline const PRIME_MX2: u64 = 0x9FB21C651E98DF25;

// @ts-ignore: decorator
@inline export const STRIPE_LEN: usize = 64;
// @ts-ignore: decorator
@inline const SECRET_SIZE: usize = 192;
// Stripes per block: (secret size - stripe) / 8 bytes of secret consumed per stripe (spec: "block").
// @ts-ignore: decorator
@inline const STRIPES_PER_BLOCK: usize = (SECRET_SIZE - STRIPE_LEN) / 8;
// @ts-ignore: decorator
@inline const BLOCK_LEN: usize = STRIPE_LEN * STRIPES_PER_BLOCK;

/** The default 192-byte secret (kSecret in the reference). */
export const SECRET: usize = memory.data<u8>([
  0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
  0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
  0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
  0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
  0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
  0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
  0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
  0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
  0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
  0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
  0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
  0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
], 16);

/**
 * The 8 long-loop accumulators. They live in memory between calls to `accumulate` (one call per
 * 1 KiB block) and in locals inside it: keeping them in memory inside the stripe loop was 1.7-3x
 * slower in the reference spike.
 */
export const ACC: usize = memory.data(64, 16);

// The two halves of a 128-bit result, set by the helpers below (AS has no multi-value returns).
let LO: u64 = 0;
let HI: u64 = 0;

// ---------------------------------------------------------------------------------------------
// Arithmetic helpers. WASM has no 64x64->128 multiply, so it is built from four 32x32->64 ones.

/** 64x64 -> 128 multiply: returns the low half, leaves the high half in MUL_HI. */
let MUL_HI: u64 = 0;
// @ts-ignore: decorator
@inline function mul128(a: u64, b: u64): u64 {
  const aLo = a & 0xFFFFFFFF, aHi = a >> 32;
  const bLo = b & 0xFFFFFFFF, bHi = b >> 32;
  const loLo = aLo * bLo;
  const hiLo = aHi * bLo;
  const loHi = aLo * bHi;
  const hiHi = aHi * bHi;
  const cross = (loLo >> 32) + (hiLo & 0xFFFFFFFF) + loHi;
  MUL_HI = (hiLo >> 32) + (cross >> 32) + hiHi;
  return (cross << 32) | (loLo & 0xFFFFFFFF);
}

/** Low half xor high half of the 128-bit product (XXH3_mul128_fold64). */
// @ts-ignore: decorator
@inline function mulFold64(a: u64, b: u64): u64 {
  const lo = mul128(a, b);
  return lo ^ MUL_HI;
}

// @ts-ignore: decorator
@inline function xxh64Avalanche(h: u64): u64 {
  h ^= h >> 33;
  h *= PRIME64_2;
  h ^= h >> 29;
  h *= PRIME64_3;
  return h ^ (h >> 32);
}

// @ts-ignore: decorator
@inline function xxh3Avalanche(h: u64): u64 {
  h ^= h >> 37;
  h *= PRIME_MX1;
  return h ^ (h >> 32);
}

// @ts-ignore: decorator
@inline function mix16B(p: usize, s: usize): u64 {
  return mulFold64(load<u64>(p) ^ load<u64>(s), load<u64>(p, 8) ^ load<u64>(s, 8));
}

/** XXH128_mix32B over (LO, HI) as the accumulator pair. */
// @ts-ignore: decorator
@inline function mix32B(p1: usize, p2: usize, s: usize): void {
  LO = (LO + mix16B(p1, s)) ^ (load<u64>(p2) + load<u64>(p2, 8));
  HI = (HI + mix16B(p2, s + 16)) ^ (load<u64>(p1) + load<u64>(p1, 8));
}

// ---------------------------------------------------------------------------------------------
// Short inputs (spec: "Small inputs", "Medium inputs").

function len0(): void {
  LO = xxh64Avalanche(load<u64>(SECRET, 64) ^ load<u64>(SECRET, 72));
  HI = xxh64Avalanche(load<u64>(SECRET, 80) ^ load<u64>(SECRET, 88));
}

function len1to3(p: usize, len: usize): void {
  const c1 = <u32>load<u8>(p);
  const c2 = <u32>load<u8>(p + (len >> 1));
  const c3 = <u32>load<u8>(p + len - 1);
  const combinedLo: u32 = (c1 << 16) | (c2 << 24) | c3 | (<u32>len << 8);
  const combinedHi: u32 = rotl<u32>(bswap<u32>(combinedLo), 13);
  const flipLo = <u64>(load<u32>(SECRET) ^ load<u32>(SECRET, 4));
  const flipHi = <u64>(load<u32>(SECRET, 8) ^ load<u32>(SECRET, 12));
  LO = xxh64Avalanche(<u64>combinedLo ^ flipLo);
  HI = xxh64Avalanche(<u64>combinedHi ^ flipHi);
}

function len4to8(p: usize, len: usize): void {
  const inLo = <u64>load<u32>(p);
  const inHi = <u64>load<u32>(p + len - 4);
  const keyed = (inLo + (inHi << 32)) ^ (load<u64>(SECRET, 16) ^ load<u64>(SECRET, 24));
  let lo = mul128(keyed, PRIME64_1 + (<u64>len << 2));
  let hi = MUL_HI;
  hi += lo << 1;
  lo ^= hi >> 3;
  lo ^= lo >> 35;
  lo *= PRIME_MX2;
  lo ^= lo >> 28;
  LO = lo;
  HI = xxh3Avalanche(hi);
}

function len9to16(p: usize, len: usize): void {
  const flipLo = load<u64>(SECRET, 32) ^ load<u64>(SECRET, 40);
  const flipHi = load<u64>(SECRET, 48) ^ load<u64>(SECRET, 56);
  const inLo = load<u64>(p);
  let inHi = load<u64>(p + len - 8);
  let mLo = mul128(inLo ^ inHi ^ flipLo, PRIME64_1);
  let mHi = MUL_HI;
  mLo += <u64>(len - 1) << 54;
  inHi ^= flipHi;
  mHi += inHi + (inHi & 0xFFFFFFFF) * (PRIME32_2 - 1);
  mLo ^= bswap<u64>(mHi);
  const lo = mul128(mLo, PRIME64_2);
  const hi = MUL_HI + mHi * PRIME64_2;
  LO = xxh3Avalanche(lo);
  HI = xxh3Avalanche(hi);
}

/** The finish shared by the 17-128 and 129-240 paths (seed 0). */
// @ts-ignore: decorator
@inline function finishMid(len: usize): void {
  const lo = LO + HI;
  const hi = LO * PRIME64_1 + HI * PRIME64_4 + <u64>len * PRIME64_2;
  LO = xxh3Avalanche(lo);
  HI = 0 - xxh3Avalanche(hi);
}

function len17to128(p: usize, len: usize): void {
  LO = <u64>len * PRIME64_1;
  HI = 0;
  if (len > 32) {
    if (len > 64) {
      if (len > 96) mix32B(p + 48, p + len - 64, SECRET + 96);
      mix32B(p + 32, p + len - 48, SECRET + 64);
    }
    mix32B(p + 16, p + len - 32, SECRET + 32);
  }
  mix32B(p, p + len - 16, SECRET);
  finishMid(len);
}

function len129to240(p: usize, len: usize): void {
  LO = <u64>len * PRIME64_1;
  HI = 0;
  for (let i: usize = 32; i < 160; i += 32) mix32B(p + i - 32, p + i - 16, SECRET + i - 32);
  LO = xxh3Avalanche(LO);
  HI = xxh3Avalanche(HI);
  // `i <= len` repeats the last 32 bytes when len % 32 == 0: kept as the reference does, for
  // stable digests. Secret offset 3 = XXH3_MIDSIZE_STARTOFFSET.
  for (let i: usize = 160; i <= len; i += 32) mix32B(p + i - 32, p + i - 16, SECRET + 3 + i - 160);
  // Last 32 bytes, in swapped order, at secret 136 - 17 - 16 (SECRET_SIZE_MIN - MIDSIZE_LASTOFFSET - 16).
  mix32B(p + len - 16, p + len - 32, SECRET + 103);
  finishMid(len);
}

// ---------------------------------------------------------------------------------------------
// Long inputs (spec: "Large inputs"): stripes of 64 bytes, blocks of 16 stripes, a scramble of
// the accumulators after each full block, then a last partial block and one last stripe.

/** Stripe loop over `nStripes` stripes at `p`, secret advancing 8 bytes a stripe; then optionally scramble. */
function accumulateScalar(p: usize, nStripes: usize, scramble: bool): void {
  let a0 = load<u64>(ACC, 0), a1 = load<u64>(ACC, 8), a2 = load<u64>(ACC, 16), a3 = load<u64>(ACC, 24);
  let a4 = load<u64>(ACC, 32), a5 = load<u64>(ACC, 40), a6 = load<u64>(ACC, 48), a7 = load<u64>(ACC, 56);
  let s = SECRET;
  for (let n: usize = 0; n < nStripes; n++) {
    // acc[i ^ 1] += data[i]; acc[i] += lo32(data[i] ^ key[i]) * hi32(data[i] ^ key[i])
    const d0 = load<u64>(p, 0), d1 = load<u64>(p, 8), d2 = load<u64>(p, 16), d3 = load<u64>(p, 24);
    const d4 = load<u64>(p, 32), d5 = load<u64>(p, 40), d6 = load<u64>(p, 48), d7 = load<u64>(p, 56);
    const k0 = d0 ^ load<u64>(s, 0), k1 = d1 ^ load<u64>(s, 8), k2 = d2 ^ load<u64>(s, 16), k3 = d3 ^ load<u64>(s, 24);
    const k4 = d4 ^ load<u64>(s, 32), k5 = d5 ^ load<u64>(s, 40), k6 = d6 ^ load<u64>(s, 48), k7 = d7 ^ load<u64>(s, 56);
    a0 += d1 + (k0 & 0xFFFFFFFF) * (k0 >> 32);
    a1 += d0 + (k1 & 0xFFFFFFFF) * (k1 >> 32);
    a2 += d3 + (k2 & 0xFFFFFFFF) * (k2 >> 32);
    a3 += d2 + (k3 & 0xFFFFFFFF) * (k3 >> 32);
    a4 += d5 + (k4 & 0xFFFFFFFF) * (k4 >> 32);
    a5 += d4 + (k5 & 0xFFFFFFFF) * (k5 >> 32);
    a6 += d7 + (k6 & 0xFFFFFFFF) * (k6 >> 32);
    a7 += d6 + (k7 & 0xFFFFFFFF) * (k7 >> 32);
    p += STRIPE_LEN;
    s += 8;
  }
  if (scramble) {
    // acc = (acc ^ (acc >> 47) ^ key) * PRIME32_1, key = last 64 bytes of the secret.
    const k = SECRET + SECRET_SIZE - STRIPE_LEN;
    a0 = (a0 ^ (a0 >> 47) ^ load<u64>(k, 0)) * PRIME32_1;
    a1 = (a1 ^ (a1 >> 47) ^ load<u64>(k, 8)) * PRIME32_1;
    a2 = (a2 ^ (a2 >> 47) ^ load<u64>(k, 16)) * PRIME32_1;
    a3 = (a3 ^ (a3 >> 47) ^ load<u64>(k, 24)) * PRIME32_1;
    a4 = (a4 ^ (a4 >> 47) ^ load<u64>(k, 32)) * PRIME32_1;
    a5 = (a5 ^ (a5 >> 47) ^ load<u64>(k, 40)) * PRIME32_1;
    a6 = (a6 ^ (a6 >> 47) ^ load<u64>(k, 48)) * PRIME32_1;
    a7 = (a7 ^ (a7 >> 47) ^ load<u64>(k, 56)) * PRIME32_1;
  }
  store<u64>(ACC, a0, 0); store<u64>(ACC, a1, 8); store<u64>(ACC, a2, 16); store<u64>(ACC, a3, 24);
  store<u64>(ACC, a4, 32); store<u64>(ACC, a5, 40); store<u64>(ACC, a6, 48); store<u64>(ACC, a7, 56);
}

/** One stripe with an arbitrary secret pointer (only the very last stripe needs that). */
function lastStripeScalar(p: usize, s: usize): void {
  for (let i: usize = 0; i < 8; i++) {
    const d = load<u64>(p + (i << 3));
    const k = d ^ load<u64>(s + (i << 3));
    const a = ACC + (i << 3);
    store<u64>(a, load<u64>(a) + (k & 0xFFFFFFFF) * (k >> 32));
    const b = ACC + ((i ^ 1) << 3);
    store<u64>(b, load<u64>(b) + d);
  }
}

// @ts-ignore: decorator
@inline function accumulate(p: usize, nStripes: usize, scramble: bool): void {
  if (ASC_FEATURE_SIMD) accumulateSimd(p, nStripes, SECRET, scramble, SECRET + SECRET_SIZE - STRIPE_LEN);
  else accumulateScalar(p, nStripes, scramble);
}

/** XXH3_mergeAccs: fold the 8 accumulators into one u64 with 64 bytes of secret at `s`. */
function mergeAccs(s: usize, start: u64): u64 {
  let r = start;
  r += mulFold64(load<u64>(ACC, 0) ^ load<u64>(s, 0), load<u64>(ACC, 8) ^ load<u64>(s, 8));
  r += mulFold64(load<u64>(ACC, 16) ^ load<u64>(s, 16), load<u64>(ACC, 24) ^ load<u64>(s, 24));
  r += mulFold64(load<u64>(ACC, 32) ^ load<u64>(s, 32), load<u64>(ACC, 40) ^ load<u64>(s, 40));
  r += mulFold64(load<u64>(ACC, 48) ^ load<u64>(s, 48), load<u64>(ACC, 56) ^ load<u64>(s, 56));
  return xxh3Avalanche(r);
}

function hashLong(p: usize, len: usize): void {
  store<u64>(ACC, PRIME32_3, 0); store<u64>(ACC, PRIME64_1, 8);
  store<u64>(ACC, PRIME64_2, 16); store<u64>(ACC, PRIME64_3, 24);
  store<u64>(ACC, PRIME64_4, 32); store<u64>(ACC, PRIME32_2, 40);
  store<u64>(ACC, PRIME64_5, 48); store<u64>(ACC, PRIME32_1, 56);

  const nBlocks = (len - 1) / BLOCK_LEN;
  for (let b: usize = 0; b < nBlocks; b++) accumulate(p + b * BLOCK_LEN, STRIPES_PER_BLOCK, true);
  // Last partial block: whole stripes only, never the final byte (hence len - 1), no scramble.
  const tail = p + nBlocks * BLOCK_LEN;
  accumulate(tail, ((len - 1) - nBlocks * BLOCK_LEN) / STRIPE_LEN, false);
  // Last stripe: the final 64 bytes, secret at SECRET_SIZE - 64 - 7 (XXH_SECRET_LASTACC_START).
  if (ASC_FEATURE_SIMD) accumulateSimd(p + len - STRIPE_LEN, 1, SECRET + SECRET_SIZE - STRIPE_LEN - 7, false, 0);
  else lastStripeScalar(p + len - STRIPE_LEN, SECRET + SECRET_SIZE - STRIPE_LEN - 7);

  // 11 = XXH_SECRET_MERGEACCS_START.
  LO = mergeAccs(SECRET + 11, <u64>len * PRIME64_1);
  HI = mergeAccs(SECRET + SECRET_SIZE - STRIPE_LEN - 11, ~(<u64>len * PRIME64_2));
}

// ---------------------------------------------------------------------------------------------

/** XXH3-128 of `len` bytes at `p`; writes the 16-byte canonical digest at `out`. */
export function xxh3_128(p: usize, len: usize, out: usize): void {
  if (len <= 16) {
    if (len > 8) len9to16(p, len);
    else if (len >= 4) len4to8(p, len);
    else if (len > 0) len1to3(p, len);
    else len0();
  } else if (len <= 128) {
    len17to128(p, len);
  } else if (len <= 240) {
    len129to240(p, len);
  } else {
    hashLong(p, len);
  }
  store<u64>(out, bswap<u64>(HI), 0);
  store<u64>(out, bswap<u64>(LO), 8);
}
