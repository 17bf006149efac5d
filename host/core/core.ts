/**
 * The `Core` facade over one instance of the WebAssembly core.
 *
 * JS inputs are copied into a scratch arena in linear memory in pieces of about 256 KiB (pieces
 * that stay in L2 hashed ~20% faster than whole 2 MiB copies in the reference measurements), so a
 * call on a multi-GiB buffer never needs a multi-GiB arena. The `*In` methods work in place over
 * regions the caller filled itself (zero copy). Every argument is checked here, so bad input is a
 * VhdsyncError('CORE', ...) and never a wasm trap or a silently wrong answer.
 * Browser-safe: no `node:` imports.
 */
import { VhdsyncError } from '../errors.js';
import type { Core, WasmRegion } from './types.js';
import { type CoreExports, MemoryViews } from './wasm.js';

/** Target size of one staged piece of a JS input. */
const PIECE = 256 * 1024;
/** The stub allocator refuses blocks of 1 GiB or more (BLOCK_MAXSIZE), and a region has a 16-byte header. */
const MAX_ALLOC = 2 ** 30 - 64;
const DIGEST = 16;

function fail(message: string): never {
  throw new VhdsyncError('CORE', `core: ${message}`);
}

function checkBytes(name: string, value: unknown): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) fail(`${name} must be a Uint8Array`);
}

function checkInt(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    fail(`${name} must be ${range} (got ${String(value)})`);
  }
}

function checkBlockSize(blockSize: unknown): asserts blockSize is number {
  checkInt('blockSize', blockSize, 1);
}

/** Blocks per staged piece: a multiple of 8 when possible, so each piece fills whole bitmap bytes. */
function blocksPerPiece(blockSize: number): number {
  const k = Math.floor(PIECE / blockSize);
  if (k >= 8) return k - (k % 8);
  return Math.max(k, 1);
}

/** The block size handed to wasm: never 0 (a division there would trap), never above the data. */
function kernelBlock(blockSize: number, length: number): number {
  return Math.max(1, Math.min(blockSize, length));
}

function align16(n: number): number {
  return Math.ceil(n / 16) * 16;
}

/** OR `count` LSB-first bits from `src` into `dst` starting at bit `at`. */
function mergeBits(dst: Uint8Array, at: number, src: Uint8Array, count: number): void {
  if (at % 8 === 0) {
    dst.set(src.subarray(0, Math.ceil(count / 8)), at / 8);
    return;
  }
  for (let i = 0; i < count; i++) {
    if (src[i >> 3] & (1 << (i & 7))) dst[(at + i) >> 3] |= 1 << ((at + i) & 7);
  }
}

class Region implements WasmRegion {
  private view: Uint8Array | undefined;
  freed = false;

  constructor(
    readonly owner: WasmCore,
    readonly ptr: number,
    readonly size: number,
  ) {}

  bytes(): Uint8Array {
    if (this.freed) fail('region used after free()');
    const mem = this.owner.views.u8;
    if (this.view === undefined || this.view.buffer !== mem.buffer) {
      this.view = mem.subarray(this.ptr, this.ptr + this.size);
    }
    return this.view;
  }

  free(): void {
    if (this.freed) fail('region freed twice');
    this.freed = true;
    this.view = undefined;
    this.owner.release(this.ptr);
  }
}

export class WasmCore implements Core {
  readonly simd: boolean;
  readonly views: MemoryViews;
  private scratchPtr = 0;
  private scratchSize = 0;

  constructor(private readonly x: CoreExports) {
    this.simd = x.simd() === 1;
    this.views = new MemoryViews(x.memory);
    this.scratch(2 * PIECE + 4096); // room for two staged pieces and their results from the start
  }

  // --- memory ----------------------------------------------------------------------------------

