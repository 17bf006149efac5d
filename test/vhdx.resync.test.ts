/**
 * Resync end to end with VHDX disks, through `resync()` (overlay, compare, transfer, merge): a VHDX
 * replica gets a differencing VHDX overlay that is merged sector-accurately into it, and mixed pairs
 * (VHD primary with VHDX replica, and the reverse) end identical to the primary as qemu sees them. A
 * merge into a VHDX base that is interrupted resumes from its journal although the base's DataWriteGuid
 * has changed (which breaks the overlay's parent linkage).
 */
import { existsSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  VhdxDisk, createOverlay, createVhd, createVhdx, discardOverlay, mergeJournalPath, mergeOverlay, openDisk, type Disk,
} from '../host/disk/index.js';
import { overlayPathFor } from '../host/resync/paths.js';
import { cancelResync, resync, startResync } from '../host/resync/resync.js';
import { randomBytes } from './support/bytes.js';
import { sha256File } from './support/digest.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-vhdx-resync-')));
afterAll(() => cleanup());

async function image(path: string, size: number, writes: Array<[number, Uint8Array]>, blockSize?: number): Promise<string> {
  if (path.endsWith('.vhdx')) await createVhdx(path, { size, type: 'dynamic', blockSize: blockSize ?? 8 * MiB });
  else await createVhd(path, { size, type: 'dynamic' });
  await writeTo(path, writes);
  return path;
}

async function writeTo(path: string, writes: Array<[number, Uint8Array]>): Promise<void> {
  const d = await openDisk(path);
  for (const [off, data] of writes) await d.write(off, data);
  await d.close();
}

function base(size: number, seed: number): Array<[number, Uint8Array]> {
  const out: Array<[number, Uint8Array]> = [];
  for (let off = 0; off + MiB <= size; off += 5 * MiB) out.push([off, randomBytes(MiB, seed + off / MiB)]);
  return out;
}

/** Scattered 4 KiB and sub-sector changes, some of them zeros. */
function changes(size: number, seed: number): Array<[number, Uint8Array]> {
  const out: Array<[number, Uint8Array]> = [];
  for (let i = 0; i < 24; i++) out.push([((i * 2099 * 1024) % (size - 8192)) & ~4095, randomBytes(4096, seed + i)]);
  out.push([3 * MiB + 512, new Uint8Array(1024)]);
  out.push([size - 1536, randomBytes(1536, seed + 99)]);
  return out;
}

describe('resync with VHDX disks', () => {
  const pairs: Array<[string, string, string]> = [
    ['VHDX primary, VHDX replica', 'p.vhdx', 'r.vhdx'],
    ['VHD primary, VHDX replica', 'p.vhd', 'r.vhdx'],
    ['VHDX primary, VHD replica', 'p.vhdx', 'r.vhd'],
  ];
  it.each(pairs)('%s ends identical', async (name, pName, rName) => {
    const size = 48 * MiB;
    const sub = name.replace(/\W+/g, '-');
    const p = await image(join(dir, `${sub}-${pName}`), size, base(size, 1));
    const r = await image(join(dir, `${sub}-${rName}`), size, base(size, 1));
    await writeTo(p, changes(size, 50));
    await writeTo(r, [[20 * MiB, randomBytes(MiB, 77)]]); // the replica diverged too
    expect(qemuIdentical(p, r)).toBe(false);
    const before = rName.endsWith('.vhdx') ? await dataWriteGuid(r) : undefined;
    const res = await resync({ primary: p, replica: r });
    expect(res.result).toBe('completed');
    expect(res.bytesSent).toBeGreaterThan(0);
    expect(res.bytesSent).toBeLessThanOrEqual(26 * 4096 + 2 * MiB);
    expect(existsSync(overlayPathFor(r))).toBe(false);
    expect(qemuIdentical(p, r)).toBe(true);
    if (before) expect(await dataWriteGuid(r)).not.toBe(before); // the merge is a visible change of the replica
  });

  it('a VHDX replica gets a differencing VHDX overlay with 2 MiB blocks, merged sector-accurately', async () => {
    const size = 16 * MiB;
    const r = await image(join(dir, 'ov-r.vhdx'), size, base(size, 3));
    const ov = overlayPathFor(r);
    expect(ov.endsWith('.resync.vhdx')).toBe(true);
    await createOverlay(r, ov);
    const d = (await openDisk(ov)) as Disk;
    expect(d).toBeInstanceOf(VhdxDisk);
    expect(d.type).toBe('differencing');
    expect(d.blockSize).toBe(2 * MiB);
    const expected = new Uint8Array(size);
    await d.read(0, expected);
    const w = randomBytes(700, 5);
    await d.write(4096 + 3, w); // sub-sector edges: the rest of both sectors comes from the base
    expected.set(w, 4096 + 3);
    await d.close();
    await mergeOverlay(ov);
    expect(existsSync(ov)).toBe(false);
    const merged = await openDisk(r, { readOnly: true });
    const got = new Uint8Array(size);
    await merged.read(0, got);
    await merged.close();
    expect(Buffer.from(got).equals(Buffer.from(expected))).toBe(true);
  });
});

