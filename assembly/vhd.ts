// VHD on-disk helpers (Microsoft "Virtual Hard Disk Image Format Specification" v1.0):
// the footer/header checksum, the big-endian Block Allocation Table, and the per-block sector
// bitmap of dynamic and differencing disks.

/**
 * Footer/dynamic-header checksum (spec: "Hard Disk Footer Format", Checksum): the one's complement
 * of the sum of all bytes, with the 4 checksum bytes at `checksumOffset` counted as zero.
 */
export function vhdChecksum(p: usize, len: usize, checksumOffset: usize): u32 {
  let sum: u32 = 0;
  for (let i: usize = 0; i < len; i++) sum += <u32>load<u8>(p + i);
  for (let i: usize = 0; i < 4; i++) sum -= <u32>load<u8>(p + checksumOffset + i);
  return ~sum;
}

/** Decode `count` big-endian u32 BAT entries at `p` into native u32s at `out` (may equal `p`). */
export function decodeBat(p: usize, count: usize, out: usize): void {
  let i: usize = 0;
  if (ASC_FEATURE_SIMD) {
    for (; i + 4 <= count; i += 4) {
      const v = v128.load(p + (i << 2));
      v128.store(out + (i << 2), i8x16.shuffle(v, v, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12));
    }
  }
  for (; i < count; i++) store<u32>(out + (i << 2), bswap<u32>(load<u32>(p + (i << 2))));
}

// Sector bitmaps are MSB-first (spec: "Block Allocation Table and Data Blocks"): sector 0 of a
// block is bit 7 of byte 0. A bit range [first, end) covers a head byte, whole bytes, a tail byte.

// @ts-ignore: decorator
@inline function headMask(first: usize): u32 {
  return 0xFF >> <u32>(first & 7);
}

// @ts-ignore: decorator
@inline function tailMask(last: usize): u32 {
  return (0xFF << (7 - <u32>(last & 7))) & 0xFF;
}

/** Number of set bits in [first, first + count) of the MSB-first bitmap at `p`. */
export function bitmapCount(p: usize, first: usize, count: usize): u32 {
  if (count == 0) return 0;
  const last = first + count - 1;
  const b0 = first >> 3, b1 = last >> 3;
  if (b0 == b1) return popcnt<u32>(<u32>load<u8>(p + b0) & headMask(first) & tailMask(last));
  let n = popcnt<u32>(<u32>load<u8>(p + b0) & headMask(first)) + popcnt<u32>(<u32>load<u8>(p + b1) & tailMask(last));
  // Whole bytes between: bit order does not matter for a count.
  let q = p + b0 + 1;
  const end = p + b1;
  while (q + 8 <= end) {
    n += <u32>popcnt<u64>(load<u64>(q));
    q += 8;
  }
  while (q < end) {
    n += popcnt<u32>(<u32>load<u8>(q));
    q++;
  }
  return n;
}

/** Set (`value`) or clear the bits [first, first + count) of the MSB-first bitmap at `p`. */
export function bitmapSet(p: usize, first: usize, count: usize, value: bool): void {
  if (count == 0) return;
  const last = first + count - 1;
  const b0 = first >> 3, b1 = last >> 3;
  if (b0 == b1) {
    const m = headMask(first) & tailMask(last);
    const v = <u32>load<u8>(p + b0);
    store<u8>(p + b0, <u8>(value ? v | m : v & ~m));
    return;
  }
  const h = headMask(first), t = tailMask(last);
  const v0 = <u32>load<u8>(p + b0), v1 = <u32>load<u8>(p + b1);
  store<u8>(p + b0, <u8>(value ? v0 | h : v0 & ~h));
  store<u8>(p + b1, <u8>(value ? v1 | t : v1 & ~t));
  if (b1 > b0 + 1) memory.fill(p + b0 + 1, value ? 0xFF : 0, b1 - b0 - 1);
}