  /** Raw allocation; a trap (memory exhausted) becomes a CORE error. */
  private allocRaw(size: number): number {
    if (size > MAX_ALLOC) fail(`cannot allocate ${size} bytes of WebAssembly memory (limit ${MAX_ALLOC})`);
    let ptr: number;
    try {
      ptr = this.x.alloc(size) >>> 0;
    } catch (e) {
      // The engine refused to grow memory (the stub allocator traps then).
      throw new VhdsyncError('CORE', `core: out of WebAssembly memory allocating ${size} bytes`, { cause: e });
    }
    if (ptr === 0) fail(`out of WebAssembly memory allocating ${size} bytes (the 4 GiB address space is full)`);
    return ptr;
  }

  release(ptr: number): void {
    this.x.free(ptr);
  }

  /** A scratch arena of at least `size` bytes (grown geometrically; its content is not kept). */
  private scratch(size: number): number {
    if (size > this.scratchSize) {
      const next = Math.min(Math.max(size, this.scratchSize * 2, 64 * 1024), Math.max(size, MAX_ALLOC));
      const ptr = this.allocRaw(next);
      if (this.scratchSize > 0) this.x.free(this.scratchPtr);
      this.scratchPtr = ptr;
      this.scratchSize = next;
    }
    return this.scratchPtr;
  }

  alloc(size: number): WasmRegion {
    checkInt('region size', size, 1, MAX_ALLOC);
    return new Region(this, this.allocRaw(size), size);
  }

  private checkRegion(name: string, region: unknown, offset: unknown, length: unknown): asserts region is Region {
    if (!(region instanceof Region) || region.owner !== this) fail(`${name} is not a region allocated by this core`);
    if (region.freed) fail(`${name} was freed`);
    checkInt(`${name} offset`, offset, 0);
    checkInt(`${name} length`, length, 0);
    if (offset + length > region.size) {
      fail(`range [${offset}, ${offset + length}) is outside ${name} (${region.size} bytes)`);
    }
  }

  /** Copy `length` bytes at `ptr` into a fresh JS array (results must outlive the scratch). */
  private take(ptr: number, length: number): Uint8Array {
    return this.views.u8.slice(ptr, ptr + length);
  }

  // --- hashing ---------------------------------------------------------------------------------

  hash128(data: Uint8Array): Uint8Array {
    checkBytes('data', data);
    const base = this.scratch(DIGEST + data.length);
    this.views.u8.set(data, base + DIGEST);
    this.x.xxh3_128(base + DIGEST, data.length, base);
    return this.take(base, DIGEST);
  }

  /** Added to the interface: XXH3-128 of a range of a region, in place. */
  hash128In(region: WasmRegion, offset: number, length: number): Uint8Array {
    this.checkRegion('region', region, offset, length);
    const out = this.scratch(DIGEST);
    this.x.xxh3_128(region.ptr + offset, length, out);
    return this.take(out, DIGEST);
  }

  hashBlocks(data: Uint8Array, blockSize: number): Uint8Array {
    checkBytes('data', data);
    checkBlockSize(blockSize);
    return this.digestPieces(data, blockSize);
  }

  hashTree(childDigests: Uint8Array, fanout: number): Uint8Array {
    checkBytes('childDigests', childDigests);
    checkInt('fanout', fanout, 2);
    if (childDigests.length % DIGEST !== 0) {
      fail(`childDigests length ${childDigests.length} is not a multiple of ${DIGEST}`);
    }
    // A parent digest is XXH3-128 over its children's concatenated digests: blocks of fanout x 16 bytes.
    return this.digestPieces(childDigests, fanout * DIGEST);
  }

  /** Stage `data` piece by piece (whole blocks per piece) and hash every block. */
  private digestPieces(data: Uint8Array, blockSize: number): Uint8Array {
    const total = Math.ceil(data.length / blockSize);
    const result = new Uint8Array(total * DIGEST);
    const perPiece = blocksPerPiece(blockSize);
    for (let block = 0; block < total; block += perPiece) {
      const start = block * blockSize;
      const len = Math.min(perPiece * blockSize, data.length - start);
      const n = Math.ceil(len / blockSize);
      const base = this.scratch(n * DIGEST + len);
      const input = base + n * DIGEST;
      const mem = this.views.u8;
      mem.set(data.subarray(start, start + len), input);
      this.x.hashBlocks(input, len, kernelBlock(blockSize, len), base);
      result.set(this.views.u8.subarray(base, base + n * DIGEST), block * DIGEST);
    }
    return result;
  }

