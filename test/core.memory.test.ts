import { describe, expect, it } from 'vitest';
import { getCore, loadCore, loadCoreSync, type WasmRegion } from '../host/core/index.js';
import { VhdsyncError } from '../host/errors.js';
import { hex, randomBytes } from './support/bytes.js';
import { BUILDS, oracle128 } from './support/core-reference.js';

describe.each(BUILDS)('WASM memory ($name build)', ({ simd }) => {
  it('regions keep their contents and digests when memory grows, and bytes() follows the new buffer', async () => {
    const xxh128 = await oracle128();
    const core = loadCoreSync({ simd });
    const small = core.alloc(64 * 1024);
    const content = randomBytes(64 * 1024, 1);
    small.bytes().set(content);
    const before = small.bytes();
    const big = core.alloc(256 << 20); // forces memory.grow: the old ArrayBuffer is detached
    expect(before.byteLength).toBe(0);
    expect(hex(small.bytes())).toBe(hex(content));
    expect(hex(core.hash128In(small, 0, content.length))).toBe(xxh128(content));

    // Fill the far end of the big region through a fresh view and hash it in place.
    const tail = randomBytes(1 << 20, 2);
    big.bytes().set(tail, big.size - tail.length);
    expect(hex(core.hashBlocksIn(big, big.size - tail.length, tail.length, 4096))).toBe(hex(core.hashBlocks(tail, 4096)));
    // JS-input methods stage through the scratch arena and still work after growth.
    expect(hex(core.hash128(content))).toBe(xxh128(content));
    big.free();
    small.free();
  });

  it('a freed region is reused by the next allocation that fits, without growing memory', () => {
    const core = loadCoreSync({ simd });
    const a = core.alloc(8 << 20);
    const ptr = a.ptr;
    a.free();
    const b = core.alloc(4 << 20);
    expect(b.ptr).toBe(ptr);
    b.free();
  });

  it('an allocation past the 4 GiB address space is a CORE error, and earlier regions stay intact', () => {
    // The stub allocator would wrap its 32-bit offset here and hand out memory already in use.
    const core = loadCoreSync({ simd });
    const regions: WasmRegion[] = [];
    let error: unknown;
    try {
      for (let i = 0; i < 8; i++) regions.push(core.alloc(2 ** 30 - 64));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VhdsyncError);
    expect((error as VhdsyncError).code).toBe('CORE');
    expect((error as VhdsyncError).message).toMatch(/out of WebAssembly memory/);
    expect(regions.length).toBeGreaterThanOrEqual(2);
    const ends = regions.map((r) => r.ptr + r.size);
    regions.forEach((r, i) => {
      if (i > 0) expect(r.ptr).toBeGreaterThanOrEqual(ends[i - 1]); // no overlap
      r.bytes()[r.size - 1] = i + 1;
    });
    regions.forEach((r, i) => expect(r.bytes()[r.size - 1]).toBe(i + 1));
    expect(hex(core.hash128(new Uint8Array(0)))).toBe('99aa06d3014798d86001c324468d497f');
    for (const r of regions) r.free();
  });

  it('staging a JS input larger than the scratch arena grows it and gives correct results', () => {
    const core = loadCoreSync({ simd });
    const data = randomBytes(20 << 20, 3); // a single 20 MiB block must be staged whole
    const digest = hex(core.hashBlocks(data, 32 << 20));
    expect(digest).toBe(hex(core.hash128(data)));
    expect(hex(core.hashBlocks(data.subarray(0, 4096), 4096))).toBe(hex(core.hash128(data.subarray(0, 4096))));
  });
});

describe('loading', () => {
  it('loadCore (async) and loadCoreSync give the same digests; getCore is one cached instance', async () => {
    const data = randomBytes(10_000, 4);
    const a = await loadCore();
    const b = loadCoreSync();
    expect(hex(a.hash128(data))).toBe(hex(b.hash128(data)));
    expect(getCore()).toBe(getCore());
  });

  it('loadCoreSync({ simd: false }) forces the scalar build; the default picks SIMD on Node 20', () => {
    expect(loadCoreSync({ simd: false }).simd).toBe(false);
    expect(loadCoreSync().simd).toBe(true);
  });

  it('VHDSYNC_CORE=scalar in the environment forces the scalar build; an explicit option wins', () => {
    const saved = process.env.VHDSYNC_CORE;
    process.env.VHDSYNC_CORE = 'scalar';
    try {
      expect(loadCoreSync().simd).toBe(false);
      expect(loadCoreSync({ simd: true }).simd).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.VHDSYNC_CORE;
      else process.env.VHDSYNC_CORE = saved;
    }
  });
});
