/**
 * Fuzzing: thousands of mutated footers, headers, BATs and locators over the fixtures (seeded, so a
 * failure replays), plus random bytes straight into the pure parsers. The only acceptable failure is a
 * VhdsyncError: no other exception, no hang, no huge allocation.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putU32 } from '../host/disk/vhd/be.js';
import { createOverlay, createVhd, mergeJournalPath, mergeOverlay, openDisk } from '../host/disk/index.js';
import { BAT_UNUSED, parseBat, validateBat } from '../host/disk/vhd/bat.js';
import { footerChecksum, parseFooter } from '../host/disk/vhd/footer.js';
import { headerChecksum, parseDynamicHeader } from '../host/disk/vhd/header.js';
import { VhdsyncError } from '../host/errors.js';
import { MiB } from '../host/units.js';
import { unpackFixtures } from './support/fixtures.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { onlyTyped } from './support/typed-errors.js';
import { rng } from '../host/tracking/workload.js'; // seeded mulberry32: a failure replays exactly

let fx: string;
beforeAll(() => {
  fx = unpackFixtures();
});
afterAll(() => removeDir(fx));

const INTERESTING_U32 = [0, 1, 2, 3, 4, 5, 0x1ff, 0x200, 0x201, 0xfff, 0x1000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];

/** Fields worth aiming at: [offset, size] of footer and header fields, BAT entries, locator entries. */
const FOOTER_FIELDS: Array<[number, number]> = [[0, 8], [8, 4], [12, 4], [16, 8], [24, 4], [28, 4], [40, 8], [48, 8], [56, 4], [60, 4], [64, 4], [68, 16], [84, 1]];
const HEADER_FIELDS: Array<[number, number]> = [
  [0, 8], [8, 8], [16, 8], [24, 4], [28, 4], [32, 4], [36, 4], [40, 16], [56, 4], [64, 512],
  ...Array.from({ length: 8 }, (_, i) => [[576 + i * 24, 4], [576 + i * 24 + 4, 4], [576 + i * 24 + 8, 4], [576 + i * 24 + 16, 8]] as Array<[number, number]>).flat(),
];

interface Target {
  name: string;
  path: string;
  pristine: Uint8Array;
  /** Bytes [0, headEnd) hold footer copy, header, BAT and locators. */
  headEnd: number;
  batOffset: number;
  batEntries: number;
  /** [offset, length] of locator data to mutate as well. */
  locator?: [number, number];
}

interface Mutation {
  head: Uint8Array;
  tail: Uint8Array;
  locator?: Uint8Array;
  truncateTo?: number;
}

function mutate(t: Target, next: () => number): Mutation {
  const b = t.pristine.slice(0, t.headEnd);
  const tail = t.pristine.slice(-512);
  const pick = <T>(xs: T[]) => xs[Math.floor(next() * xs.length)];
  const value = (size: number): Uint8Array => {
    const v = new Uint8Array(size);
    const r = next();
    if (r < 0.4 && size >= 4) putU32(v, size - 4, pick(INTERESTING_U32));
    else if (r < 0.5) v.fill(0xff);
    else if (r < 0.6 && size >= 4) putU32(v, size - 4, Math.floor((t.pristine.length / 512) * next() * 2));
    else for (let i = 0; i < size; i++) v[i] = Math.floor(next() * 256);
    return v;
  };
  const hits = 1 + Math.floor(next() * 3);
  const copyOfTail = next() < 0.5; // mutate the trailing footer and the copy alike, or just one
  for (let h = 0; h < hits; h++) {
    const where = next();
    if (where < 0.3) {
      const [off, size] = pick(FOOTER_FIELDS);
      const v = value(size);
      tail.set(v, off);
      if (copyOfTail) b.set(v, off);
    } else if (where < 0.45) {
      const [off, size] = pick(FOOTER_FIELDS);
      b.set(value(size), off);
    } else if (where < 0.75 && t.headEnd >= 1536) {
      const [off, size] = pick(HEADER_FIELDS);
      b.set(value(size), 512 + off);
    } else if (where < 0.95 && t.batEntries > 0) {
      const i = Math.floor(next() * t.batEntries);
      b.set(value(4), t.batOffset + i * 4);
    } else {
      b[Math.floor(next() * b.length)] ^= 1 << Math.floor(next() * 8);
    }
  }
  // Most of the time make the checksums right again, so the mutation reaches the checks behind them.
  if (next() < 0.7) {
    putU32(tail, 64, footerChecksum(tail));
    putU32(b, 64, footerChecksum(b.subarray(0, 512)));
    if (t.headEnd >= 1536) putU32(b, 512 + 36, headerChecksum(b.subarray(512, 1536)));
  }
  let locator: Uint8Array | undefined;
  if (t.locator && next() < 0.15) {
    const [off, len] = t.locator;
    locator = t.pristine.slice(off, off + len);
    const i = Math.floor(next() * len);
    if (next() < 0.5) locator[i] ^= 1 << Math.floor(next() * 8);
    else locator.fill(0, i);
  }
  const truncateTo = next() < 0.08 ? Math.floor(next() * t.pristine.length) : undefined;
  return { head: b, tail, locator, truncateTo };
}

