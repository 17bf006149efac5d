/** Writes, overlays, merge and discard, checked against an in-memory model of the disk. */
import { copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  VhdDynamicDisk, createDifferencing, createOverlay, createVhd, discardOverlay, mergeJournalPath, mergeOverlay, openDisk, type Disk,
} from '../host/disk/index.js';
import { MiB } from '../host/units.js';
import { expectSameBytes, readAll } from './support/bytes.js';
import { sha256File } from './support/digest.js';
import { unpackFixtures } from './support/fixtures.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { vhdsyncError } from './support/typed-errors.js';
import { rng } from '../host/tracking/workload.js'; // seeded mulberry32: a failure replays exactly

let fx: string;
let dir: string;
beforeAll(() => {
  fx = unpackFixtures();
  dir = tempDir().dir;
});
afterAll(() => {
  removeDir(fx);
  removeDir(dir);
});

function fillRandom(buf: Uint8Array, next: () => number): Uint8Array {
  for (let i = 0; i < buf.length; i++) buf[i] = (next() * 256) | 0;
  return buf;
}

/**
 * Apply random writes (sub-sector, cross-block, zeros) to `disk` and to `model`, checking reads of
 * random ranges against the model as it goes.
 */
async function randomWrites(disk: Disk, model: Uint8Array, seed: number, count: number): Promise<void> {
  const next = rng(seed);
  for (let i = 0; i < count; i++) {
    const kind = next();
    const len = kind < 0.3 ? 1 + ((next() * 700) | 0) : kind < 0.6 ? 512 * (1 + ((next() * 16) | 0)) : 1 + ((next() * disk.blockSize * 2.5) | 0);
    const offset = Math.min((next() * (disk.virtualSize - 1)) | 0, disk.virtualSize - Math.min(len, disk.virtualSize));
    const data = new Uint8Array(Math.min(len, disk.virtualSize - offset));
    if (next() < 0.25) data.fill(0);
    else fillRandom(data, next);
    await disk.write(offset, data);
    model.set(data, offset);
    const rOff = (next() * disk.virtualSize) | 0;
    const rLen = Math.min(disk.virtualSize - rOff, 1 + ((next() * disk.blockSize * 2) | 0));
    const got = new Uint8Array(rLen);
    await disk.read(rOff, got);
    expectSameBytes(got, model.subarray(rOff, rOff + rLen), `read after write ${i}`);
  }
}

async function footersAgree(path: string): Promise<void> {
  const b = new Uint8Array(readFileSync(path));
  expectSameBytes(b.subarray(0, 512), b.subarray(b.length - 512), `${path}: footer copy vs trailing footer`);
}

describe('dynamic VHD writes', () => {
  it.each([
    ['2 MiB blocks', 2 * MiB, 10 * MiB + 3 * 512],
    ['4 KiB blocks', 4096, 1 * MiB],
    ['512-byte blocks', 512, 256 * 1024],
  ])('random writes with %s read back identically, before and after reopening', async (_name, blockSize, size) => {
    const path = join(dir, `dyn-${blockSize}.vhd`);
    await createVhd(path, { size, type: 'dynamic', blockSize });
    const model = new Uint8Array(size);
    let d = await openDisk(path);
    await randomWrites(d, model, blockSize, 60);
    await d.close();
    await footersAgree(path);
    d = await openDisk(path, { readOnly: true });
    expectSameBytes(await readAll(d), model, 'after reopen');
    await d.close();
  });

  it('zero writes into unallocated blocks of a dynamic disk allocate nothing', async () => {
    const path = join(dir, 'zeros.vhd');
    await createVhd(path, { size: 8 * MiB, type: 'dynamic' });
    const before = statSync(path).size;
    const d = (await openDisk(path)) as VhdDynamicDisk;
    await d.write(MiB, new Uint8Array(3 * MiB));
    expect(d.allocatedBlocks()).toBe(0);
    await d.close();
    expect(statSync(path).size).toBe(before);
  });

  it('a new block is appended where the trailing footer was, and the footer moves to the new end', async () => {
    const path = join(dir, 'append.vhd');
    await createVhd(path, { size: 8 * MiB, type: 'dynamic' });
    const before = statSync(path).size;
    const d = await openDisk(path);
    await d.write(2 * MiB + 5, Uint8Array.of(1, 2, 3));
    await d.close();
    expect(statSync(path).size).toBe(before + 512 + 2 * MiB);
    await footersAgree(path);
  });

  it('reads straight into a view over a larger buffer (a WASM memory view) without touching bytes around it', async () => {
    const d = await openDisk(join(fx, 'qemu-dynamic-8M.vhd'), { readOnly: true });
    const whole = await readAll(d);
    const backing = new Uint8Array(8 * MiB + 64).fill(0xee);
    const view = new Uint8Array(backing.buffer, 13, 4 * MiB);
    await d.read(MiB + 7, view);
    expectSameBytes(view, whole.subarray(MiB + 7, MiB + 7 + 4 * MiB));
    expect(backing[12]).toBe(0xee);
    expect(backing[13 + 4 * MiB]).toBe(0xee);
    await d.close();
  });
});

