/**
 * Fuzzing VHDX input: hundreds of mutated file identifiers, headers, region tables, metadata tables and
 * items, parent locators, BAT entries and log entries over a qemu-made image, a qemu-made dirty log and
 * one of our differencing chains (seeded, so a failure replays; CRCs re-sealed half of the time so the
 * structural checks behind them are reached), opened read-only and writable, then read and written.
 * Plus targeted malformations with their expected codes, and random bytes straight into the pure
 * parsers. The only acceptable failure is a VhdsyncError with one line: no other exception, no hang, no
 * huge allocation.
 */
import { copyFileSync, readFileSync } from 'node:fs';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhdx, createVhdxDifferencing, openDisk } from '../host/disk/index.js';
import { batLayout, bitmapIndex, validateBat } from '../host/disk/vhdx/bat.js';
import { parseHeader, pickHeader } from '../host/disk/vhdx/header.js';
import { guidText, le32, le64, putLe32, sealCrc } from '../host/disk/vhdx/le.js';
import { findActiveSequence } from '../host/disk/vhdx/log.js';
import { interpretMetadata, parseMetadataTable, parseParentLocator, type ItemKind } from '../host/disk/vhdx/metadata.js';
import { parseRegionTable, validateRegions } from '../host/disk/vhdx/region.js';
import { VhdsyncError } from '../host/errors.js';
import { MiB, KiB } from '../host/units.js';
import { unpackFixtures } from './support/fixtures.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { onlyTyped } from './support/typed-errors.js';
import { rng } from '../host/tracking/workload.js'; // seeded mulberry32: a failure replays exactly

let fx: string;
let work: string;
beforeAll(() => {
  fx = unpackFixtures();
  work = tempDir('vhdsync-vhdx-fuzz-').dir;
});
afterAll(() => {
  removeDir(fx);
  removeDir(work);
});

