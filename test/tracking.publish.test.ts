import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { openTrackedDisk } from '../host/tracking/tracked-disk.js';
import { createCurrentLog, openPrimary } from '../host/tracking/log-files.js';
import type { TrackRecord } from '../host/tracking/log.js';
import { syncLogFs } from '../host/tracking/log-fs.js';
import { MiB } from '../host/units.js';
import { tempDir } from './support/temp-dir.js';

/**
 * A running VM's writer keeps new BAT entries (VHDX: BAT and bitmap pages) in memory until a flush.
 * Another process — a resync starting beside the running VM — only sees the file, so the writer
 * publishes them before it lets go of the log's lock: a write acknowledged and never flushed must be
 * in what a reader opening the disk then sees, or the resync would compare it as absent and, being
 * older than its tracking log, lose it (the hostile tester's F0).
 */
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-publish-'));
});
afterAll(async () => cleanup());

const w = (offset: number, byte: number): TrackRecord => ({ offset, data: new Uint8Array(64 * 1024).fill(byte) });

describe('a tracker publishes what it wrote before it lets go of the log', () => {
  it.each(['vhd', 'vhdx'] as const)('%s: blocks allocated by writes never flushed are in the file once the log is free (our reader and qemu-io read them)', async (format) => {
    const disk = join(dir, `p.${format}`);
    if (format === 'vhd') execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', disk, String(32 * MiB)]);
    else execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', disk, String(32 * MiB)]);
    await createCurrentLog(disk, { sequence: 1 });
    const t = await openTrackedDisk(disk, { fs: syncLogFs, logSyncOnFlush: true, onLogError: (e) => expect.fail(e.message) });
    try {
      // An NBD client's batches under one hold, then a write on its own: no flush anywhere.
      await t.holdLog(() => t.writeMany([w(0, 0x11), w(5 * MiB, 0x12)]));
      await t.writeMany([w(20 * MiB, 0x13)]);
      const seen = await openPrimary(disk);
      try {
        for (const [at, byte] of [[0, 0x11], [5 * MiB, 0x12], [20 * MiB, 0x13]]) {
          const got = new Uint8Array(64 * 1024);
          await seen.read(at, got);
          expect(got.every((b) => b === byte), `${format}: the write at ${at}`).toBe(true);
        }
      } finally {
        await seen.close();
      }
      const qemu = execFileSync('qemu-io', ['-r', '-f', format === 'vhd' ? 'vpc' : 'vhdx', '-c', 'read -P 0x12 5M 64k', '-c', 'read -P 0x13 20M 64k', disk], { encoding: 'utf8' });
      expect(qemu).not.toMatch(/Pattern verification failed/);
      expect(qemu.match(/read 65536\/65536/g)).toHaveLength(2);
    } finally {
      await t.close();
    }
  });
});
