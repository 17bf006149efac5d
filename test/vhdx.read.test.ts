/**
 * Reading VHDX images that qemu made: every fixture reads exactly as `qemu-img convert -O raw` sees it
 * (dynamic and fixed, 1/8/32 MiB blocks, qemu's default block_state_zero and `=off`, a 4 MiB log), and a
 * dirty log that qemu itself left behind is replayed to the bytes `qemu-img check -r all` produces —
 * in memory when opened read-only, into the file when opened writable.
 */
import { copyFileSync, readFileSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VhdxDisk, openDisk } from '../host/disk/index.js';
import { expectSameBytes, readAll } from './support/bytes.js';
import { unpackFixtures } from './support/fixtures.js';
import { qemuRaw } from './support/oracles.js';
import { removeDir } from './support/temp-dir.js';

let fx: string;
beforeAll(() => {
  fx = unpackFixtures();
});
afterAll(() => removeDir(fx));

const QEMU_MADE: Array<[string, string, number]> = [
  ['qemu-vhdx-dyn-1M.vhdx', 'dynamic', 1],
  ['qemu-vhdx-dyn-8M.vhdx', 'dynamic', 8],
  ['qemu-vhdx-fixed-32M.vhdx', 'fixed', 32],
  ['qemu-vhdx-fixed-zero.vhdx', 'fixed', 1],
  ['qemu-vhdx-log4M.vhdx', 'dynamic', 1],
  ['qemu-8M.vhdx', 'dynamic', 8],
];

describe('qemu-made VHDX images', () => {
  it.each(QEMU_MADE)('%s reads exactly as qemu-img convert does', async (name, type, blockMiB) => {
    const path = join(fx, name);
    const disk = await openDisk(path, { readOnly: true });
    try {
      expect(disk.format).toBe('vhdx');
      expect(disk.type).toBe(type);
      expect(disk.blockSize).toBe(blockMiB * 1024 * 1024);
      expect(disk.sectorSize).toBe(512);
      expectSameBytes(await readAll(disk), qemuRaw(path, 'vhdx'), name);
    } finally {
      await disk.close();
    }
  });

  it('reads odd ranges across block boundaries like the whole-disk read', async () => {
    const path = join(fx, 'qemu-vhdx-dyn-1M.vhdx');
    const whole = qemuRaw(path, 'vhdx');
    const disk = await openDisk(path, { readOnly: true });
    try {
      for (const [off, len] of [[1, 1], [511, 2], [1024 * 1024 - 3, 7], [1536 * 1024 - 100, 700 * 1024], [8 * 1024 * 1024 - 1, 1]]) {
        const b = new Uint8Array(len);
        await disk.read(off, b);
        expectSameBytes(b, whole.subarray(off, off + len), `[${off}, +${len})`);
      }
    } finally {
      await disk.close();
    }
  });

  it('reports ZERO blocks as zero and written ones as present', async () => {
    const disk = await openDisk(join(fx, 'qemu-vhdx-dyn-1M.vhdx'), { readOnly: true });
    try {
      expect(disk.blockStatus(0)).toBe('present');
      expect(disk.blockStatus(3)).toBe('zero'); // qemu's block_state_zero=on default
      expect(disk.blockStatus(7)).toBe('present');
    } finally {
      await disk.close();
    }
  });
});

describe('a dirty log qemu left behind', () => {
  it('qemu refuses to read it without replaying', () => {
    const r = spawnSync('qemu-img', ['check', '-f', 'vhdx', join(fx, 'qemu-vhdx-dirty-log.vhdx')], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('log that needs to be replayed');
  });

  it('read-only: reads through the replayed log as qemu-img check -r all leaves the image, file untouched', async () => {
    const dirty = join(fx, 'qemu-vhdx-dirty-log.vhdx');
    const repaired = join(fx, 'dirty-repaired-by-qemu.vhdx');
    copyFileSync(dirty, repaired);
    execFileSync('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', repaired], { stdio: 'ignore' });
    const expected = qemuRaw(repaired, 'vhdx');
    expect(expected.subarray(3 * 1024 * 1024, 3 * 1024 * 1024 + 8192).every((b) => b === 0xa5)).toBe(true);
    const before = readFileSync(dirty);
    const disk = (await openDisk(dirty, { readOnly: true })) as VhdxDisk;
    try {
      expect(disk.logState).toBe('replayed-in-memory');
      expectSameBytes(await readAll(disk), expected, 'replayed view');
    } finally {
      await disk.close();
    }
    expect(readFileSync(dirty).equals(before)).toBe(true);
  });

  it('writable: replays into the file and clears the log, after which qemu opens it read-only', async () => {
    const path = join(fx, 'dirty-replayed-by-us.vhdx');
    copyFileSync(join(fx, 'qemu-vhdx-dirty-log.vhdx'), path);
    const repaired = join(fx, 'dirty-repaired-by-qemu-2.vhdx');
    copyFileSync(path, repaired);
    execFileSync('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', repaired], { stdio: 'ignore' });
    const disk = (await openDisk(path)) as VhdxDisk;
    expect(disk.logState).toBe('replayed');
    expect(disk.replayedEntries).toBe(1);
    await disk.close();
    expect(spawnSync('qemu-img', ['check', '-f', 'vhdx', path]).status).toBe(0);
    expectSameBytes(qemuRaw(path, 'vhdx'), qemuRaw(repaired, 'vhdx'), 'after our replay');
    // The metadata regions are byte-identical to qemu's replay (the headers differ only in their GUIDs).
    const ours = readFileSync(path);
    const theirs = readFileSync(repaired);
    expect(ours.subarray(2 * 1024 * 1024, 4 * 1024 * 1024).equals(theirs.subarray(2 * 1024 * 1024, 4 * 1024 * 1024))).toBe(true);
  });
});