describe('read coalescing', () => {
  it('reads a fully allocated disk with one fs read per block, and an empty one with none', async () => {
    const path = join(dir, 'full.vhd');
    await createVhd(path, { size: 32 * MiB, type: 'dynamic' });
    let d = await openDisk(path);
    await d.write(0, new Uint8Array(32 * MiB).fill(9));
    await d.close();
    d = await openDisk(path, { readOnly: true });
    const probe = await openFile(path, 'r');
    const proto = Object.getPrototypeOf(probe) as { read: (...a: unknown[]) => unknown };
    await probe.close();
    const spy = vi.spyOn(proto, 'read');
    try {
      await readAll(d);
      expect(spy.mock.calls.length).toBe(16);
      spy.mockClear();
      const child = join(dir, 'full-child.vhd');
      await createDifferencing(child, path);
      const c = await openDisk(child, { readOnly: true });
      const spyBefore = spy.mock.calls.length;
      await readAll(c);
      // The empty child sends one coalesced read per parent block; no per-sector calls.
      expect(spy.mock.calls.length - spyBefore).toBe(16);
      await c.close();
    } finally {
      spy.mockRestore();
      await d.close();
    }
  });
});

describe('differencing writes', () => {
  it('random writes into a child over a dynamic parent with data read back through the chain', async () => {
    const base = join(dir, 'chain-base.vhd');
    await createVhd(base, { size: 6 * MiB, type: 'dynamic', blockSize: 64 * 1024 });
    const model = new Uint8Array(6 * MiB);
    let b = await openDisk(base);
    await randomWrites(b, model, 7, 30);
    await b.close();
    const parentHash = sha256File(base);

    const child = join(dir, 'chain-child.vhd');
    await createDifferencing(child, base);
    let c = await openDisk(child);
    await randomWrites(c, model, 8, 80);
    await c.close();
    await footersAgree(child);
    c = await openDisk(child, { readOnly: true });
    expectSameBytes(await readAll(c), model, 'chain after reopen');
    await c.close();
    expect(sha256File(base)).toBe(parentHash);
  });

  it('writing zeros into a child over parent data allocates and shadows the parent', async () => {
    const base = join(dir, 'z-base.vhd');
    await createVhd(base, { size: 4 * MiB, type: 'dynamic' });
    const b = await openDisk(base);
    await b.write(0, new Uint8Array(4 * MiB).fill(0x42));
    await b.close();
    const child = join(dir, 'z-child.vhd');
    await createDifferencing(child, base);
    const c = (await openDisk(child)) as VhdDynamicDisk;
    expect(c.blockStatus(1)).toBe('present'); // from the parent
    await c.write(2 * MiB + 512, new Uint8Array(1024));
    expect(c.isAllocated(1)).toBe(true);
    expect(c.isAllocated(0)).toBe(false);
    const got = new Uint8Array(2048);
    await c.read(2 * MiB, got);
    expect(Array.from(got.subarray(0, 512)).every((x) => x === 0x42)).toBe(true);
    expect(Array.from(got.subarray(512, 1536)).every((x) => x === 0)).toBe(true);
    expect(Array.from(got.subarray(1536)).every((x) => x === 0x42)).toBe(true);
    const ranges = await c.ownedRanges(1);
    expect(ranges).toEqual([{ offset: 2 * MiB + 512, length: 1024 }]);
    await c.close();
  });

  it('a sub-sector write into a child keeps the rest of the sector from the parent', async () => {
    const base = join(dir, 'ss-base.img');
    writeFileSync(base, new Uint8Array(1 * MiB).fill(0x10));
    const child = join(dir, 'ss-child.vhd');
    await createOverlay(base, child);
    const c = await openDisk(child);
    await c.write(1000, Uint8Array.of(1, 2, 3));
    const got = new Uint8Array(1536);
    await c.read(0, got);
    const expected = new Uint8Array(1536).fill(0x10);
    expected.set([1, 2, 3], 1000);
    expectSameBytes(got, expected);
    await c.close();
  });

  it('unflushed BAT entries are not on disk; flushed ones are', async () => {
    const path = join(dir, 'pending.vhd');
    await createVhd(path, { size: 4 * MiB, type: 'dynamic' });
    const d = await openDisk(path);
    await d.write(0, new Uint8Array(512).fill(1));
    // Another reader sees the old BAT until flush: metadata never points at data not yet durable.
    let other = (await openDisk(path, { readOnly: true })) as VhdDynamicDisk;
    expect(other.allocatedBlocks()).toBe(0);
    await other.close();
    await d.flush();
    other = (await openDisk(path, { readOnly: true })) as VhdDynamicDisk;
    expect(other.allocatedBlocks()).toBe(1);
    await other.close();
    await d.close();
  });
});

