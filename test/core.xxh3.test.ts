import { beforeAll, describe, expect, it } from 'vitest';
import type { Core } from '../host/core/index.js';
import { hex, randomBytes } from './support/bytes.js';
import { BUILDS, coreFor, oracle128 } from './support/core-reference.js';

let xxh128: (data: Uint8Array) => string;
beforeAll(async () => {
  xxh128 = await oracle128();
});

describe.each(BUILDS)('XXH3-128 ($name build)', ({ simd }) => {
  let core: Core;
  beforeAll(() => {
    core = coreFor(simd);
  });

  it('matches the published digest of the empty input (xxhsum -H2)', () => {
    expect(hex(core.hash128(new Uint8Array(0)))).toBe('99aa06d3014798d86001c324468d497f');
  });

  it('equals hash-wasm xxhash128 for every length 0..4096 (all four length paths)', () => {
    const data = randomBytes(4096, 7);
    const mismatches: number[] = [];
    for (let len = 0; len <= 4096; len++) {
      const input = data.subarray(0, len);
      if (hex(core.hash128(input)) !== xxh128(input)) mismatches.push(len);
    }
    expect(mismatches).toEqual([]);
  });

  it('equals hash-wasm for inputs that differ only in their last byte', () => {
    // Catches a long loop that skips the final partial stripe.
    for (const len of [16, 17, 128, 129, 240, 241, 1024, 1025, 4097]) {
      const a = randomBytes(len, len);
      const b = a.slice();
      b[len - 1] ^= 1;
      expect(hex(core.hash128(a))).toBe(xxh128(a));
      expect(hex(core.hash128(b))).toBe(xxh128(b));
      expect(hex(core.hash128(a))).not.toBe(hex(core.hash128(b)));
    }
  });

  it.each([
    ['1 MiB', 1 << 20],
    ['2 MiB - 1', (2 << 20) - 1],
    ['2 MiB', 2 << 20],
    ['2 MiB + 1', (2 << 20) + 1],
    ['8 MiB', 8 << 20],
  ])('equals hash-wasm for a %s buffer', (_name, len) => {
    const data = randomBytes(len, len);
    expect(hex(core.hash128(data))).toBe(xxh128(data));
  });

  it('equals hash-wasm at misaligned offsets in WASM memory (hash128In)', () => {
    const region = core.alloc(8192 + 64);
    const data = randomBytes(8192 + 64, 3);
    region.bytes().set(data);
    for (let offset = 0; offset < 16; offset++) {
      for (const len of [0, 1, 3, 4, 8, 9, 16, 17, 100, 128, 129, 200, 240, 241, 1000, 1024, 1025, 8192]) {
        expect(hex(core.hash128In(region, offset, len)), `offset ${offset} length ${len}`).toBe(
          xxh128(data.subarray(offset, offset + len)),
        );
      }
    }
    region.free();
  });

  it('equals hash-wasm for a JS input that is a misaligned view into a larger buffer', () => {
    const big = randomBytes(70_000, 11);
    for (const offset of [1, 3, 7, 13]) {
      const view = big.subarray(offset, offset + 65_537);
      expect(hex(core.hash128(view))).toBe(xxh128(view));
    }
  });
});

describe('SIMD and scalar builds', () => {
  it('give identical digests for random lengths and contents', () => {
    const scalar = coreFor(false);
    const simd = coreFor(true);
    for (let i = 0; i < 300; i++) {
      const len = (i * 7919) % 20_000;
      const data = randomBytes(len, i + 100);
      expect(hex(simd.hash128(data))).toBe(hex(scalar.hash128(data)));
    }
  });
});
