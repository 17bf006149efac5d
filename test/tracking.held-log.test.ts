import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { mkdir, readFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { openTrackedDisk } from '../host/tracking/tracked-disk.js';
import { createCurrentLog, listSealedLogs, sealCurrentLog, trackingLogPathFor, withLogLock } from '../host/tracking/log-files.js';
import { scanTrackingLog, type TrackRecord } from '../host/tracking/log.js';
import { syncLogFs } from '../host/tracking/log-fs.js';
import { RawDisk } from '../host/disk/raw.js';
import { MiB } from '../host/units.js';
import { homeCli, killBackground, startRun } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';

/**
 * A tracker holding its log's lock (holdLog: an NBD client's stream of batches) keeps the log open
 * for the hold and appends through that handle. The log may be sealed and replaced only between
 * holds (a replication cycle takes the same lock), so the next hold must append to the new log.
 */
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-held-log-'));
});
afterAll(async () => {
  killBackground();
  await cleanup();
});

const w = (offset: number, byte: number): TrackRecord => ({ offset, data: new Uint8Array(4096).fill(byte) });
const records = async (path: string) => {
  const out: number[] = [];
  await scanTrackingLog(path, (r) => void out.push(r.offset));
  return out;
};

describe('a tracker holding its log open across batches', () => {
  it('batches of one hold go to one log; after a switch between holds, the next hold appends to the new log', async () => {
    const disk = await rawDisk(join(dir, 'unit.img'), 8 * MiB);
    await createCurrentLog(disk, { sequence: 1 });
    const t = await openTrackedDisk(disk, { fs: syncLogFs, logSyncOnFlush: true, onLogError: (e) => expect.fail(e.message) });
    await t.holdLog(async () => {
      await t.writeMany([w(0, 1)]);
      await t.writeMany([w(4096, 2), w(8192, 3)]);
      await t.flush();
    });
    // A replication cycle: seal the open log and open the next one, under the same lock.
    await withLogLock(disk, async () => {
      await sealCurrentLog(disk);
      await createCurrentLog(disk, { sequence: 2 });
    });
    await t.holdLog(async () => {
      await t.writeMany([w(MiB, 4)]);
      await t.flush();
    });
    await t.close();
    const [sealed] = await listSealedLogs(disk);
    expect(sealed.sequence).toBe(1);
    expect(await records(sealed.path)).toEqual([0, 4096, 8192]);
    expect(await records(trackingLogPathFor(disk))).toEqual([MiB]);
    const bytes = await readFile(disk);
    expect([bytes[0], bytes[4096], bytes[8192], bytes[MiB]]).toEqual([1, 2, 3, 4]);
  });

  it('contiguous writes of a batch reach the disk in one writeRun, each its own record in order; a later overlapping write wins', async () => {
    const disk = await rawDisk(join(dir, 'runs.img'), 8 * MiB);
    await createCurrentLog(disk, { sequence: 1 });
    const runs = vi.spyOn(RawDisk.prototype, 'writeRun');
    try {
      const t = await openTrackedDisk(disk, { fs: syncLogFs, logSyncOnFlush: true, onLogError: (e) => expect.fail(e.message) });
      // Three contiguous writes, one elsewhere, then one over the middle of the run.
      await t.holdLog(() => t.writeMany([w(0, 1), w(4096, 2), w(8192, 3), w(MiB, 4), w(4096, 5)]));
      await t.close();
      expect(runs.mock.calls.map(([offset, parts]) => [offset, parts.length])).toEqual([[0, 3]]);
    } finally {
      runs.mockRestore();
    }
    expect(await records(trackingLogPathFor(disk))).toEqual([0, 4096, 8192, MiB, 4096]);
    const bytes = await readFile(disk);
    expect([bytes[0], bytes[4095], bytes[4096], bytes[8191], bytes[8192], bytes[12287], bytes[12288], bytes[MiB]]).toEqual([1, 1, 5, 5, 3, 3, 0, 4]);
  });

  it('vhdsync run: a qemu-io write, service --once, another write, service --once: the replica equals the export', async () => {
    const d = join(dir, 'run');
    await mkdir(d);
    const home = join(d, 'home');
    const s = homeCli(home);
    const sock = join(d, 'vm.sock');
    const a = await rawDisk(join(d, 'a.img'), 16 * MiB, 3);
    s.ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    s.ok('start-initial-replication', 'vm');
    const run = await startRun(home, ['vm', '--socket', sock]);
    const qemuIo = (...cmds: string[]) => execFileSync('qemu-io', ['-f', 'raw', `nbd+unix:///0?socket=${sock}`, ...cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8' });
    qemuIo('write -P 0x41 1M 64k', 'write -P 0x42 5M 4k', 'flush');
    expect(s.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    qemuIo('write -P 0x43 1M 8k', 'write -P 0x44 9M 128k', 'flush');
    expect(s.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    // A queue-depth client writing sequentially: its batches are runs of contiguous writes.
    execFileSync('qemu-img', ['bench', '-f', 'raw', '-w', '-c', '96', '-d', '16', '-s', '4096', '-o', String(2 * MiB), '--pattern', '0x45', `nbd+unix:///0?socket=${sock}`], { stdio: 'ignore' });
    expect(s.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    // The VM still runs: every write it acknowledged reached the replica through the logs.
    expect(qemuIdentical(a, join(d, 'replica', 'vm', 'a.img'))).toBe(true);
    s.ok('stop-vm', 'vm');
    expect((await run.exited).code).toBe(0);
    expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'Replicating' });
  });
});
