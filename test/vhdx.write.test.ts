/**
 * Creating and writing VHDX images: what we create and write passes `qemu-img check` and reads back
 * through qemu exactly as an in-memory model of the writes says (dynamic and fixed, 1–256 MiB blocks,
 * 512-byte and 4 KiB logical sectors); every writable session gets a new DataWriteGuid before its first
 * write; differencing chains read identically through libvhdi (pyvhdi), sector by sector.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VhdxDisk, createVhdx, createVhdxDifferencing, openDisk, type Disk } from '../host/disk/index.js';
import { buildMetadataRegion, buildParentLocator, linkageText } from '../host/disk/vhdx/metadata.js';
import { MiB } from '../host/units.js';
import { firstDifference, readAll } from './support/bytes.js';
import { libvhdiRead, qemuInfo, qemuRaw } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { vhdsyncError } from './support/typed-errors.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('vhdsync-vhdx-write-').dir;
});
afterAll(() => removeDir(dir));

function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  let a = seed * 2654435761 + 1;
  for (let i = 0; i < len; i++) {
    a = (a * 1103515245 + 12345) >>> 0;
    b[i] = (a >>> 16) & 0xff || 1;
  }
  return b;
}

/** Apply `writes` to both the disk and a model; returns the model. */
async function writeBoth(disk: Disk, model: Uint8Array, writes: Array<[number, Uint8Array]>): Promise<void> {
  for (const [off, data] of writes) {
    await disk.write(off, data);
    model.set(data, off);
  }
}

/** Byte equality with a native compare first (these images run to hundreds of MiB). */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  if (Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(Buffer.from(expected.buffer, expected.byteOffset, expected.length))) return;
  expect(firstDifference(actual, expected), `${what}: first differing byte`).toBe(-1);
}