describe('pause, resume and cancel with a VHDX replica', () => {
  it('pause leaves the base untouched, resume finishes it, cancel restores it byte for byte', async () => {
    // The first half is identical on both sides, so the first regions finish at once and the pause
    // lands at a region boundary before the differing half is reached.
    const size = 128 * MiB;
    const writes: Array<[number, Uint8Array]> = [];
    for (let off = size / 2; off < size; off += 16 * MiB) writes.push([off + 8192, randomBytes(256 * 1024, off / MiB)]);
    const p = await image(join(dir, 'pr-p.vhdx'), size, writes, 2 * MiB);
    const r = await image(join(dir, 'pr-r.vhdx'), size, [], 2 * MiB);
    const before = sha256File(r);
    const h = startResync({ primary: p, replica: r, link: { rate: 20e6, latencyMs: 1 }, onProgress: (x) => x.bytesCompared > 0 && h.pause() });
    const first = await h.done;
    expect(first.result).toBe('paused');
    expect(existsSync(overlayPathFor(r))).toBe(true);
    expect(sha256File(r)).toBe(before);
    const second = await resync({ primary: p, replica: r });
    expect(second.result).toBe('completed');
    expect(second.resumedFrom).toBeGreaterThan(0);
    expect(qemuIdentical(p, r)).toBe(true);

    const r2 = await image(join(dir, 'pr-r2.vhdx'), size, [[0, randomBytes(4096, 77)]], 2 * MiB);
    const before2 = sha256File(r2);
    const h2 = startResync({ primary: p, replica: r2, link: { rate: 20e6, latencyMs: 1 }, onProgress: (x) => x.bytesCompared > 0 && h2.pause() });
    expect((await h2.done).result).toBe('paused');
    expect(await cancelResync(r2)).toEqual({ cancelled: true });
    expect(existsSync(overlayPathFor(r2))).toBe(false);
    expect(sha256File(r2)).toBe(before2);
  });
});

describe('discarding a VHDX overlay (resync cancel)', () => {
  it('deletes the overlay and leaves the base byte-identical; refuses to delete a base', async () => {
    const size = 8 * MiB;
    const r = await image(join(dir, 'd-r.vhdx'), size, base(size, 9), 1 * MiB);
    const before = sha256File(r);
    const ov = overlayPathFor(r);
    await createOverlay(r, ov);
    await writeTo(ov, changes(size, 70));
    await discardOverlay(ov);
    expect(existsSync(ov)).toBe(false);
    expect(sha256File(r)).toBe(before);
    await expect(discardOverlay(r)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    expect(existsSync(r)).toBe(true);
  });
});

describe('merging a VHDX overlay', () => {
  it('resumes after an interruption although the base has a new DataWriteGuid', async () => {
    const size = 24 * MiB;
    const r = await image(join(dir, 'm-r.vhdx'), size, base(size, 7), 1 * MiB);
    const ov = join(dir, 'm-r.vhdx.resync.vhdx');
    await createOverlay(r, ov, { blockSize: 1 * MiB });
    await writeTo(ov, changes(size, 60));
    const chain = await openDisk(ov, { readOnly: true });
    const expected = new Uint8Array(size);
    await chain.read(0, expected);
    await chain.close();
    const original = await copyOf(r);

    // Interrupt the merge after a few blocks by failing its progress callback.
    let calls = 0;
    await expect(
      mergeOverlay(ov, {
        checkpointBytes: 1,
        onProgress: () => {
          if (++calls === 4) throw new Error('interrupted');
        },
      }),
    ).rejects.toThrow('interrupted');
    expect(existsSync(mergeJournalPath(ov))).toBe(true);
    const mid = await openDisk(r, { readOnly: true });
    expect((mid as VhdxDisk).dataWriteGuid).not.toBe(await dataWriteGuid(original));
    await mid.close();
    // The chain no longer opens (linkage), yet the merge resumes and finishes.
    await expect(openDisk(ov, { readOnly: true })).rejects.toMatchObject({ code: 'PARENT_MISMATCH' });
    const res = await mergeOverlay(ov);
    expect(res.resumed).toBe(true);
    expect(existsSync(ov)).toBe(false);
    expect(existsSync(mergeJournalPath(ov))).toBe(false);
    const done = await openDisk(r, { readOnly: true });
    const got = new Uint8Array(size);
    await done.read(0, got);
    await done.close();
    expect(Buffer.from(got).equals(Buffer.from(expected))).toBe(true);
  });
});

async function dataWriteGuid(path: string): Promise<string> {
  const d = (await openDisk(path, { readOnly: true })) as VhdxDisk;
  const id = d.dataWriteGuid;
  await d.close();
  return id;
}

async function copyOf(path: string): Promise<string> {
  const c = `${path}.orig.vhdx`;
  await copyFile(path, c);
  return c;
}