  hashBlocksIn(region: WasmRegion, offset: number, length: number, blockSize: number): Uint8Array {
    this.checkRegion('region', region, offset, length);
    checkBlockSize(blockSize);
    const n = Math.ceil(length / blockSize);
    const out = this.scratch(n * DIGEST);
    this.x.hashBlocks(region.ptr + offset, length, kernelBlock(blockSize, length), out);
    return this.take(out, n * DIGEST);
  }

  // --- block tests -----------------------------------------------------------------------------

  zeroBlocks(data: Uint8Array, blockSize: number): Uint8Array {
    checkBytes('data', data);
    checkBlockSize(blockSize);
    return this.bitmapPieces([data], blockSize, ([p], len, bs, out) => this.x.zeroBlocks(p, len, bs, out));
  }

  diffBlocks(a: Uint8Array, b: Uint8Array, blockSize: number): Uint8Array {
    checkBytes('a', a);
    checkBytes('b', b);
    checkBlockSize(blockSize);
    if (a.length !== b.length) fail(`diffBlocks needs equal lengths (a is ${a.length} bytes, b is ${b.length})`);
    return this.bitmapPieces([a, b], blockSize, ([pa, pb], len, bs, out) => this.x.diffBlocks(pa, pb, len, bs, out));
  }

  /** Stage the inputs piece by piece and merge each piece's bitmap into the result. */
  private bitmapPieces(
    inputs: Uint8Array[],
    blockSize: number,
    kernel: (ptrs: number[], len: number, blockSize: number, out: number) => void,
  ): Uint8Array {
    const length = inputs[0].length;
    const total = Math.ceil(length / blockSize);
    const result = new Uint8Array(Math.ceil(total / 8));
    const perPiece = blocksPerPiece(blockSize);
    for (let block = 0; block < total; block += perPiece) {
      const start = block * blockSize;
      const len = Math.min(perPiece * blockSize, length - start);
      const n = Math.ceil(len / blockSize);
      const mapBytes = Math.ceil(n / 8);
      const stride = align16(len); // keep every staged input 16-byte aligned
      const base = this.scratch(align16(mapBytes) + stride * inputs.length);
      const first = base + align16(mapBytes);
      const mem = this.views.u8;
      const ptrs = inputs.map((input, i) => {
        mem.set(input.subarray(start, start + len), first + i * stride);
        return first + i * stride;
      });
      kernel(ptrs, len, kernelBlock(blockSize, len), base);
      mergeBits(result, block, this.views.u8.subarray(base, base + mapBytes), n);
    }
    return result;
  }

  zeroBlocksIn(region: WasmRegion, offset: number, length: number, blockSize: number): Uint8Array {
    this.checkRegion('region', region, offset, length);
    checkBlockSize(blockSize);
    const mapBytes = Math.ceil(Math.ceil(length / blockSize) / 8);
    const out = this.scratch(mapBytes);
    this.x.zeroBlocks(region.ptr + offset, length, kernelBlock(blockSize, length), out);
    return this.take(out, mapBytes);
  }

  diffBlocksIn(a: WasmRegion, aOffset: number, b: WasmRegion, bOffset: number, length: number, blockSize: number): Uint8Array {
    this.checkRegion('region a', a, aOffset, length);
    this.checkRegion('region b', b, bOffset, length);
    checkBlockSize(blockSize);
    const mapBytes = Math.ceil(Math.ceil(length / blockSize) / 8);
    const out = this.scratch(mapBytes);
    this.x.diffBlocks(a.ptr + aOffset, b.ptr + bOffset, length, kernelBlock(blockSize, length), out);
    return this.take(out, mapBytes);
  }