function qemuCheck(path: string): { status: number | null; out: string } {
  const r = spawnSync('qemu-img', ['check', '-f', 'vhdx', path], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** Writes that hit block starts and ends, straddle blocks, fall on odd bytes, and write zeros over data. */
function scatteredWrites(size: number, blockSize: number, seed: number): Array<[number, Uint8Array]> {
  const w: Array<[number, Uint8Array]> = [
    [0, pattern(seed, 4096)],
    [blockSize - 1000, pattern(seed + 1, 3000)],
    [Math.min(size - 513, 2 * blockSize + 777), pattern(seed + 2, 513)],
    [size - 4096, pattern(seed + 3, 4096)],
    [100, new Uint8Array(200)], // zeros over data
    [Math.floor(size / 2) + 3, pattern(seed + 4, 70000)],
  ];
  return w.filter(([o, d]) => o >= 0 && o + d.length <= size);
}

/**
 * The external oracle for an image: qemu (check, info, convert) for 512-byte sectors; qemu 7.2 refuses
 * 4 KiB logical sectors ("Operation not supported"), so libvhdi reads those.
 */
function oracleRead(path: string, size: number, sector: number): Uint8Array {
  if (sector === 512) {
    const check = qemuCheck(path);
    expect(check.status, check.out).toBe(0);
    return qemuRaw(path, 'vhdx');
  }
  expect(qemuCheck(path).out).toContain('Operation not supported');
  return libvhdiRead([path], size);
}

describe('created and written VHDX images pass qemu-img check and read back through qemu (libvhdi for 4 KiB sectors)', () => {
  const cases: Array<[string, 'fixed' | 'dynamic', number, number, number]> = [
    ['dynamic, 1 MiB blocks, 512-byte sectors', 'dynamic', 24 * MiB + 512, 1 * MiB, 512],
    ['dynamic, 32 MiB blocks (Hyper-V default)', 'dynamic', 80 * MiB, 32 * MiB, 512],
    ['dynamic, 256 MiB blocks', 'dynamic', 260 * MiB, 256 * MiB, 512],
    ['dynamic, 4 KiB logical sectors', 'dynamic', 20 * MiB, 2 * MiB, 4096],
    ['fixed, 8 MiB blocks', 'fixed', 20 * MiB, 8 * MiB, 512],
    ['fixed, 4 KiB logical sectors', 'fixed', 6 * MiB, 1 * MiB, 4096],
  ];
  it.each(cases)('%s', async (_name, type, size, blockSize, sector) => {
    const path = join(dir, `c-${type}-${blockSize}-${sector}-${size}.vhdx`);
    await createVhdx(path, { size, type, blockSize, logicalSectorSize: sector });
    if (sector === 512) {
      const info = qemuInfo(path, 'vhdx');
      expect(info['virtual-size']).toBe(size);
      expect(info['cluster-size']).toBe(blockSize);
    }
    if (sector === 512) expect(qemuCheck(path).status, 'qemu-img check of the new image').toBe(0);
    const model = new Uint8Array(size);

    const disk = await openDisk(path);
    expect(disk.format).toBe('vhdx');
    expect(disk.type).toBe(type);
    expect(disk.sectorSize).toBe(sector);
    await writeBoth(disk, model, scatteredWrites(size, blockSize, size % 97));
    expectSameBytes(await readAll(disk), model, 'our read before close');
    await disk.close();
    expectSameBytes(oracleRead(path, size, sector), model, 'oracle read after our writes');
    const again = await openDisk(path, { readOnly: true });
    expectSameBytes(await readAll(again), model, 'our read after reopening');
    await again.close();
  });

  it('a write session on a qemu image leaves an image qemu reads as our model (qemu writes more, we read it)', async () => {
    const path = join(dir, 'qemu-made.vhdx');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', path, '12M']);
    execFileSync('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x41 1M 8k', path], { stdio: 'ignore' });
    const model = qemuRaw(path, 'vhdx');
    const disk = await openDisk(path);
    await writeBoth(disk, model, [[1 * MiB + 4096, pattern(1, 100)], [5 * MiB - 7, pattern(2, 20)], [11 * MiB, new Uint8Array(4096)]]);
    await disk.close();
    expect(qemuCheck(path).status).toBe(0);
    execFileSync('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x42 9M 4k', path], { stdio: 'ignore' });
    model.fill(0x42, 9 * MiB, 9 * MiB + 4096);
    const d = await openDisk(path, { readOnly: true });
    expectSameBytes(await readAll(d), model, 'after qemu wrote again');
    await d.close();
  });

  it('writing zeros into an empty dynamic disk allocates nothing', async () => {
    const path = join(dir, 'zeros.vhdx');
    await createVhdx(path, { size: 8 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    const size0 = statSync(path).size;
    const disk = (await openDisk(path)) as VhdxDisk;
    await disk.write(0, new Uint8Array(3 * MiB));
    expect(disk.allocatedBlocks()).toBe(0);
    await disk.close();
    expect(statSync(path).size).toBe(size0);
  });
});

describe('header GUIDs', () => {
  it('a writable session gets a new DataWriteGuid before its first write, and only then', async () => {
    const path = join(dir, 'guids.vhdx');
    await createVhdx(path, { size: 4 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    const id = async (readOnly: boolean, write?: boolean) => {
      const d = (await openDisk(path, { readOnly })) as VhdxDisk;
      const before = d.dataWriteGuid;
      if (write) await d.write(4096, pattern(9, 512));
      const after = d.dataWriteGuid;
      await d.close();
      return { before, after };
    };
    const a = await id(true);
    const b = await id(false); // opened writable, nothing written: nothing changes
    expect(b.before).toBe(a.before);
    expect(b.after).toBe(a.before);
    const c = await id(false, true);
    expect(c.before).toBe(a.before);
    expect(c.after).not.toBe(a.before);
    const d = await id(true);
    expect(d.before).toBe(c.after); // durable
    const e = await id(false, true);
    expect(e.after).not.toBe(c.after);
  });
});

describe('differencing VHDX', () => {
  it('reads through to the parent sector by sector and matches libvhdi on 4 KiB-aligned writes', async () => {
    const base = join(dir, 'base.vhdx');
    const size = 40 * MiB;
    await createVhdx(base, { size, type: 'dynamic', blockSize: 2 * MiB });
    const model = new Uint8Array(size);
    let d = await openDisk(base);
    await writeBoth(d, model, [[0, pattern(1, 6 * MiB)], [20 * MiB, pattern(2, 3 * MiB)], [39 * MiB, pattern(3, MiB)]]);
    await d.close();
    const child = join(dir, 'child.vhdx');
    await createVhdxDifferencing(child, base, { blockSize: 1 * MiB });
    d = await openDisk(child);
    expect(d.type).toBe('differencing');
    expect(d.parent?.path).toBe(base);
    await writeBoth(d, model, [
      [4096, pattern(4, 8192)],
      [2 * MiB - 4096, new Uint8Array(8192)], // zeros over parent data, straddling blocks
      [21 * MiB, pattern(5, 4096)],
      [30 * MiB, pattern(6, 12288)], // over an absent parent block
      [size - 4096, pattern(7, 4096)],
    ]);
    await d.close();
    d = await openDisk(child, { readOnly: true });
    expectSameBytes(await readAll(d), model, 'our chain read');
    await d.close();
    expectSameBytes(libvhdiRead([child, base], size), model, 'libvhdi chain read');
    // vhdiinfo links the two the same way: the child's parent identifier is the base's DataWriteGuid.
    const field = (path: string, name: string) => new RegExp(`${name}\\s*:\\s*(\\S+)`).exec(execFileSync('vhdiinfo', [path], { encoding: 'utf8' }))?.[1];
    const b = (await openDisk(base, { readOnly: true })) as VhdxDisk;
    expect(field(base, 'Identifier')).toBe(b.dataWriteGuid);
    await b.close();
    expect(field(child, 'Disk type')).toBe('Differential');
    expect(field(child, 'Parent identifier')).toBe(field(base, 'Identifier'));
    expect(field(child, 'Parent filename')).toBe(base);
  });

  it('sub-sector writes keep the rest of the sector from the parent (512 B and 4 KiB sectors)', async () => {
    for (const sector of [512, 4096]) {
      const base = join(dir, `sub-base-${sector}.vhdx`);
      const size = 8 * MiB;
      await createVhdx(base, { size, type: 'dynamic', blockSize: 1 * MiB, logicalSectorSize: sector });
      const model = new Uint8Array(size);
      let d = await openDisk(base);
      await writeBoth(d, model, [[0, pattern(11, size)]]);
      await d.close();
      const child = join(dir, `sub-child-${sector}.vhdx`);
      await createVhdxDifferencing(child, base);
      d = await openDisk(child);
      expect(d.sectorSize).toBe(sector);
      await writeBoth(d, model, [
        [sector + 7, pattern(12, 3)],
        [3 * sector - 1, pattern(13, 2)],
        [MiB - 100, pattern(14, 200)],
        [5 * MiB + 1, new Uint8Array(sector)],
        [sector + 9, pattern(15, 1)], // again, into a sector this file already holds
      ]);
      expectSameBytes(await readAll(d), model, `open chain, ${sector}-byte sectors`);
      await d.close();
      d = await openDisk(child, { readOnly: true });
      expectSameBytes(await readAll(d), model, `reopened chain, ${sector}-byte sectors`);
      await d.close();
    }
  });

  it('a chain that loops is one PARENT_LOOP error', async () => {
    const base = join(dir, 'loop-base.vhdx');
    await createVhdx(base, { size: 4 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    const a = join(dir, 'loop-a.vhdx');
    const b = join(dir, 'loop-b.vhdx');
    await createVhdxDifferencing(a, base);
    await createVhdxDifferencing(b, a);
    // Point a back at b: rebuild a's metadata region with a locator naming b and b's DataWriteGuid.
    const bDisk = (await openDisk(b, { readOnly: true })) as VhdxDisk;
    const aDisk = bDisk.parent as VhdxDisk;
    const locator = buildParentLocator([['parent_linkage', linkageText(bDisk.dataWriteGuidBytes)], ['relative_path', '.\\loop-b.vhdx']]);
    const region = buildMetadataRegion({ ...aDisk.params, parentLocator: undefined }, locator);
    await bDisk.close();
    const fh = await openFile(a, 'r+');
    await fh.write(region, 0, region.length, 3 * MiB); // our layout: log at 1 MiB, BAT at 2 MiB, metadata at 3 MiB
    await fh.close();
    const err = await vhdsyncError(openDisk(b, { readOnly: true }));
    expect(err.code).toBe('PARENT_LOOP');
  });

  it('refuses a parent that was written after the child was made', async () => {
    const base = join(dir, 'moved-on.vhdx');
    await createVhdx(base, { size: 4 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    const child = join(dir, 'moved-on-child.vhdx');
    await createVhdxDifferencing(child, base);
    const p = await openDisk(base);
    await p.write(0, pattern(1, 512));
    await p.close();
    const err = await vhdsyncError(openDisk(child, { readOnly: true }));
    expect(err.code).toBe('PARENT_MISMATCH');
    expect(err.message).toMatch(/DataWriteGuid/);
  });
});

describe('a metadata update larger than one log entry', () => {
  it('commits in several log cycles; qemu accepts the result (200 GiB dynamic, 400 BAT pages)', async () => {
    const path = join(dir, 'wide.vhdx');
    const size = 200 * 1024 * MiB;
    await createVhdx(path, { size, type: 'dynamic', blockSize: 1 * MiB });
    const d = (await openDisk(path)) as VhdxDisk;
    const seq0 = d.headerSequence;
    const spots: number[] = [];
    for (let off = 0; off < size; off += 512 * MiB) spots.push(off + 4096);
    for (const [i, off] of spots.entries()) await d.write(off, pattern(i, 4096));
    await d.flush();
    // Two header updates start the session, and each log cycle sets then clears the LogGuid:
    // 400 pages at 253 per entry take 2 cycles.
    expect(d.headerSequence - seq0).toBe(2n + 2n * 2n);
    await d.close();
    expect(qemuCheck(path).status).toBe(0);
    const io = spawnSync('qemu-io', ['-f', 'vhdx', '-c', `read -v ${spots[399]} 16`, path], { encoding: 'utf8' });
    const hex = [...pattern(399, 16)].map((x) => x.toString(16).padStart(2, '0')).join(' ');
    expect(io.stdout).toContain(hex);
    const r = await openDisk(path, { readOnly: true });
    for (const [i, off] of spots.entries()) {
      const b = new Uint8Array(4096);
      await r.read(off, b);
      expect(Buffer.from(b).equals(Buffer.from(pattern(i, 4096))), `spot ${i}`).toBe(true);
    }
    await r.close();
  });

  it('differencing: sector bitmap blocks of 50 chunks and 400 BAT pages, read back through the chain', async () => {
    const base = join(dir, 'wide-base.vhdx');
    const size = 200 * 1024 * MiB;
    await createVhdx(base, { size, type: 'dynamic', blockSize: 1 * MiB });
    const child = join(dir, 'wide-child.vhdx');
    await createVhdxDifferencing(child, base);
    const d = await openDisk(child);
    const spots: number[] = [];
    for (let off = 0; off < size; off += 512 * MiB) spots.push(off + 512 * 3);
    for (const [i, off] of spots.entries()) await d.write(off, pattern(i, 1024));
    await d.close();
    const r = await openDisk(child, { readOnly: true });
    for (const [i, off] of spots.entries()) {
      const b = new Uint8Array(2048);
      await r.read(off - 512, b);
      const want = new Uint8Array(2048);
      want.set(pattern(i, 1024), 512);
      expect(Buffer.from(b).equals(Buffer.from(want)), `spot ${i}`).toBe(true);
    }
    await r.close();
  });
});