async function restore(fh: FileHandle, t: Target): Promise<void> {
  await fh.truncate(t.pristine.length);
  await fh.write(t.pristine, 0, t.headEnd, 0);
  await fh.write(t.pristine, t.pristine.length - 512, 512, t.pristine.length - 512);
  if (t.locator) await fh.write(t.pristine, t.locator[0], t.locator[1], t.locator[0]);
}

function loadTarget(name: string, headEnd: number, batOffset: number, batEntries: number): Target {
  const path = join(fx, name);
  return { name, path, pristine: new Uint8Array(readFileSync(path)), headEnd, batOffset, batEntries };
}

/** Open, read a few ranges (block edges, random), close — with a deadline so a hang fails the test. */
async function exercise(path: string, readOnly: boolean, next: () => number): Promise<unknown> {
  const work = (async () => {
    const d = await openDisk(path, { readOnly });
    try {
      const buf = new Uint8Array(4096);
      for (let i = 0; i < Math.min(d.blockCount, 8); i++) {
        d.blockStatus(i);
        const at = Math.min(i * d.blockSize, d.virtualSize - buf.length);
        if (at >= 0) await d.read(at, buf);
      }
      const at = Math.floor(next() * Math.max(0, d.virtualSize - buf.length));
      if (d.virtualSize >= buf.length) await d.read(at, buf);
      if (!readOnly && d.virtualSize >= 512) await d.write(0, buf.subarray(0, 512));
    } finally {
      await d.close();
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${path} took more than 5 s`)), 5000);
  });
  try {
    return await Promise.race([work.then(() => 'ok'), deadline]);
  } catch (e) {
    return e;
  } finally {
    clearTimeout(timer);
  }
}

describe('mutated images only ever fail with a VhdsyncError', () => {
  const ITERATIONS = 1200;
  it.each([
    // name, end of metadata, BAT offset, BAT entries
    ['qemu-dynamic-8M.vhd', 2048, 1536, 5],
    ['diff-child-sectors.vhd', 2048, 1536, 5],
    ['qemu-fixed-4M.vhd', 512, 0, 0],
  ] as const)(`${ITERATIONS} mutations of %s`, async (name, headEnd, batOffset, batEntries) => {
    const t = loadTarget(name, headEnd, batOffset, batEntries);
    if (name.startsWith('diff-')) {
      // The child's W2ru locator data sits before its trailing footer: fuzz the path too.
      const view = new DataView(t.pristine.buffer);
      t.locator = [Number(view.getBigUint64(512 + 576 + 16, false)), view.getUint32(512 + 576 + 8, false)];
    }
    const fh = await openFile(t.path, 'r+');
    const outcomes = new Map<string, number>();
    try {
      for (let iter = 0; iter < ITERATIONS; iter++) {
        const next = rng(iter * 7919 + name.length);
        const m = mutate(t, next);
        await fh.write(m.head, 0, m.head.length, 0);
        await fh.write(m.tail, 0, 512, t.pristine.length - 512);
        if (m.locator && t.locator) await fh.write(m.locator, 0, m.locator.length, t.locator[0]);
        if (m.truncateTo !== undefined) await fh.truncate(m.truncateTo);
        const result = await exercise(t.path, next() < 0.8, next);
        if (result !== 'ok') {
          if (!(result instanceof VhdsyncError)) {
            throw new Error(`iteration ${iter} of ${name}: not a VhdsyncError: ${(result as Error)?.stack ?? String(result)}`);
          }
          expect(result.message).not.toContain('\n');
        }
        const key = result === 'ok' ? 'ok' : (result as VhdsyncError).code;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        await restore(fh, t);
      }
    } finally {
      await fh.close();
      writeFileSync(t.path, t.pristine);
    }
    // The fuzzer really reached past the checksums into the structural checks.
    expect(outcomes.size).toBeGreaterThanOrEqual(name.startsWith('qemu-fixed') ? 3 : 5);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(0);
  });
});

describe('random bytes into the pure parsers', () => {
  it('parseFooter and parseDynamicHeader', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1100 }), fc.boolean(), (bytes, fix) => {
        const b = bytes.slice();
        if (b.length >= 8) b.set(new TextEncoder().encode('conectix'));
        if (fix && b.length >= 512) putU32(b, 64, footerChecksum(b));
        onlyTyped(() => parseFooter(b));
        if (b.length >= 8) b.set(new TextEncoder().encode('cxsparse'));
        if (fix && b.length >= 1024) putU32(b, 36, headerChecksum(b));
        onlyTyped(() => parseDynamicHeader(b));
      }),
      { numRuns: 2000, seed: 42 },
    );
  });

  it('parseBat and validateBat', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constant(BAT_UNUSED), fc.nat({ max: 40000 }), fc.nat()), { maxLength: 64 }), fc.nat({ max: 30 * MiB }), (entries, fileSize) => {
        const raw = new Uint8Array(entries.length * 4);
        entries.forEach((e, i) => putU32(raw, i * 4, e));
        onlyTyped(() => {
          const bat = parseBat(raw, entries.length);
          validateBat(bat, { virtualSize: entries.length * 4096, blockSize: 4096, bitmapBytes: 512, dataEnd: fileSize, reserved: [{ start: 0, end: 2048, what: 'm' }] });
        });
      }),
      { numRuns: 2000, seed: 7 },
    );
  });
});

describe('merge journals', () => {
  it('a fuzzed journal never makes merge do anything but a typed refusal or a correct merge', async () => {
    const dir = tempDir().dir;
    try {
      const base = join(dir, 'base.vhd');
      await createVhd(base, { size: MiB, type: 'dynamic', blockSize: 4096 });
      const overlay = join(dir, 'ov.vhd');
      await createOverlay(base, overlay);
      const values = [null, -1, 0, 1, 1e300, Number.NaN, 'x', '', [], {}, true, 256, 257];
      const next = rng(3);
      const pick = <T>(xs: T[]) => xs[Math.floor(next() * xs.length)];
      for (let i = 0; i < 200; i++) {
        const j: Record<string, unknown> = { version: 1, step: pick(['copy', 'delete-child', 'x']), child: overlay, childId: 'nope', parent: base, virtualSize: MiB, blockCount: 256, nextBlock: 0 };
        for (let k = 0; k < 2; k++) j[pick(Object.keys(j))] = pick(values);
        writeFileSync(mergeJournalPath(overlay), JSON.stringify(j));
        const e = await mergeOverlay(overlay).then(() => null, (err: unknown) => err);
        expect(e, JSON.stringify(j)).toBeInstanceOf(VhdsyncError);
        expect((e as VhdsyncError).code).toBe('STATE');
      }
    } finally {
      removeDir(dir);
    }
  });
});