describe('overlay, merge and discard', () => {
  async function overlayScenario(base: string, seed: number) {
    const overlay = `${base}.overlay.vhd`;
    await createOverlay(base, overlay);
    const o = await openDisk(overlay);
    const model = await readAll(o);
    await randomWrites(o, model, seed, 40);
    await o.close();
    return { overlay, model };
  }

  it.each([
    ['a dynamic VHD', async (p: string) => createVhd(p, { size: 5 * MiB, type: 'dynamic', blockSize: 512 * 1024 })],
    ['a fixed VHD', async (p: string) => createVhd(p, { size: 5 * MiB, type: 'fixed' })],
    ['a raw image', async (p: string) => writeFileSync(p, new Uint8Array(5 * MiB).fill(0x5c))],
    ['a differencing VHD', async (p: string) => {
      await createVhd(`${p}.grand.vhd`, { size: 5 * MiB, type: 'dynamic' });
      await createDifferencing(p, `${p}.grand.vhd`);
    }],
  ])('merge into %s gives the chain view, deletes the overlay and its journal', async (what, make) => {
    const base = join(dir, `merge-${what.replace(/\W/g, '')}.${what.includes('raw') ? 'img' : 'vhd'}`);
    await make(base);
    const { overlay, model } = await overlayScenario(base, what.length);
    const progress: Array<[number, number]> = [];
    const result = await mergeOverlay(overlay, { onProgress: (d, t) => progress.push([d, t]) });
    expect(result.resumed).toBe(false);
    expect(existsSync(overlay)).toBe(false);
    expect(existsSync(mergeJournalPath(overlay))).toBe(false);
    expect(progress.at(-1)?.[0]).toBe(progress.at(-1)?.[1]);
    const b = await openDisk(base, { readOnly: true });
    expectSameBytes(await readAll(b), model, 'merged base');
    await b.close();
  });

  it('merging an overlay nothing was written to deletes it and never opens the parent for writing', async () => {
    const base = join(dir, 'empty-merge.vhd');
    await createVhd(base, { size: 4 * MiB, type: 'dynamic' });
    const overlay = join(dir, 'empty-merge.overlay.vhd');
    await createOverlay(base, overlay);
    const before = { sha: sha256File(base), mtime: statSync(base).mtimeMs };
    const journalled = vi.fn(async () => {});
    const copied = vi.fn(async () => {});
    const r = await mergeOverlay(overlay, { onJournal: journalled, onCopied: copied });
    expect(r).toMatchObject({ copiedBytes: 0, mergedBlocks: 0, resumed: false });
    expect(existsSync(overlay)).toBe(false);
    expect(existsSync(mergeJournalPath(overlay))).toBe(false);
    expect(journalled).not.toHaveBeenCalled();
    expect(copied).toHaveBeenCalledOnce();
    expect({ sha: sha256File(base), mtime: statSync(base).mtimeMs }).toEqual(before);
  });

  it('merge copies only sectors whose bit is set: parent sectors next to them survive', async () => {
    const base = join(dir, 'sector-merge.img');
    writeFileSync(base, new Uint8Array(2 * MiB).fill(0xaa));
    const overlay = join(dir, 'sector-merge.vhd');
    await createOverlay(base, overlay);
    const o = await openDisk(overlay);
    await o.write(512, new Uint8Array(512).fill(0x01));
    await o.close();
    // Change the base under the overlay next to the written sector: a whole-block merge would undo this.
    const fh = await openFile(base, 'r+');
    await fh.write(new Uint8Array(512).fill(0x77), 0, 512, 1024);
    await fh.close();
    const r = await mergeOverlay(overlay);
    expect(r.copiedBytes).toBe(512);
    const b = new Uint8Array(readFileSync(base));
    expect(b[0]).toBe(0xaa);
    expect(b[512]).toBe(0x01);
    expect(b[1024]).toBe(0x77);
  });

  it('discard deletes the overlay and leaves the base byte-identical', async () => {
    const base = join(dir, 'discard-base.vhd');
    copyFileSync(join(fx, 'qemu-dynamic-8M.vhd'), base);
    const before = sha256File(base);
    const { overlay } = await overlayScenario(base, 99);
    await discardOverlay(overlay);
    expect(existsSync(overlay)).toBe(false);
    expect(sha256File(base)).toBe(before);
    expect((await vhdsyncError(discardOverlay(overlay))).code).toBe('NOT_FOUND');
  });

  it('discard refuses a disk that is not a differencing VHD, and an overlay whose merge has started', async () => {
    const base = join(dir, 'refuse.vhd');
    await createVhd(base, { size: MiB, type: 'dynamic' });
    expect((await vhdsyncError(discardOverlay(base))).code).toBe('UNSUPPORTED');
    const overlay = join(dir, 'refuse-ov.vhd');
    await createOverlay(base, overlay);
    writeFileSync(mergeJournalPath(overlay), '{}');
    expect((await vhdsyncError(discardOverlay(overlay))).code).toBe('STATE');
  });

  it('merge refuses a damaged journal rather than guessing where to resume', async () => {
    const base = join(dir, 'journal.vhd');
    await createVhd(base, { size: MiB, type: 'dynamic' });
    const overlay = join(dir, 'journal-ov.vhd');
    await createOverlay(base, overlay);
    for (const text of ['not json', '{"version":1,"step":"copy","nextBlock":-1}', 'null']) {
      writeFileSync(mergeJournalPath(overlay), text);
      expect((await vhdsyncError(mergeOverlay(overlay))).code).toBe('STATE');
    }
  });

  it('creates and uses a 2040 GiB dynamic VHD, the format limit (a 4 MiB BAT, a small file)', async () => {
    const p = join(dir, 'max.vhd');
    const size = 2040 * 1024 * MiB;
    await createVhd(p, { size, type: 'dynamic' });
    const d = await openDisk(p);
    expect([d.virtualSize, d.blockCount]).toEqual([size, 1_044_480]);
    await d.write(size - 4096, new Uint8Array(4096).fill(0x3f));
    await d.close();
    const r = await openDisk(p, { readOnly: true });
    const got = new Uint8Array(8192);
    await r.read(size - 8192, got);
    expect(got[0]).toBe(0);
    expect(got[8191]).toBe(0x3f);
    expect(r.blockStatus(r.blockCount - 1)).toBe('present');
    await r.close();
    expect(statSync(p).size).toBeLessThan(8 * MiB);
  });

  it('create refuses to overwrite an existing file unless told', async () => {
    const p = join(dir, 'exists.vhd');
    await createVhd(p, { size: MiB, type: 'dynamic' });
    expect((await vhdsyncError(createVhd(p, { size: MiB, type: 'fixed' }))).code).toBe('EXISTS');
    await createVhd(p, { size: 2 * MiB, type: 'fixed', overwrite: true });
    const d = await openDisk(p, { readOnly: true });
    expect([d.type, d.virtualSize]).toEqual(['fixed', 2 * MiB]);
    await d.close();
  });

  it.each([
    [{ size: 1000, type: 'dynamic' as const }, 'BAD_SIZE'],
    [{ size: 0, type: 'dynamic' as const }, 'BAD_SIZE'],
    [{ size: 2041 * 1024 * MiB, type: 'dynamic' as const }, 'BAD_SIZE'],
    [{ size: MiB, type: 'dynamic' as const, blockSize: 3000 }, 'BAD_BLOCK_SIZE'],
    [{ size: 100 * 1024 * MiB, type: 'dynamic' as const, blockSize: 512 }, 'BAD_BLOCK_SIZE'],
  ])('create refuses %j', async (opts, code) => {
    expect((await vhdsyncError(createVhd(join(dir, 'bad.vhd'), opts))).code).toBe(code);
    expect(existsSync(join(dir, 'bad.vhd'))).toBe(false);
  });
});
