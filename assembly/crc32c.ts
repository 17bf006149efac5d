// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), used by VHDX headers, region and
// metadata tables ([MS-VHDX] 2.2.2). WASM has no CRC instruction, so this is table-driven
// slicing-by-8: eight 256-entry tables, 8 input bytes per step.

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
initTables(); // runs in the module's start function, once per instance

// @ts-ignore: decorator
@inline function T(k: usize, i: u32): u32 {
  return load<u32>(TABLES + (k << 10) + (<usize>(i & 0xFF) << 2));
}

/**
 * CRC-32C of `len` bytes at `p`, continuing from `crc` (0 to start): crc32c(b, crc32c(a)) equals
 * crc32c(a ++ b). Pre- and post-inversion are applied here, as in the standard definition.
 */
export function crc32c(p: usize, len: usize, crc: u32): u32 {
  let c = ~crc;
  const end = p + len;
  while (p + 8 <= end) {
    const one = load<u32>(p) ^ c;
    const two = load<u32>(p, 4);
    c = T(7, one) ^ T(6, one >>> 8) ^ T(5, one >>> 16) ^ T(4, one >>> 24) ^
      T(3, two) ^ T(2, two >>> 8) ^ T(1, two >>> 16) ^ T(0, two >>> 24);
    p += 8;
  }
  while (p < end) {
    c = T(0, c ^ <u32>load<u8>(p)) ^ (c >>> 8);
    p++;
  }
  return ~c;
}
