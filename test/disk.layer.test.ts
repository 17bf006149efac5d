/**
 * A differencing file seen alone as a layer (`DiskLayer`: what it defines itself, what merge copies and a
 * pre-resync point saves), and the format facts a discard uses to recognise a damaged overlay: a VHD
 * footer's disk type with its checksum unchecked, a VHDX made by vhdsync.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDifferencing, createOverlay, createVhd, createVhdx, createVhdxDifferencing, discardOverlay, openDisk, openDiskLayer,
  type ByteRange, type DiskLayer,
} from '../host/disk/index.js';
import { qemuImg } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-layer-'));
});
afterAll(() => cleanup());

async function writeInto(path: string, writes: Array<[number, number]>): Promise<void> {
  const disk = await openDisk(path);
  for (const [offset, length] of writes) await disk.write(offset, new Uint8Array(length).fill(0x5a));
  await disk.close();
}

async function allOwned(layer: DiskLayer): Promise<ByteRange[]> {
  const out: ByteRange[] = [];
  for (let b = 0; b < layer.blockCount; b++) if (layer.isAllocated(b)) out.push(...(await layer.ownedRanges(b)));
  return out;
}

/** Flip one byte at each offset (a damage that a checksum or CRC catches). */
function damage(path: string, offsets: number[]): void {
  const b = readFileSync(path);
  for (const at of offsets) b[at < 0 ? b.length + at : at] ^= 0xff;
  writeFileSync(path, b);
}

describe('DiskLayer', () => {
  const writes: Array<[number, number]> = [[4096, 1024], [2 * MiB + 512, 512], [5 * MiB, 3 * 512]];

  it('a differencing VHD and a differencing VHDX own exactly the sectors written into them', async () => {
    await createVhd(join(dir, 'base.vhd'), { size: 8 * MiB, type: 'dynamic' });
    await createDifferencing(join(dir, 'child.vhd'), join(dir, 'base.vhd'));
    await createVhdx(join(dir, 'base.vhdx'), { size: 8 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    await createVhdxDifferencing(join(dir, 'child.vhdx'), join(dir, 'base.vhdx'));
    for (const child of ['child.vhd', 'child.vhdx']) {
      await writeInto(join(dir, child), writes);
      const layer = await openDiskLayer(join(dir, child), { readOnly: true });
      try {
        expect(await allOwned(layer)).toEqual(writes.map(([offset, length]) => ({ offset, length })));
        const own = new Uint8Array(1024);
        await layer.readOwn(4096, own);
        expect(own.every((x) => x === 0x5a)).toBe(true);
      } finally {
        await layer.close();
      }
    }
  });

  it('a fixed VHD is refused as a layer with one line (UNSUPPORTED)', async () => {
    await createVhd(join(dir, 'fixed.vhd'), { size: 4 * MiB, type: 'fixed' });
    await expect(openDiskLayer(join(dir, 'fixed.vhd'))).rejects.toMatchObject({
      code: 'UNSUPPORTED',
      message: `${join(dir, 'fixed.vhd')}: a fixed VHD, not a layer of a differencing chain (a dynamic or differencing disk)`,
    });
  });
});

describe('discarding a damaged overlay', () => {
  it('a VHD overlay whose two footers fail their checksum is still recognised as differencing and deleted', async () => {
    const base = join(dir, 'd-base.vhd');
    const ov = join(dir, 'd-base.vhd.resync.vhd');
    await createVhd(base, { size: 4 * MiB, type: 'dynamic' });
    await createOverlay(base, ov);
    damage(ov, [200, -312]); // a reserved byte of the footer copy at 0 and of the trailing footer
    await expect(openDisk(ov)).rejects.toMatchObject({ code: 'BAD_CHECKSUM' });
    await discardOverlay(ov);
    expect(existsSync(ov)).toBe(false);
  });

  it('a damaged dynamic VHD is not deleted as an overlay: the open error stands', async () => {
    const img = join(dir, 'd-dyn.vhd');
    await createVhd(img, { size: 4 * MiB, type: 'dynamic' });
    damage(img, [200, -312]);
    await expect(discardOverlay(img)).rejects.toMatchObject({ code: 'BAD_CHECKSUM' });
    expect(existsSync(img)).toBe(true);
  });

  it('a VHDX overlay made by vhdsync with both headers damaged is deleted; a damaged qemu VHDX is not', async () => {
    const base = join(dir, 'd-base.vhdx');
    const ov = join(dir, 'd-base.vhdx.resync.vhdx');
    await createVhdx(base, { size: 4 * MiB, type: 'dynamic', blockSize: 1 * MiB });
    await createOverlay(base, ov);
    const headers = [64 * 1024 + 100, 128 * 1024 + 100];
    damage(ov, headers);
    const opened = await openDisk(ov).then(() => undefined, (e: unknown) => e);
    expect(opened).toMatchObject({ code: expect.any(String) });
    await discardOverlay(ov);
    expect(existsSync(ov)).toBe(false);

    const theirs = join(dir, 'qemu.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', theirs, '4M');
    damage(theirs, headers);
    await expect(discardOverlay(theirs)).rejects.toMatchObject({ code: (opened as { code: string }).code });
    expect(existsSync(theirs)).toBe(true);
  });
});
