import { describe, expect, it } from 'vitest';
import { VhdsyncError } from '../host/errors.js';
import { loadCoreSync, type Core, type WasmRegion } from '../host/core/index.js';

const core = loadCoreSync();
const data = new Uint8Array(1000);

/** Runs `fn` and returns the VhdsyncError it threw (failing if it threw anything else). */
function coreError(fn: () => unknown): VhdsyncError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VhdsyncError);
    const err = e as VhdsyncError;
    expect(err.code).toBe('CORE');
    expect(err.message).not.toContain('\n'); // one clear line
    return err;
  }
  throw new Error('expected a CORE error, nothing was thrown');
}

describe('the core refuses bad input with a CORE error, never a trap or a wrong answer', () => {
  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '4096' as unknown as number])(
    'block size %s is refused by every block method',
    (bs) => {
      const region = core.alloc(4096);
      for (const call of [
        () => core.hashBlocks(data, bs),
        () => core.zeroBlocks(data, bs),
        () => core.diffBlocks(data, data, bs),
        () => core.hashBlocksIn(region, 0, 100, bs),
        () => core.zeroBlocksIn(region, 0, 100, bs),
        () => core.diffBlocksIn(region, 0, region, 0, 100, bs),
      ]) {
        expect(coreError(call).message).toMatch(/blockSize must be an integer >= 1/);
      }
      region.free();
    },
  );

  it.each([1, 0, -2, 2.5])('hashTree fanout %s is refused (a tree needs fanout >= 2)', (fanout) => {
    expect(coreError(() => core.hashTree(new Uint8Array(64), fanout)).message).toMatch(/fanout/);
  });

  it('hashTree refuses child digests that are not whole 16-byte digests', () => {
    expect(coreError(() => core.hashTree(new Uint8Array(33), 4)).message).toMatch(/multiple of 16/);
  });

  it('diffBlocks refuses buffers of different lengths, naming both', () => {
    expect(coreError(() => core.diffBlocks(new Uint8Array(10), new Uint8Array(11), 4)).message).toMatch(/10.*11/);
  });

  it('refuses inputs that are not Uint8Arrays', () => {
    coreError(() => core.hash128([1, 2, 3] as unknown as Uint8Array));
    coreError(() => core.crc32c('abc' as unknown as Uint8Array));
  });

  it('vhdChecksum refuses a checksum field outside the bytes', () => {
    coreError(() => core.vhdChecksum(new Uint8Array(512), 509));
    coreError(() => core.vhdChecksum(new Uint8Array(512), -1));
    coreError(() => core.vhdChecksum(new Uint8Array(3), 0));
  });

  it('decodeBat refuses a count that needs more bytes than given', () => {
    expect(coreError(() => core.decodeBat(new Uint8Array(8), 3)).message).toMatch(/12 bytes/);
    coreError(() => core.decodeBat(new Uint8Array(8), -1));
  });

  it('bitmap methods refuse ranges outside the bitmap', () => {
    const bitmap = new Uint8Array(2);
    coreError(() => core.bitmapCount(bitmap, 10, 7));
    coreError(() => core.bitmapCount(bitmap, -1, 2));
    coreError(() => core.bitmapSet(bitmap, 0, 17, true));
    coreError(() => core.bitmapSet(bitmap, 0, 1, 1 as unknown as boolean));
    expect(bitmap).toEqual(new Uint8Array(2)); // nothing was written
  });

  it('crc32c refuses a running value that is not a u32', () => {
    coreError(() => core.crc32c(data, -1));
    coreError(() => core.crc32c(data, 2 ** 32));
  });

  it('alloc refuses empty, negative, fractional and oversized regions', () => {
    for (const size of [0, -1, 1.5, 2 ** 31]) coreError(() => core.alloc(size));
  });

  it('in-place methods refuse ranges outside the region', () => {
    const region = core.alloc(4096);
    expect(coreError(() => core.hashBlocksIn(region, 4000, 97, 16)).message).toMatch(/\[4000, 4097\) is outside region/);
    coreError(() => core.hash128In(region, -1, 10));
    coreError(() => core.zeroBlocksIn(region, 0, 4097, 16));
    coreError(() => core.diffBlocksIn(region, 0, region, 1, 4096, 16));
    region.free();
  });

  it('freed regions are refused everywhere, and a double free is an error', () => {
    const region = core.alloc(4096);
    region.free();
    expect(coreError(() => core.hashBlocksIn(region, 0, 10, 4)).message).toMatch(/freed/);
    expect(coreError(() => region.bytes()).message).toMatch(/after free/);
    expect(coreError(() => region.free()).message).toMatch(/twice/);
  });

  it('regions of another core instance or look-alike objects are refused', () => {
    const other: Core = loadCoreSync();
    const foreign = other.alloc(64);
    coreError(() => core.hashBlocksIn(foreign, 0, 64, 16));
    const fake: WasmRegion = { ptr: 0, size: 1 << 20, bytes: () => new Uint8Array(0), free: () => {} };
    expect(coreError(() => core.hashBlocksIn(fake, 0, 64, 16)).message).toMatch(/not a region allocated by this core/);
  });
});
