// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), used by VHDX headers, region and
// metadata tables ([MS-VHDX] 2.2.2) and every tracking-log record. WASM has no CRC instruction, so
// this is table-driven slicing-by-8: eight 256-entry tables, 8 input bytes per step. One stream of
// steps waits on each step's table loads; three independent streams over three stripes of the input
// keep the CPU busy meanwhile (~1.5x), and are joined by CRC arithmetic: the state after stripe A
// then B is A's state multiplied by x^(8 |B|) mod P, xor B's state from zero.

// @ts-ignore: decorator
@inline const POLY: u32 = 0x82F63B78;

/** TABLES + k * 1024: table k. Table 0 is the classic byte table; table k advances k more bytes. */
const TABLES: usize = memory.data(8 * 256 * 4, 16);

function initTables(): void {
  for (let i: u32 = 0; i < 256; i++) {
    let c = i;
    for (let b = 0; b < 8; b++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    store<u32>(TABLES + (<usize>i << 2), c);
  }
  for (let i: usize = 0; i < 256; i++) {
    let c = load<u32>(TABLES + (i << 2));
    for (let k: usize = 1; k < 8; k++) {
      c = load<u32>(TABLES + ((<usize>(c & 0xFF)) << 2)) ^ (c >>> 8);
      store<u32>(TABLES + (k << 10) + (i << 2), c);
    }
  }
}

/** a * b mod P, both in the reflected representation (bit 31 is x^0). */
function mulmod(a: u32, b: u32): u32 {
  let p: u32 = 0;
  for (let m: u32 = 0x80000000; m !== 0; m >>>= 1) {
    if (a & m) p ^= b;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p;
}

/** x^(8n) mod P: what appending n zero bytes multiplies a CRC state by. */
function shiftBytes(n: usize): u32 {
  let r: u32 = 0x80000000; // x^0
  let sq: u32 = 0x00800000; // x^8
  for (; n !== 0; n >>= 1) {
    if (n & 1) r = mulmod(r, sq);
    sq = mulmod(sq, sq);
  }
  return r;
}

// Stripe lengths: multiples of 8, and not of 4096 (three loads 4 KiB apart alias in the CPU's
// load/store checks).
// @ts-ignore: decorator
@inline const LONG: usize = 5440;
// @ts-ignore: decorator
@inline const SHORT: usize = 320;
let SHIFT_LONG: u32 = 0;
let SHIFT_SHORT: u32 = 0;

initTables(); // runs in the module's start function, once per instance
SHIFT_LONG = shiftBytes(LONG);
SHIFT_SHORT = shiftBytes(SHORT);

// @ts-ignore: decorator
@inline function T(k: usize, i: u32): u32 {
  return load<u32>(TABLES + (k << 10) + (<usize>(i & 0xFF) << 2));
}

/** One slicing-by-8 step: the state `c` after the 8 bytes at `p`. */
// @ts-ignore: decorator
@inline function step8(c: u32, p: usize): u32 {
  const one = load<u32>(p) ^ c;
  const two = load<u32>(p, 4);
  return T(7, one) ^ T(6, one >>> 8) ^ T(5, one >>> 16) ^ T(4, one >>> 24) ^
    T(3, two) ^ T(2, two >>> 8) ^ T(1, two >>> 16) ^ T(0, two >>> 24);
}

/** The state `c` after three stripes of `n` bytes from `p`, run side by side. */
// @ts-ignore: decorator
@inline function threeStripes(c: u32, p: usize, n: usize, shift: u32): u32 {
  let a = c;
  let b: u32 = 0;
  let d: u32 = 0;
  for (const end = p + n; p < end; p += 8) {
    a = step8(a, p);
    b = step8(b, p + n);
    d = step8(d, p + 2 * n);
  }
  return mulmod(mulmod(a, shift) ^ b, shift) ^ d;
}

/**
 * CRC-32C of `len` bytes at `p`, continuing from `crc` (0 to start): crc32c(b, crc32c(a)) equals
 * crc32c(a ++ b). Pre- and post-inversion are applied here, as in the standard definition.
 */
export function crc32c(p: usize, len: usize, crc: u32): u32 {
  let c = ~crc;
  const end = p + len;
  for (; end - p >= 3 * LONG; p += 3 * LONG) c = threeStripes(c, p, LONG, SHIFT_LONG);
  for (; end - p >= 3 * SHORT; p += 3 * SHORT) c = threeStripes(c, p, SHORT, SHIFT_SHORT);
  for (; p + 8 <= end; p += 8) c = step8(c, p);
  while (p < end) {
    c = T(0, c ^ <u32>load<u8>(p)) ^ (c >>> 8);
    p++;
  }
  return ~c;
}
