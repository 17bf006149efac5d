// The XXH3 long loop with v128 lanes (SIMD build only; reached from xxh3.ts behind ASC_FEATURE_SIMD).
//
// XXH3 was designed for 32x32->64 vector multiplies (SSE2 pmuludq, NEON vmull): each stripe does
// acc[i] += lo32(k) * hi32(k) and acc[i ^ 1] += data[i]. In WASM that is `i64x2.extmul_low_i32x4_u`
// over the low/high halves gathered by a shuffle, which gained 1.5-2.3x over scalar in the
// reference measurements. (`i64x2.mul` would be slower than scalar: x64 has no 64-bit lane multiply.)

import { ACC, STRIPE_LEN } from './xxh3';

// @ts-ignore: decorator
@inline const PRIME32_1: u32 = 0x9E3779B1;

/** acc + lo32(k) * hi32(k) per 64-bit lane, + the data with its two 64-bit lanes swapped. */
// @ts-ignore: decorator
@inline function lane(acc: v128, d: v128, s: v128): v128 {
  const k = v128.xor(d, s);
  // Gather [k0.lo, k1.lo] and [k0.hi, k1.hi] into i32 lanes 0-1, then one widening multiply.
  const prod = i64x2.extmul_low_i32x4_u(i32x4.shuffle(k, k, 0, 2, 0, 2), i32x4.shuffle(k, k, 1, 3, 1, 3));
  return i64x2.add(i64x2.add(acc, prod), i64x2.shuffle(d, d, 1, 0));
}

/** (acc ^ (acc >> 47) ^ key) * PRIME32_1, the 64x32 multiply split into two widening ones. */
// @ts-ignore: decorator
@inline function scrambleLane(acc: v128, key: v128): v128 {
  const x = v128.xor(v128.xor(acc, i64x2.shr_u(acc, 47)), key);
  const prime = i32x4.splat(PRIME32_1);
  const lo = i64x2.extmul_low_i32x4_u(i32x4.shuffle(x, x, 0, 2, 0, 2), prime);
  const hi = i64x2.extmul_low_i32x4_u(i32x4.shuffle(x, x, 1, 3, 1, 3), prime);
  return i64x2.add(lo, i64x2.shl(hi, 32));
}

/**
 * `nStripes` stripes from `p`, secret starting at `s` and advancing 8 bytes a stripe; then, if
 * `scramble`, the scramble with the 64 key bytes at `key`. Accumulators are loaded from and
 * stored back to ACC once per call (one call per 1 KiB block).
 */
export function accumulateSimd(p: usize, nStripes: usize, s: usize, scramble: bool, key: usize): void {
  let a0 = v128.load(ACC, 0), a1 = v128.load(ACC, 16), a2 = v128.load(ACC, 32), a3 = v128.load(ACC, 48);
  for (let n: usize = 0; n < nStripes; n++) {
    a0 = lane(a0, v128.load(p, 0), v128.load(s, 0));
    a1 = lane(a1, v128.load(p, 16), v128.load(s, 16));
    a2 = lane(a2, v128.load(p, 32), v128.load(s, 32));
    a3 = lane(a3, v128.load(p, 48), v128.load(s, 48));
    p += STRIPE_LEN;
    s += 8;
  }
  if (scramble) {
    a0 = scrambleLane(a0, v128.load(key, 0));
    a1 = scrambleLane(a1, v128.load(key, 16));
    a2 = scrambleLane(a2, v128.load(key, 32));
    a3 = scrambleLane(a3, v128.load(key, 48));
  }
  v128.store(ACC, a0, 0); v128.store(ACC, a1, 16); v128.store(ACC, a2, 32); v128.store(ACC, a3, 48);
}
