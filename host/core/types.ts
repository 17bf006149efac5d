/**
 * The typed facade over the WebAssembly core. Browser-safe: nothing here imports `node:`.
 *
 * Conventions shared by every method:
 * - Digests are XXH3-128 in canonical byte order (16 bytes, as `xxhsum -H2` prints them).
 * - "Blocks" of a buffer are consecutive `blockSize`-byte slices; the last one may be shorter
 *   (a partial last block is hashed / tested over its real length).
 * - Bitmaps returned by batch calls are LSB-first: bit (i & 7) of byte (i >> 3) is block i.
 */
export interface Core {
  /** True when the SIMD build was loaded. */
  readonly simd: boolean;

  /** XXH3-128 of `data` (any length, including 0). */
  hash128(data: Uint8Array): Uint8Array;
  /** Digest of every `blockSize` block of `data`: ceil(len / blockSize) × 16 bytes. */
  hashBlocks(data: Uint8Array, blockSize: number): Uint8Array;
  /**
   * One level of a hash tree: each run of `fanout` 16-byte child digests is hashed (XXH3-128 of the
   * concatenated digests) into one parent digest. Returns ceil(n / fanout) × 16 bytes.
   */
  hashTree(childDigests: Uint8Array, fanout: number): Uint8Array;
  /** Bitmap of the blocks of `data` that are entirely zero. */
  zeroBlocks(data: Uint8Array, blockSize: number): Uint8Array;
  /** Bitmap of the blocks where `a` and `b` (same length) differ. */
  diffBlocks(a: Uint8Array, b: Uint8Array, blockSize: number): Uint8Array;

  /** VHD checksum: one's complement of the byte sum, with the 4 bytes at `checksumOffset` taken as 0. */
  vhdChecksum(bytes: Uint8Array, checksumOffset: number): number;
  /** Decode `count` big-endian u32 BAT entries. */
  decodeBat(bytes: Uint8Array, count: number): Uint32Array;
  /** CRC-32C (Castagnoli) of `bytes`, continuing from `crc` (default 0). */
  crc32c(bytes: Uint8Array, crc?: number): number;
  /**
   * VHD sector bitmap (MSB-first: the first sector is the top bit of byte 0): count the set bits in
   * [first, first + count).
   */
  bitmapCount(bitmap: Uint8Array, first: number, count: number): number;
  /** Set (value = true) or clear the bits [first, first + count) of a VHD sector bitmap in place. */
  bitmapSet(bitmap: Uint8Array, first: number, count: number, value: boolean): void;

  /**
   * Zero-copy path: a region of WASM linear memory that the caller fills (for example with
   * `fs.read` straight into `region.bytes()`) and then hashes in place with the `*In` methods.
   */
  alloc(size: number): WasmRegion;
  /** Like hash128 over `length` bytes at `offset` inside `region`, without copying the data. */
  hash128In(region: WasmRegion, offset: number, length: number): Uint8Array;
  /** Like hashBlocks over `length` bytes at `offset` inside `region`, without copying the data. */
  hashBlocksIn(region: WasmRegion, offset: number, length: number, blockSize: number): Uint8Array;
  /** Like zeroBlocks, in place. */
  zeroBlocksIn(region: WasmRegion, offset: number, length: number, blockSize: number): Uint8Array;
  /** Like diffBlocks over two in-place ranges. */
  diffBlocksIn(a: WasmRegion, aOffset: number, b: WasmRegion, bOffset: number, length: number, blockSize: number): Uint8Array;
}

export interface WasmRegion {
  /** Byte offset of the region in linear memory. */
  readonly ptr: number;
  readonly size: number;
  /** A view of the region, re-created if memory grew since the last call. Do not keep it across core calls that allocate. */
  bytes(): Uint8Array;
  /** Give the region back. Regions are meant to be long-lived (one per worker or stream). */
  free(): void;
}
