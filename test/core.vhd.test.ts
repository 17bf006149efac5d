import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Core } from '../host/core/index.js';
import { hex, randomBytes } from './support/bytes.js';
import { BUILDS, coreFor, refBitmapCount, refBitmapSet, refVhdChecksum } from './support/core-reference.js';
import { tempDir, removeDir } from './support/temp-dir.js';

const be32 = (bytes: Uint8Array, at: number) => new DataView(bytes.buffer, bytes.byteOffset).getUint32(at, false);
const be64 = (bytes: Uint8Array, at: number) => Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(at, false));

/** Real images made by qemu-img / qemu-io (the interop oracle for the on-disk layout). */
let dir: string;
let fixedVhd: Uint8Array;
let dynamicVhd: Uint8Array;
beforeAll(() => {
  dir = tempDir('vhdsync-core-').dir;
  const fixed = join(dir, 'fixed.vhd');
  const dynamic = join(dir, 'dynamic.vhd');
  execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', fixed, '8M']);
  execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', dynamic, '64M']);
  // Data in blocks 0 and 5 (2 MiB blocks): those two BAT entries become allocated.
  execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0xab 0 4k', '-c', 'write -P 0xcd 10M 4k', dynamic], { stdio: 'ignore' });
  // Plain Uint8Arrays: Buffer#slice would share memory and let one test corrupt another's input.
  fixedVhd = new Uint8Array(readFileSync(fixed));
  dynamicVhd = new Uint8Array(readFileSync(dynamic));
});
afterAll(() => removeDir(dir));