const INTERESTING = [0, 1, 2, 3, 4, 5, 6, 7, 0x1ff, 0x200, 0x1000, 0xfff, 0x100000, 0x200000, 0x300000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

/** A field to mutate, and the checksummed structure it belongs to (resealed half of the time). */
interface Field {
  at: number;
  size: number;
  crc?: { start: number; length: number };
}

interface Target {
  name: string;
  path: string;
  pristine: Buffer;
  fields: Field[];
  parent?: string;
}

/** The fields of every structure of the VHDX in `b`, found through its own (valid) tables. */
function fieldsOf(b: Buffer): Field[] {
  const out: Field[] = [{ at: 0, size: 8 }, { at: 8, size: 16 }];
  for (const h of [64 * KiB, 128 * KiB]) {
    const crc = { start: h, length: 4 * KiB };
    for (const [o, s] of [[0, 4], [4, 4], [8, 8], [16, 16], [32, 16], [48, 16], [64, 2], [66, 2], [68, 4], [72, 8]]) out.push({ at: h + o, size: s, crc });
  }
  let meta = 0;
  let bat = 0;
  for (const t of [192 * KiB, 256 * KiB]) {
    const crc = { start: t, length: 64 * KiB };
    out.push({ at: t, size: 4, crc }, { at: t + 4, size: 4, crc }, { at: t + 8, size: 4, crc });
    for (let i = 0; i < 2; i++) {
      const e = t + 16 + i * 32;
      for (const [o, s] of [[0, 16], [16, 8], [24, 4], [28, 4]]) out.push({ at: e + o, size: s, crc });
      const id = guidText(b, e);
      if (id.startsWith('8b7ca206')) meta = le64(b, e + 16);
      if (id.startsWith('2dc27766')) bat = le64(b, e + 16);
    }
  }
  out.push({ at: meta, size: 8 }, { at: meta + 10, size: 2 });
  const count = b.readUInt16LE(meta + 10);
  for (let i = 0; i < count; i++) {
    const e = meta + 32 + i * 32;
    for (const [o, s] of [[0, 16], [16, 4], [20, 4], [24, 4]]) out.push({ at: e + o, size: s });
    const off = meta + le32(b, e + 16);
    const len = le32(b, e + 20);
    for (let k = 0; k < Math.min(len, 160); k += 4) out.push({ at: off + k, size: Math.min(4, len - k) });
  }
  for (let i = 0; i < 8; i++) out.push({ at: bat + i * 8, size: 8 });
  // The first chunk's sector bitmap entry (1 MiB blocks, 512-byte sectors: index 4096).
  out.push({ at: bat + 8 * bitmapIndex(batLayout({ blockSize: MiB, logicalSectorSize: 512, virtualSize: 8 * MiB, differencing: true }), 0), size: 8 });
  // The log's first entry, when the header names a log.
  const logOffset = le64(b, 64 * KiB + 72);
  if (b.subarray(logOffset, logOffset + 4).toString() === 'loge') {
    const crc = { start: logOffset, length: le32(b, logOffset + 8) };
    for (const [o, s] of [[0, 4], [4, 4], [8, 4], [12, 4], [16, 8], [24, 4], [32, 16], [48, 8], [56, 8], [64, 4], [68, 4], [72, 8], [80, 8], [88, 8], [4096, 4], [4100, 4]]) {
      out.push({ at: logOffset + o, size: s, crc });
    }
  }
  return out;
}

function value(size: number, next: () => number, fileSize: number): Uint8Array {
  const v = new Uint8Array(size);
  const r = next();
  if (r < 0.45 && size >= 4) putLe32(v, 0, INTERESTING[Math.floor(next() * INTERESTING.length)]);
  else if (r < 0.55) v.fill(0xff);
  else if (r < 0.7 && size >= 8) {
    const mb = Math.floor(next() * (fileSize / MiB) * 2);
    putLe32(v, 0, ((mb % 4096) << 20) | Math.floor(next() * 8));
    putLe32(v, 4, Math.floor(mb / 4096));
  } else if (r < 0.75) v.fill(0);
  else for (let i = 0; i < size; i++) v[i] = Math.floor(next() * 256);
  return v;
}

async function exercise(path: string, readOnly: boolean): Promise<void> {
  const disk = await openDisk(path, { readOnly });
  try {
    for (let b = 0; b < disk.blockCount; b++) disk.blockStatus(b);
    const buf = new Uint8Array(1 * MiB);
    for (let off = 0; off < disk.virtualSize; off += buf.length) await disk.read(off, buf.subarray(0, Math.min(buf.length, disk.virtualSize - off)));
    if (!readOnly) {
      await disk.write(Math.min(disk.virtualSize - 700, 3 * MiB + 5), new Uint8Array(700).fill(0x3c));
      await disk.flush();
    }
  } finally {
    await disk.close();
  }
}

describe('mutated VHDX images', () => {
  let targets: Target[];
  beforeAll(async () => {
    const base = join(work, 'fuzz-base.vhdx');
    const child = join(work, 'fuzz-child.vhdx');
    await createVhdx(base, { size: 8 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    let d = await openDisk(base);
    await d.write(0, new Uint8Array(2 * MiB).fill(0x61));
    await d.close();
    await createVhdxDifferencing(child, base, { blockSize: 1 * MiB });
    d = await openDisk(child);
    await d.write(4096 + 3, new Uint8Array(5000).fill(0x62));
    await d.write(5 * MiB, new Uint8Array(4096).fill(0x63));
    await d.close();
    const mk = (name: string, path: string, parent?: string): Target => {
      const pristine = readFileSync(path);
      return { name, path, pristine, fields: fieldsOf(pristine), parent };
    };
    targets = [
      mk('qemu dynamic', join(fx, 'qemu-vhdx-dyn-1M.vhdx')),
      mk('qemu dirty log', join(fx, 'qemu-vhdx-dirty-log.vhdx')),
      mk('our differencing child', child, base),
    ];
  });

  it('400 mutations: every failure is a one-line VhdsyncError', async () => {
    const codes = new Map<string, number>();
    const dirtyCopy = new Map<string, boolean>();
    let opened = 0;
    for (let iter = 0; iter < 400; iter++) {
      const next = rng(1000 + iter);
      const t = targets[iter % targets.length];
      const readOnly = next() < 0.9;
      const file = join(work, `m-${iter % targets.length}.vhdx`); // beside the base, so the child finds it
      // A read-only case leaves the file as it was; after a writable one (replay, headers, blocks
      // anywhere) the next case starts from a fresh copy. Mutations all lie in the first 4 MiB.
      if (dirtyCopy.get(file) !== false) copyFileSync(t.path, file);
      dirtyCopy.set(file, !readOnly);
      const b = Buffer.from(t.pristine);
      const touched = new Set<{ start: number; length: number }>();
      const hits = 1 + Math.floor(next() * 3);
      for (let h = 0; h < hits; h++) {
        const f = t.fields[Math.floor(next() * t.fields.length)];
        b.set(value(f.size, next, b.length), f.at);
        if (f.crc) touched.add(f.crc);
      }
      if (next() < 0.5) {
        for (const c of touched) if (c.start + c.length <= b.length && c.length > 0 && c.length % 4096 === 0) sealCrc(b.subarray(c.start, c.start + c.length));
      }
      const fh: FileHandle = await openFile(file, 'r+');
      await fh.write(b, 0, Math.min(b.length, 4 * MiB), 0);
      await fh.close();
      try {
        await exercise(file, readOnly);
        opened++;
      } catch (e) {
        if (!(e instanceof VhdsyncError)) throw new Error(`iteration ${iter} (${t.name}): ${String((e as Error)?.stack ?? e)}`);
        expect(e.message, `iteration ${iter}`).not.toContain('\n');
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    // The mutations reach many different checks, and many mutated images still open (harmless fields).
    expect(codes.size).toBeGreaterThanOrEqual(6);
    expect(opened).toBeGreaterThan(40);
    console.log(`opened ${opened}, refused ${[...codes].map(([c, n]) => `${c} ${n}`).join(', ')}`);
  });
});

describe('targeted malformations', () => {
  const cases: Array<[string, string, (b: Buffer) => void]> = [
    ['both header signatures wrong', 'BAD_CHECKSUM', (b) => (b.write('hea!', 64 * KiB), b.write('hea!', 128 * KiB))],
    ['both region tables corrupt', 'BAD_CHECKSUM', (b) => ((b[192 * KiB + 100] ^= 1), (b[256 * KiB + 100] ^= 1))],
    ['a .vhdx file without the signature', 'BAD_COOKIE', (b) => b.write('vhdxfilf', 0)],
    ['overlapping regions (BAT moved onto the metadata)', 'BAD_SIZE', (b) => {
      for (const t of [192 * KiB, 256 * KiB]) {
        const meta = b.readBigUInt64LE(t + 16 + 32 + 16);
        b.writeBigUInt64LE(meta, t + 16 + 16);
        sealCrc(b.subarray(t, t + 64 * KiB));
      }
    }],
    ['an unknown required metadata item', 'UNSUPPORTED', (b) => {
      const meta = Number(b.readBigUInt64LE(192 * KiB + 16 + 32 + 16));
      b.fill(0x77, meta + 32 + 2 * 32, meta + 32 + 2 * 32 + 16); // page 83 renamed; still required
    }],
    ['a BAT entry past the end of the file', 'BAD_BAT', (b) => {
      const bat = Number(b.readBigUInt64LE(192 * KiB + 16 + 16));
      b.writeBigUInt64LE(BigInt(1000 * MiB) | 6n, bat + 8);
    }],
    ['a BAT entry in the header section', 'BAD_BAT', (b) => {
      const bat = Number(b.readBigUInt64LE(192 * KiB + 16 + 16));
      b.writeBigUInt64LE(6n, bat + 8);
    }],
    ['two blocks at the same place', 'BAD_BAT', (b) => {
      const bat = Number(b.readBigUInt64LE(192 * KiB + 16 + 16));
      b.writeBigUInt64LE(b.readBigUInt64LE(bat), bat + 7 * 8);
    }],
    ['PARTIALLY_PRESENT in a dynamic disk', 'BAD_BAT', (b) => {
      const bat = Number(b.readBigUInt64LE(192 * KiB + 16 + 16));
      b.writeBigUInt64LE((b.readBigUInt64LE(bat) & ~7n) | 7n, bat);
    }],
    ['a 3 MiB block size', 'BAD_BLOCK_SIZE', (b) => {
      const meta = Number(b.readBigUInt64LE(192 * KiB + 16 + 32 + 16));
      b.writeUInt32LE(3 * MiB, meta + 64 * KiB);
    }],
  ];
  it.each(cases)('%s → %s', async (_what, code, patch) => {
    const path = join(work, `t-${code}-${Math.random().toString(36).slice(2)}.vhdx`);
    copyFileSync(join(fx, 'qemu-vhdx-dyn-1M.vhdx'), path);
    const b = readFileSync(path);
    patch(b);
    const fh = await openFile(path, 'r+');
    await fh.write(b, 0, 4 * MiB, 0);
    await fh.close();
    const err = await openDisk(path, { readOnly: true }).then(
      () => {
        throw new Error('opened');
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(VhdsyncError);
    expect((err as VhdsyncError).code).toBe(code);
    expect((err as VhdsyncError).message).not.toContain('\n');
  });

  it('a dirty log whose entry targets the header section is refused; one needing a longer file is TRUNCATED', async () => {
    for (const [patch, code] of [
      [(b: Buffer) => b.writeBigUInt64LE(0n, MiB + 64 + 16), 'BAD_CHECKSUM'],
      [(b: Buffer) => b.writeBigUInt64LE(BigInt(b.length + MiB), MiB + 48), 'TRUNCATED'],
    ] as const) {
      const path = join(work, `log-${code}.vhdx`);
      copyFileSync(join(fx, 'qemu-vhdx-dirty-log.vhdx'), path);
      const b = readFileSync(path);
      patch(b);
      sealCrc(b.subarray(MiB, MiB + le32(b, MiB + 8)));
      const fh = await openFile(path, 'r+');
      await fh.write(b, MiB, 64 * KiB, MiB);
      await fh.close();
      const err = await openDisk(path, { readOnly: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VhdsyncError);
      expect((err as VhdsyncError).code).toBe(code);
    }
  });

  it('a torn log entry (bad CRC) is not an active sequence: the image opens with the old metadata', async () => {
    const path = join(work, 'torn-log.vhdx');
    copyFileSync(join(fx, 'qemu-vhdx-dirty-log.vhdx'), path);
    const fh = await openFile(path, 'r+');
    await fh.write(new Uint8Array([0xde, 0xad]), 0, 2, MiB + 4096 + 200);
    await fh.close();
    const d = await openDisk(path, { readOnly: true });
    const probe = new Uint8Array(8192);
    await d.read(3 * MiB, probe);
    expect(probe.every((x) => x === 0)).toBe(true); // the block the lost entry would have mapped
    await d.close();
  });
});

describe('random bytes into the pure parsers', () => {
  it('headers, region tables, metadata, parent locators, BATs and logs', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 4096 }), fc.uint8Array({ minLength: 4096, maxLength: 4096 }), (a, h) => {
        const page = new Uint8Array(64 * KiB);
        page.set(a);
        onlyTyped(() => parseHeader(h));
        onlyTyped(() => pickHeader(h, page.subarray(0, 4096), 'x'));
        onlyTyped(() => {
          page.set([0x72, 0x65, 0x67, 0x69]); // 'regi'
          sealCrc(page);
          const r = parseRegionTable(page);
          if (Array.isArray(r)) validateRegions(r, { offset: MiB, length: MiB }, 'x');
        });
        onlyTyped(() => {
          page.set(Buffer.from('metadata'));
          const where = parseMetadataTable(page, MiB, 'x');
          const items: Partial<Record<ItemKind, Uint8Array>> = {};
          for (const [k, loc] of Object.entries(where)) items[k as ItemKind] = a.subarray(0, Math.min(a.length, loc!.length)).length >= 20 ? a : new Uint8Array(64);
          interpretMetadata(items, 'x');
        });
        onlyTyped(() => parseParentLocator(a, 'x'));
        onlyTyped(() => validateBat(page, batLayout({ blockSize: MiB, logicalSectorSize: 512, virtualSize: 64 * MiB, differencing: (a[0] & 1) === 1 }), 16 * MiB, [], 'x'));
        expect(Array.isArray(findActiveSequence(page, h.subarray(0, 16)))).toBe(true);
      }),
      { numRuns: 1500, seed: 42 },
    );
  });
});
