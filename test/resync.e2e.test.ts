import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { open, stat, copyFile } from 'node:fs/promises';
import { existsSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { resync, startResync, cancelResync, createVhd, openDisk, overlayPathFor, checkpointPathFor, EventLog, openTrackedDisk, trackingLogPathFor } from '../host/index.js';
import { resizeImage } from '../host/disk/resize.js';
import { randomBytes } from './support/bytes.js';
import { sha256File } from './support/digest.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir()));
afterAll(() => cleanup());

let n = 0;
const path = (name: string) => join(dir, `${n}-${name}`);

async function vhdImage(p: string, size: number, writes: [number, Uint8Array][] = []): Promise<string> {
  await createVhd(p, { size, type: 'dynamic' });
  const d = await openDisk(p);
  for (const [off, data] of writes) await d.write(off, data);
  await d.close();
  return p;
}

async function applyWrites(p: string, writes: [number, Uint8Array][]): Promise<void> {
  const d = await openDisk(p);
  for (const [off, data] of writes) await d.write(off, data);
  await d.close();
}

/** Base content shared by both sides: a few MiB of data spread over the disk. */
function baseWrites(size: number, seed: number): [number, Uint8Array][] {
  const out: [number, Uint8Array][] = [];
  for (let off = 0; off + MiB <= size; off += 7 * MiB) out.push([off, randomBytes(MiB, seed + off / MiB)]);
  return out;
}

describe('resync end to end on real files', () => {
  it('identical disks send nothing and stay identical', async () => {
    n++;
    const size = 64 * MiB;
    const p = await vhdImage(path('p.vhd'), size, baseWrites(size, 1));
    const r = path('r.vhd');
    await copyFile(p, r);
    const res = await resync({ primary: p, replica: r });
    expect(res.result).toBe('completed');
    expect(res.bytesSent).toBe(0);
    expect(res.blocksSent).toBe(0);
    expect(res.bytesCompared).toBe((await openDisk(p, { readOnly: true }).then(async (d) => (await d.close(), d.virtualSize))));
    expect(qemuIdentical(p, r)).toBe(true);
    expect(existsSync(overlayPathFor(r))).toBe(false);
    expect(existsSync(checkpointPathFor(r))).toBe(false);
  });

  it('identical disks: no overlay is ever created and the replica file is not written (issue 17)', async () => {
    n++;
    const size = 48 * MiB;
    const p = await vhdImage(path('p.vhd'), size, baseWrites(size, 2));
    const r = path('r.vhd');
    await copyFile(p, r);
    const before = await stat(r);
    const seen: string[] = [];
    const watcher = watch(dir, (_event, name) => name && seen.push(String(name)));
    try {
      const res = await resync({ primary: p, replica: r });
      expect(res).toMatchObject({ result: 'completed', identical: true, bytesSent: 0 });
    } finally {
      watcher.close();
    }
    expect(seen.filter((f) => f.includes(basename(overlayPathFor(r))))).toEqual([]);
    const after = await stat(r);
    expect([after.mtimeMs, after.ctimeMs, after.size]).toEqual([before.mtimeMs, before.ctimeMs, before.size]);
    expect(existsSync(checkpointPathFor(r))).toBe(false);
  });

  it('identical disks paused and resumed: the pause keeps its progress (an overlay comes with the checkpoint)', async () => {
    n++;
    const size = 256 * MiB;
    const p = await rawImage(path('p.img'), size, [[0, randomBytes(MiB, 31)], [200 * MiB, randomBytes(MiB, 32)]]);
    const r = path('r.img');
    await copyFile(p, r);
    const h = startResync({ primary: p, replica: r, onProgress: (x) => x.bytesCompared >= 3 * 16 * MiB && h.pause() });
    const first = await h.done;
    expect(first.result).toBe('paused');
    expect(existsSync(checkpointPathFor(r))).toBe(true);
    expect(existsSync(overlayPathFor(r))).toBe(true);
    const second = await resync({ primary: p, replica: r });
    expect(second).toMatchObject({ result: 'completed', bytesSent: 0 });
    expect(second.resumedFrom).toBeGreaterThan(0);
    expect(sha256File(r)).toBe(sha256File(p));
    expect(existsSync(overlayPathFor(r))).toBe(false);
  });

  it('scattered 4 KiB and 64 KiB changes: only the changed leaves are sent', async () => {
    n++;
    const size = 128 * MiB;
    const p = await vhdImage(path('p.vhd'), size, baseWrites(size, 2));
    const r = path('r.vhd');
    await copyFile(p, r);
    const changes: [number, Uint8Array][] = [];
    for (let i = 0; i < 30; i++) changes.push([(i * 4099 * 1024) % (size - 4096) & ~4095, randomBytes(4096, 100 + i)]);
    for (let i = 0; i < 10; i++) changes.push([(i * 12_345 * 1024) % (size - 65536) & ~4095, randomBytes(65536, 200 + i)]);
    await applyWrites(p, changes);
    const res = await resync({ primary: p, replica: r });
    expect(res.result).toBe('completed');
    expect(res.bytesSent).toBeGreaterThan(0);
    expect(res.bytesSent).toBeLessThanOrEqual(30 * 4096 + 10 * 65536);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('one large contiguous change', async () => {
    n++;
    const size = 96 * MiB;
    const p = await vhdImage(path('p.vhd'), size, baseWrites(size, 3));
    const r = path('r.vhd');
    await copyFile(p, r);
    await applyWrites(p, [[5 * MiB + 4096, randomBytes(40 * MiB, 9)]]);
    const res = await resync({ primary: p, replica: r });
    expect(res.bytesSent).toBe(40 * MiB);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('changes in the last, partial region and leaf (raw, size not a multiple of the leaf)', async () => {
    n++;
    const size = 40 * MiB + 3 * 512; // last leaf is 1.5 KiB
    const p = await rawImage(path('p.img'), size, [[0, randomBytes(MiB, 4)]]);
    const r = path('r.img');
    await copyFile(p, r);
    const fh = await open(p, 'r+');
    await fh.write(randomBytes(1536, 5), 0, 1536, size - 1536);
    await fh.write(randomBytes(512, 6), 0, 512, size - 5 * 512);
    await fh.close();
    const res = await resync({ primary: p, replica: r });
    expect(res.result).toBe('completed');
    expect(res.bytesSent).toBe(4096 + 1536);
    expect((await stat(r)).size).toBe(size);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('primary allocated where the replica is absent, and the reverse', async () => {
    n++;
    const size = 64 * MiB;
    const p = await vhdImage(path('p.vhd'), size, [[2 * MiB, randomBytes(3 * MiB, 7)]]);
    const r = await vhdImage(path('r.vhd'), size, [[20 * MiB, randomBytes(2 * MiB, 8)]]);
    const res = await resync({ primary: p, replica: r });
    expect(res.result).toBe('completed');
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('mixed formats: VHD primary to raw replica, raw primary to VHD replica', async () => {
    n++;
    const size = 48 * MiB;
    const p1 = await vhdImage(path('p.vhd'), size, baseWrites(size, 10));
    const r1 = await rawImage(path('r.img'), size, [[MiB, randomBytes(MiB, 11)]]);
    expect((await resync({ primary: p1, replica: r1 })).result).toBe('completed');
    expect(qemuIdentical(p1, r1)).toBe(true);

    const p2 = await rawImage(path('p2.img'), size, baseWrites(size, 12));
    const r2 = await vhdImage(path('r2.vhd'), size, [[9 * MiB, randomBytes(MiB, 13)]]);
    expect((await resync({ primary: p2, replica: r2 })).result).toBe('completed');
    expect(qemuIdentical(p2, r2)).toBe(true);
  });

  it('a freshly created empty replica is an initial replication', async () => {
    n++;
    const size = 64 * MiB;
    const p = await vhdImage(path('p.vhd'), size, baseWrites(size, 14));
    const r = await vhdImage(path('r.vhd'), size);
    const res = await resync({ primary: p, replica: r, compress: true });
    expect(res.result).toBe('completed');
    expect(qemuIdentical(p, r)).toBe(true);
    // qemu-img made replica: also readable by qemu after our writes and merge
    expect(execFileSync('qemu-img', ['info', '--output=json', '-f', 'vpc', r], { encoding: 'utf8' })).toContain('"format": "vpc"');
  });

  it('a qemu-img made pair resyncs', async () => {
    n++;
    const p = path('q.vhd');
    const r = path('qr.vhd');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', p, '64M']);
    execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 5M 64k', p], { stdio: 'ignore' });
    execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', r, '64M']);
    execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x11 3M 8k', r], { stdio: 'ignore' });
    const res = await resync({ primary: p, replica: r });
    expect(res.result).toBe('completed');
    expect(qemuIdentical(p, r)).toBe(true);
    execFileSync('qemu-io', ['-f', 'vpc', '-r', '-c', 'read -P 0xcd 5M 64k', '-c', 'read -P 0 3M 8k', r], { stdio: 'ignore' });
  });

  it('refuses disks of different sizes before writing anything, naming both sizes', async () => {
    n++;
    const p = await rawImage(path('p.img'), 32 * MiB);
    const r = await rawImage(path('r.img'), 16 * MiB, [[0, randomBytes(4096, 1)]]);
    const before = sha256File(r);
    await expect(resync({ primary: p, replica: r })).rejects.toThrow(/virtual size 16 MiB .* differs from .* \(32 MiB/);
    expect(sha256File(r)).toBe(before);
    expect(existsSync(overlayPathFor(r))).toBe(false);
    // The fix it names works: a smaller replica is grown, then the resync completes.
    await expect(resync({ primary: p, replica: r })).rejects.toThrow(`grow the replica first: vhdsync resize ${r} ${32 * MiB}`);
    await resizeImage(r, { to: 32 * MiB });
    expect((await resync({ primary: p, replica: r })).result).toBe('completed');
    expect(sha256File(r)).toBe(sha256File(p));
    // A larger dynamic VHD cannot be cut: the message says so and names the way out.
    const big = join(dir, 'big.vhd');
    await createVhd(big, { size: 64 * MiB, type: 'dynamic' });
    await expect(resync({ primary: p, replica: big })).rejects.toThrow(`a replica cannot be larger: cut it (vhdsync resize ${big} ${32 * MiB} --shrink, raw and fixed VHD only) or create one of the primary's size (vhdsync create ${big} --size ${32 * MiB})`);
  });

  it('--dry-run reports what would be sent and writes nothing', async () => {
    n++;
    const size = 32 * MiB;
    const p = await rawImage(path('p.img'), size, [[3 * MiB, randomBytes(8192, 2)]]);
    const r = await rawImage(path('r.img'), size);
    const before = sha256File(r);
    const res = await resync({ primary: p, replica: r, dryRun: true });
    expect(res.dryRun).toBe(true);
    expect(res.identical).toBe(false);
    expect(res.bytesSent).toBe(8192);
    expect(sha256File(r)).toBe(before);
    expect(existsSync(overlayPathFor(r))).toBe(false);
    expect(existsSync(checkpointPathFor(r))).toBe(false);
  });

  it('emits 29242 and 29244 with the disk, blocks and result', async () => {
    n++;
    const size = 32 * MiB;
    const p = await rawImage(path('p.img'), size, [[0, randomBytes(16384, 3)]]);
    const r = await rawImage(path('r.img'), size);
    const events = new EventLog();
    const res = await resync({ primary: p, replica: r, vm: 'VM1', events });
    const [start, end] = res.events;
    expect(start).toMatchObject({ id: 29242, vm: 'VM1', disks: [p], startBlock: 0, endBlock: 15 });
    expect(end).toMatchObject({ id: 29244, vm: 'VM1', disk: p, blocksSent: 4, result: 'completed' });
    expect(events.records).toHaveLength(2);
  });

  it('pause stops at a region boundary, resume continues from the checkpoint, cancel restores the base', async () => {
    n++;
    const size = 256 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let off = 0; off < size; off += 16 * MiB) writes.push([off + 8192, randomBytes(256 * 1024, off / MiB)]);
    const p = await rawImage(path('p.img'), size, writes);
    const r = await rawImage(path('r.img'), size);
    const before = sha256File(r);
    // 256 KiB per region at 20 MB/s: ~13 ms a region
    const h = startResync({
      primary: p,
      replica: r,
      link: { rate: 20e6, latencyMs: 1 },
      onProgress: (x) => x.bytesCompared >= 3 * 16 * MiB && h.pause(),
    });
    const first = await h.done;
    expect(first.result).toBe('paused');
    expect(first.bytesCompared).toBeLessThan(size);
    expect(existsSync(checkpointPathFor(r))).toBe(true);
    expect(sha256File(r)).toBe(before); // base untouched while the overlay takes the writes

    const second = await resync({ primary: p, replica: r });
    expect(second.result).toBe('completed');
    expect(second.resumedFrom).toBeGreaterThan(0);
    expect(second.bytesSent).toBeLessThan(16 * 256 * 1024);
    expect(qemuIdentical(p, r)).toBe(true);

    // Cancel: a paused resync of a fresh replica is dropped and the base is byte-identical.
    const r2 = await rawImage(path('r2.img'), size, [[0, randomBytes(4096, 77)]]);
    const before2 = sha256File(r2);
    const h2 = startResync({
      primary: p,
      replica: r2,
      link: { rate: 20e6, latencyMs: 1 },
      onProgress: (x) => x.bytesCompared >= 2 * 16 * MiB && h2.pause(),
    });
    expect((await h2.done).result).toBe('paused');
    expect(await cancelResync(r2)).toEqual({ cancelled: true });
    expect(existsSync(overlayPathFor(r2))).toBe(false);
    expect(existsSync(checkpointPathFor(r2))).toBe(false);
    expect(sha256File(r2)).toBe(before2);
    const third = await resync({ primary: p, replica: r2 });
    expect(third.resumedFrom).toBe(0);
    expect(qemuIdentical(p, r2)).toBe(true);
  });

  it('a resumed resync whose primary was replaced or written around its tracker while paused compares again from the start: "completed" means equal', async () => {
    n++;
    const size = 128 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let off = 0; off < size; off += 16 * MiB) writes.push([off + 8192, randomBytes(256 * 1024, 300 + off / MiB)]);
    const p = await rawImage(path('p.img'), size, writes);
    const pausedAfter = async (primary: string, replica: string) => {
      const h = startResync({ primary, replica, link: { rate: 20e6, latencyMs: 1 }, onProgress: (x) => x.bytesCompared >= 32 * MiB && h.pause() });
      const r = await h.done;
      expect(r.result).toBe('paused');
      return r;
    };
    // Written by something other than the tracker (a raw write to the file) in a region already compared.
    const r = await rawImage(path('r.img'), size);
    await pausedAfter(p, r);
    const fh = await open(p, 'r+');
    await fh.write(randomBytes(64 * 1024, 9), 0, 64 * 1024, 1 * MiB);
    await fh.close();
    const resumed = await resync({ primary: p, replica: r });
    expect(resumed.result).toBe('completed');
    expect(resumed.comparedAgain).toMatch(/was written while the resync was interrupted, not through its tracking log/);
    expect(qemuIdentical(p, r)).toBe(true);
    // Another file of the same name (a copy elsewhere, with different data) resumes the same checkpoint.
    const other = join(dir, `${n}-other`);
    await (await import('node:fs/promises')).mkdir(other);
    const twin = await rawImage(join(other, `${n}-p.img`), size, writes.map(([o, d]) => [o, d.map((b) => b ^ 0x5a)]));
    const r2 = await rawImage(path('r2.img'), size);
    await pausedAfter(p, r2);
    const switched = await resync({ primary: twin, replica: r2 });
    expect(switched.comparedAgain).toMatch(/is not the file the interrupted resync compared/);
    expect(qemuIdentical(twin, r2)).toBe(true);
    // Nothing changed while paused: resumed as before (from its checkpoint), no second compare.
    const r3 = await rawImage(path('r3.img'), size);
    await pausedAfter(p, r3);
    const plain = await resync({ primary: p, replica: r3 });
    expect(plain.result).toBe('completed');
    expect(plain.comparedAgain).toBeUndefined();
    expect(qemuIdentical(p, r3)).toBe(true);
  });

  it('killed in its merge: --restart is refused naming the way out, and a run from any primary of that size finishes it and compares again', async () => {
    n++;
    const size = 128 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let off = 0; off < size; off += 16 * MiB) writes.push([off + 8192, randomBytes(256 * 1024, 500 + off / MiB)]);
    const p = await rawImage(path('p.img'), size, writes);
    const r = await rawImage(path('r.img'), size);
    // A run stopped with part of the disk in its overlay, its checkpoint then marked as a merge that
    // started: what a kill right after the merge journal was written leaves (the overlay holds what it holds).
    const h = startResync({ primary: p, replica: r, link: { rate: 20e6, latencyMs: 1 }, onProgress: (x) => x.bytesCompared >= 32 * MiB && h.pause() });
    expect((await h.done).result).toBe('paused');
    const cp = JSON.parse(readFileSync(checkpointPathFor(r), 'utf8')) as { virtualSize: number; regionSize: number };
    writeFileSync(checkpointPathFor(r), JSON.stringify({ ...cp, phase: 'merging', nextRegion: Math.ceil(cp.virtualSize / cp.regionSize) }));
    await expect(resync({ primary: p, replica: r, restart: true })).rejects.toMatchObject({
      code: 'STATE',
      message: expect.stringMatching(/has started merging into this replica \(the point of no return\), so it cannot start over; run the resync again without --restart to finish it/),
    });
    // The original primary is gone: another file of the same size finishes the merge, then the compare runs against it.
    const other = await rawImage(path('other.img'), size, [[8 * MiB, randomBytes(MiB, 43)]]);
    const done = await resync({ primary: other, replica: r });
    expect(done.result).toBe('completed');
    expect(done.comparedAgain).toMatch(/is not the file the interrupted resync compared/);
    expect(qemuIdentical(other, r)).toBe(true);
    expect(existsSync(checkpointPathFor(r))).toBe(false);
  });

  // Identical disks have no overlay to merge (issue 17): the tracked writes then go straight into the base.
  it.each([
    ['the replica differs by a MiB', true],
    ['the disks are identical (no overlay to merge)', false],
  ])('writes made through the tracker during the resync reach the replica: %s', async (_name, differ) => {
    n++;
    const size = 128 * MiB;
    const p = await vhdImage(path('p.vhd'), size, baseWrites(size, 20));
    const r = path('r.vhd');
    await copyFile(p, r);
    if (differ) await applyWrites(p, [[MiB, randomBytes(MiB, 21)]]);
    // A slow link keeps the resync running while the "guest" writes, early and late on the disk.
    let compared = 0;
    const h = startResync({ primary: p, replica: r, link: { rate: 4e6, latencyMs: 2 }, onProgress: (x) => (compared = x.bytesCompared) });
    // Write once tracking has started and the first regions are compared.
    while (compared === 0) await new Promise((res) => setTimeout(res, 5));
    expect(existsSync(trackingLogPathFor(p))).toBe(true);
    const guest = await openTrackedDisk(p);
    await guest.write(0, randomBytes(4096, 22)); // region already compared
    await guest.write(size - 8192, randomBytes(8192, 23)); // region not compared yet
    await guest.close();
    const res = await h.done;
    expect(res.result).toBe('completed');
    expect(res.trackedWritesApplied).toBe(2);
    expect(res.bytesSent > 0).toBe(differ);
    expect(qemuIdentical(p, r)).toBe(true);
    expect(existsSync(checkpointPathFor(r))).toBe(false);
  });
});
