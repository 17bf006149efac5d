import { beforeAll, describe, expect, it } from 'vitest';
import type { Core } from '../host/core/index.js';
import { hex, randomBytes } from './support/bytes.js';
import { BUILDS, coreFor, oracle128 } from './support/core-reference.js';

let xxh128: (data: Uint8Array) => string;
beforeAll(async () => {
  xxh128 = await oracle128();
});

/** Reference: hash-wasm over each block, partial last block over its real length. */
function refBlocks(data: Uint8Array, blockSize: number): string {
  let out = '';
  for (let i = 0; i < data.length; i += blockSize) out += xxh128(data.subarray(i, i + blockSize));
  return out;
}

describe.each(BUILDS)('batch digests ($name build)', ({ simd }) => {
  let core: Core;
  beforeAll(() => {
    core = coreFor(simd);
  });

  it.each([
    [4096, 4096 * 16],
    [4096, 4096 * 16 + 1000], // partial last block
    [4096, 100], // one short block
    [512, 512 * 1000 + 1], // last block of 1 byte, blocks spanning several staged pieces
    [65536, (1 << 20) + 12345],
    [2 << 20, (5 << 20) - 7], // blocks larger than a staged piece
    [240, 240 * 9 + 17],
    [1, 33],
    [7, 1000], // block size that does not divide a piece
  ])('hashBlocks(blockSize %i) over %i bytes equals per-block hash-wasm digests', (blockSize, len) => {
    const data = randomBytes(len, blockSize + len);
    const digests = core.hashBlocks(data, blockSize);
    expect(digests.length).toBe(Math.ceil(len / blockSize) * 16);
    expect(hex(digests)).toBe(refBlocks(data, blockSize));
  });

  it('hashBlocks of an empty buffer is empty, and a block size above the length gives one digest', () => {
    expect(core.hashBlocks(new Uint8Array(0), 4096).length).toBe(0);
    const data = randomBytes(1000, 5);
    expect(hex(core.hashBlocks(data, 2 ** 40))).toBe(xxh128(data));
  });

  it('hashBlocks agrees with hash128 of each block (batch vs one-shot)', () => {
    const data = randomBytes(50_000, 9);
    const digests = core.hashBlocks(data, 4096);
    for (let i = 0; i * 4096 < data.length; i++) {
      expect(hex(digests.subarray(i * 16, i * 16 + 16))).toBe(hex(core.hash128(data.subarray(i * 4096, (i + 1) * 4096))));
    }
  });

  it('hashBlocksIn hashes in place exactly like hashBlocks on a copy', () => {
    const region = core.alloc(3 << 20);
    const data = randomBytes(3 << 20, 21);
    region.bytes().set(data);
    for (const [offset, length, blockSize] of [
      [0, 3 << 20, 4096],
      [1, (2 << 20) + 5, 65536],
      [4093, 1 << 20, 2 << 20],
      [17, 0, 4096],
      [5, 123_457, 4096],
    ]) {
      expect(hex(core.hashBlocksIn(region, offset, length, blockSize))).toBe(
        hex(core.hashBlocks(data.subarray(offset, offset + length), blockSize)),
      );
    }
    region.free();
  });

  it.each([2, 3, 16, 64, 256])('hashTree(fanout %i) equals hash128 of each run of concatenated child digests', (fanout) => {
    const leaves = core.hashBlocks(randomBytes(300 * 4096 + 100, fanout), 4096); // 301 leaves
    const parents = core.hashTree(leaves, fanout);
    const n = leaves.length / 16;
    expect(parents.length).toBe(Math.ceil(n / fanout) * 16);
    for (let g = 0; g * fanout < n; g++) {
      const children = leaves.subarray(g * fanout * 16, Math.min((g + 1) * fanout, n) * 16);
      expect(hex(parents.subarray(g * 16, g * 16 + 16))).toBe(xxh128(children));
    }
  });

  it('hashTree climbs to a single root equal to hashing the top level by hand', () => {
    let level = core.hashBlocks(randomBytes(1 << 20, 77), 4096); // 256 leaves
    while (level.length > 16) level = core.hashTree(level, 16);
    const byHand = core.hash128(core.hashTree(core.hashBlocks(randomBytes(1 << 20, 77), 4096), 16));
    expect(hex(level)).toBe(hex(byHand));
  });
});

describe('SIMD and scalar builds', () => {
  it('give identical batch digests and tree levels', () => {
    const scalar = coreFor(false);
    const simd = coreFor(true);
    const data = randomBytes((1 << 20) + 333, 42);
    for (const bs of [64, 1000, 4096, 65536]) {
      const a = scalar.hashBlocks(data, bs);
      expect(hex(simd.hashBlocks(data, bs))).toBe(hex(a));
      expect(hex(simd.hashTree(a, 8))).toBe(hex(scalar.hashTree(a, 8)));
    }
  });
});