  // --- VHD / VHDX structures -------------------------------------------------------------------

  vhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
    checkBytes('bytes', bytes);
    if (bytes.length < 4) fail(`vhdChecksum needs at least 4 bytes (got ${bytes.length})`);
    checkInt('checksumOffset', checksumOffset, 0, bytes.length - 4);
    const base = this.scratch(bytes.length);
    this.views.u8.set(bytes, base);
    return this.x.vhdChecksum(base, bytes.length, checksumOffset) >>> 0;
  }

  decodeBat(bytes: Uint8Array, count: number): Uint32Array {
    checkBytes('bytes', bytes);
    checkInt('count', count, 0);
    if (count * 4 > bytes.length) fail(`BAT of ${count} entries needs ${count * 4} bytes (got ${bytes.length})`);
    const result = new Uint32Array(count);
    const perPiece = PIECE / 4;
    for (let i = 0; i < count; i += perPiece) {
      const n = Math.min(perPiece, count - i);
      const base = this.scratch(n * 4);
      this.views.u8.set(bytes.subarray(i * 4, (i + n) * 4), base);
      this.x.decodeBat(base, n, base); // in place
      result.set(this.views.u32(base, n), i);
    }
    return result;
  }

  crc32c(bytes: Uint8Array, crc = 0): number {
    checkBytes('bytes', bytes);
    checkInt('crc', crc, 0, 0xffffffff);
    let c = crc;
    for (let start = 0; start < bytes.length; start += PIECE) {
      const len = Math.min(PIECE, bytes.length - start);
      const base = this.scratch(len);
      this.views.u8.set(bytes.subarray(start, start + len), base);
      c = this.x.crc32c(base, len, c) >>> 0;
    }
    return c; // CRC of nothing: the running value unchanged
  }

  bitmapCount(bitmap: Uint8Array, first: number, count: number): number {
    let total = 0;
    this.bitmapWindows('bitmapCount', bitmap, first, count, (ptr, localFirst, bits) => {
      total += this.x.bitmapCount(ptr, localFirst, bits) >>> 0;
      return false;
    });
    return total;
  }

  bitmapSet(bitmap: Uint8Array, first: number, count: number, value: boolean): void {
    if (typeof value !== 'boolean') fail(`bitmapSet value must be a boolean (got ${String(value)})`);
    this.bitmapWindows('bitmapSet', bitmap, first, count, (ptr, localFirst, bits) => {
      this.x.bitmapSet(ptr, localFirst, bits, value ? 1 : 0);
      return true;
    });
  }

  /**
   * Walk the bit range [first, first + count) in windows of at most PIECE bytes: stage each
   * window's bytes, run `op` on window-relative bits, and copy the bytes back when `op` says so.
   */
  private bitmapWindows(
    name: string,
    bitmap: Uint8Array,
    first: number,
    count: number,
    op: (ptr: number, localFirst: number, bits: number) => boolean,
  ): void {
    checkBytes('bitmap', bitmap);
    checkInt(`${name} first`, first, 0);
    checkInt(`${name} count`, count, 0);
    if (first + count > bitmap.length * 8) {
      fail(`${name}: bits [${first}, ${first + count}) are outside a bitmap of ${bitmap.length * 8} bits`);
    }
    while (count > 0) {
      const startByte = Math.floor(first / 8);
      const localFirst = first % 8;
      const bits = Math.min(count, PIECE * 8 - localFirst);
      const endByte = Math.floor((first + bits - 1) / 8) + 1;
      const base = this.scratch(endByte - startByte);
      this.views.u8.set(bitmap.subarray(startByte, endByte), base);
      if (op(base, localFirst, bits)) bitmap.set(this.views.u8.subarray(base, base + endByte - startByte), startByte);
      first += bits;
      count -= bits;
    }
  }
}
