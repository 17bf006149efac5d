import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Core } from '../host/core/index.js';
import { hex, randomBytes } from './support/bytes.js';
import { BUILDS, coreFor, refDiffBlocks, refZeroBlocks } from './support/core-reference.js';

/** Mostly-zero data with a few non-zero bytes sprinkled at chosen positions. */
function sparse(length: number, positions: number[]): Uint8Array {
  const data = new Uint8Array(length);
  for (const p of positions) if (p < length) data[p] = 1 + (p % 255);
  return data;
}

describe.each(BUILDS)('block tests ($name build)', ({ simd }) => {
  let core: Core;
  beforeAll(() => {
    core = coreFor(simd);
  });

  it.each([1, 3, 8, 63, 64, 65, 512, 4096, 100_000])('zeroBlocks(blockSize %i) equals the TS reference', (blockSize) => {
    const len = 300_000 + (blockSize % 7);
    // Non-zero bytes at block edges (first/last byte), inside v128 words and in the scalar tail.
    const positions = [0, 63, 64, 4095, 4096, 8191, 12_345, 65_536 * 2 + 31, len - 1];
    const data = sparse(len, positions);
    expect(hex(core.zeroBlocks(data, blockSize))).toBe(hex(refZeroBlocks(data, blockSize)));
  });

  it('zeroBlocks finds every single non-zero byte position in a 4 KiB block', () => {
    for (let p = 0; p < 4096; p += 1) {
      const data = sparse(3 * 4096, [4096 + p]);
      expect(hex(core.zeroBlocks(data, 4096))).toBe('05'); // blocks 0 and 2 zero, block 1 not
    }
  });

  it('zeroBlocks handles the empty buffer and a partial last block', () => {
    expect(core.zeroBlocks(new Uint8Array(0), 4096).length).toBe(0);
    const data = new Uint8Array(4096 + 10);
    expect(hex(core.zeroBlocks(data, 4096))).toBe('03');
    data[4096 + 9] = 1;
    expect(hex(core.zeroBlocks(data, 4096))).toBe('01');
  });

  it.each([1, 5, 64, 4096, 65_536, 1 << 20])('diffBlocks(blockSize %i) equals the TS reference', (blockSize) => {
    const a = randomBytes(2_500_000, blockSize);
    const b = a.slice();
    for (const p of [0, 1, 4095, 4096, 70_000, 1_048_575, 1_048_576, 2_499_999]) b[p] ^= 0x40;
    expect(hex(core.diffBlocks(a, b, blockSize))).toBe(hex(refDiffBlocks(a, b, blockSize)));
  });

  it('diffBlocks and zeroBlocks agree with the references on random inputs (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20_000 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (len, blockSize, flips) => {
          const a = new Uint8Array(len);
          const b = new Uint8Array(len);
          for (const f of flips) if (len > 0) b[f % len] = 1;
          expect(hex(core.diffBlocks(a, b, blockSize))).toBe(hex(refDiffBlocks(a, b, blockSize)));
          expect(hex(core.zeroBlocks(b, blockSize))).toBe(hex(refZeroBlocks(b, blockSize)));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('zeroBlocksIn and diffBlocksIn work in place, at misaligned offsets', () => {
    const a = core.alloc(1 << 20);
    const b = core.alloc(1 << 20);
    const data = sparse(1 << 20, [5, 4100, 9000, 500_000]);
    a.bytes().set(data);
    b.bytes().set(data);
    b.bytes()[300_001] = 9;
    for (const off of [0, 1, 7, 15]) {
      const len = (1 << 20) - 32;
      expect(hex(core.zeroBlocksIn(a, off, len, 4096))).toBe(hex(refZeroBlocks(data.subarray(off, off + len), 4096)));
      const bData = b.bytes().slice(off + 3, off + 3 + len);
      expect(hex(core.diffBlocksIn(a, off, b, off + 3, len, 4096))).toBe(
        hex(refDiffBlocks(data.subarray(off, off + len), bData, 4096)),
      );
    }
    expect(hex(core.diffBlocksIn(a, 0, a, 0, 1 << 20, 4096))).toBe(hex(new Uint8Array(32)));
    a.free();
    b.free();
  });
});

describe('SIMD and scalar builds', () => {
  it('give identical bitmaps', () => {
    const scalar = coreFor(false);
    const simd = coreFor(true);
    const a = randomBytes(1 << 20, 5);
    const z = sparse(1 << 20, [1, 77_777, 500_000, 1_048_575]);
    const b = a.slice();
    b[123_456] ^= 1;
    for (const bs of [3, 64, 4096]) {
      expect(hex(simd.zeroBlocks(z, bs))).toBe(hex(scalar.zeroBlocks(z, bs)));
      expect(hex(simd.diffBlocks(a, b, bs))).toBe(hex(scalar.diffBlocks(a, b, bs)));
    }
  });
});