describe.each(BUILDS)('VHD helpers ($name build)', ({ simd }) => {
  let core: Core;
  beforeAll(() => {
    core = coreFor(simd);
  });

  it('vhdChecksum reproduces the checksum qemu-img wrote in a fixed disk footer', () => {
    const footer = fixedVhd.subarray(fixedVhd.length - 512);
    expect(new TextDecoder().decode(footer.subarray(0, 8))).toBe('conectix');
    expect(core.vhdChecksum(footer, 64)).toBe(be32(footer, 64));
  });

  it('vhdChecksum reproduces the checksums of a dynamic disk footer and dynamic header', () => {
    const footer = dynamicVhd.subarray(0, 512);
    const header = dynamicVhd.subarray(512, 1536);
    expect(new TextDecoder().decode(header.subarray(0, 8))).toBe('cxsparse');
    expect(core.vhdChecksum(footer, 64)).toBe(be32(footer, 64));
    expect(core.vhdChecksum(header, 36)).toBe(be32(header, 36));
  });

  it('vhdChecksum detects a flipped bit and ignores the checksum field itself', () => {
    const footer = fixedVhd.slice(fixedVhd.length - 512);
    const good = core.vhdChecksum(footer, 64);
    footer.fill(0x5a, 64, 68);
    expect(core.vhdChecksum(footer, 64)).toBe(good);
    footer[100] ^= 1;
    expect(core.vhdChecksum(footer, 64)).not.toBe(good);
  });

  it('vhdChecksum equals the TS reference on random bytes at random offsets', () => {
    for (let i = 0; i < 50; i++) {
      const bytes = randomBytes(4 + ((i * 97) % 5000), i + 1);
      const off = (i * 31) % (bytes.length - 3);
      expect(core.vhdChecksum(bytes, off)).toBe(refVhdChecksum(bytes, off));
    }
  });

  it('decodeBat reads the BAT of a qemu-made dynamic disk: blocks 0 and 5 allocated, the rest unused', () => {
    const header = dynamicVhd.subarray(512, 1536);
    const tableOffset = be64(header, 16);
    const entries = be32(header, 28);
    expect(be32(header, 32)).toBe(2 << 20); // block size
    expect(entries).toBe(Math.ceil(be64(dynamicVhd, 48) / (2 << 20))); // current size (CHS-rounded) / block size
    const bat = core.decodeBat(dynamicVhd.subarray(tableOffset, tableOffset + entries * 4), entries);
    for (let i = 0; i < entries; i++) expect(bat[i]).toBe(be32(dynamicVhd, tableOffset + i * 4));
    const allocated = [...bat].flatMap((e, i) => (e === 0xffffffff ? [] : [i]));
    expect(allocated).toEqual([0, 5]);
    // The sector bitmap of block 0 sits at the sector the BAT names; count it against the reference.
    const bitmap = dynamicVhd.subarray(bat[0] * 512, bat[0] * 512 + 512);
    expect(core.bitmapCount(bitmap, 0, 4096)).toBe(refBitmapCount(bitmap, 0, 4096));
    expect(core.bitmapCount(bitmap, 0, 8)).toBe(8); // the 4 KiB written at offset 0 = sectors 0..7
  });

  it('decodeBat equals DataView big-endian reads for every count 0..40 and a large table', () => {
    const bytes = randomBytes(4 * 300_000, 99);
    for (let count = 0; count <= 40; count++) {
      const bat = core.decodeBat(bytes.subarray(1, 1 + count * 4 + 3), count); // misaligned source
      for (let i = 0; i < count; i++) expect(bat[i]).toBe(be32(bytes, 1 + i * 4));
    }
    const big = core.decodeBat(bytes, 300_000); // spans several staged pieces
    for (let i = 0; i < 300_000; i += 997) expect(big[i]).toBe(be32(bytes, i * 4));
    expect(big[299_999]).toBe(be32(bytes, 299_999 * 4));
  });

  it('bitmapCount and bitmapSet are MSB-first: the first sector is the top bit of byte 0', () => {
    const bitmap = new Uint8Array(2);
    core.bitmapSet(bitmap, 0, 1, true);
    expect(hex(bitmap)).toBe('8000');
    core.bitmapSet(bitmap, 7, 2, true);
    expect(hex(bitmap)).toBe('8180');
    expect(core.bitmapCount(bitmap, 0, 16)).toBe(3);
    expect(core.bitmapCount(bitmap, 1, 6)).toBe(0);
    core.bitmapSet(bitmap, 0, 16, false);
    expect(hex(bitmap)).toBe('0000');
  });

  it('bitmapCount equals the reference at random ranges', () => {
    const bitmap = randomBytes(600, 4);
    fc.assert(
      fc.property(fc.nat(4800), fc.nat(4800), (a, b) => {
        const first = Math.min(a, b);
        const count = Math.max(a, b) - first;
        expect(core.bitmapCount(bitmap, first, count)).toBe(refBitmapCount(bitmap, first, count));
      }),
      { numRuns: 1000 },
    );
  });

  it('bitmapSet equals the reference at random ranges, touching no other bit', () => {
    fc.assert(
      fc.property(fc.nat(4096), fc.nat(4096), fc.boolean(), fc.integer({ min: 1, max: 1000 }), (a, b, value, seed) => {
        const first = Math.min(a, b);
        const count = Math.max(a, b) - first;
        const ours = randomBytes(512, seed);
        const ref = ours.slice();
        core.bitmapSet(ours, first, count, value);
        refBitmapSet(ref, first, count, value);
        expect(hex(ours)).toBe(hex(ref));
      }),
      { numRuns: 1000 },
    );
  });

  it('bitmapCount and bitmapSet handle ranges larger than one staged window', () => {
    const bitmap = randomBytes(700_000, 8); // 5.6 Mbit: several 256 KiB windows
    expect(core.bitmapCount(bitmap, 13, 5_500_000)).toBe(refBitmapCount(bitmap, 13, 5_500_000));
    const ref = bitmap.slice();
    core.bitmapSet(bitmap, 1_000_001, 4_000_000, false);
    refBitmapSet(ref, 1_000_001, 4_000_000, false);
    expect(hex(bitmap)).toBe(hex(ref));
  });
});
