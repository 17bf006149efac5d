import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, open, readFile } from 'node:fs/promises';
import { createOverlay, openDisk } from '../host/disk/index.js';
import { writeCheckpoint } from '../host/resync/checkpoint.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { replicateCycle } from '../host/replication/cycle.js';
import { completeFailover, getRecoveryPoints, readFailover, startFailover, stopFailover } from '../host/replication/failover.js';
import { testViewPathFor } from '../host/replica/site-files.js';
import { reverseReplication } from '../host/replication/reverse.js';
import type { Replication } from '../host/replication/replication.js';
import { recoveryPointsDirFor } from '../host/resync/paths.js';
import { acquireLock } from '../host/pid-lock.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { rawDisk, sameContents } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { ROOT } from './support/paths.js';
import { FakeClock, replicatedVm } from './support/replicated-vm.js';
import { tempDir, subDir } from './support/temp-dir.js';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { resumeReplication, suspendReplication } from '../host/replication/control.js';
import { setReplication } from '../host/replication/enable.js';
import { evaluateTriggers } from '../host/replication/resync-required.js';
import { runResync } from '../host/replication/resync-run.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-failover-'));
});
afterAll(() => cleanup());

const sub = () => subDir(dir);

const T0 = new Date('2026-03-02T08:00:00Z');

/**
 * A two-disk VM with RecoveryHistory `history`, replicated at the given minutes after T0 (each cycle
 * preceded by writes to both disks). After each cycle, copies of the primary disks are kept.
 */
async function history(d: string, minutes: number[], historyN: number, sizeA = 8 * MiB) {
  const clock = new FakeClock(T0);
  const a = await rawDisk(join(d, 'a.img'), sizeA, 5);
  const b = await rawDisk(join(d, 'b.img'), 4 * MiB);
  const rep = await replicatedVm(d, 'vm', [a, b], { clock, settings: { recoveryHistory: historyN } });
  const copies = new Map<number, string[]>(); // sequence → copies of [a, b] right after it was applied
  const vm = await RunningVm.start(rep, 'vm');
  for (const [i, m] of minutes.entries()) {
    clock.set(new Date(T0.getTime() + m * 60_000));
    // Overlapping writes across cycles, so a wrong undo order would show.
    for (let k = 0; k < 6; k++) await vm.write(0, ((i * 3 + k) % 100) * 65536 + 512 * k, randomBytes(40_000, 1000 + i * 10 + k));
    await vm.write(1, (i % 50) * 65536, randomBytes(70_000, 2000 + i));
    const c = await replicateCycle(rep, 'vm');
    expect(c.result).toBe('replicated');
    const seq = c.result === 'replicated' ? c.sequences.at(-1)! : -1;
    const keep = [join(d, `a.${seq}.img`), join(d, `b.${seq}.img`)];
    await copyFile(a, keep[0]);
    await copyFile(b, keep[1]);
    copies.set(seq, keep);
  }
  return { rep, vm, clock, a, b, copies };
}

async function writeRaw(path: string, offset: number, data: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.close();
}

/** Through our disk layer: qemu cannot open a VHD differencing disk over a raw parent. */
describe('recovery points (undo logs, one an hour)', () => {
  it('one point per applied cycle at most once an hour, RecoveryHistory kept besides the latest; RecoveryHistory 0 keeps nothing', async () => {
    const d = await sub();
    // Cycles at 0, 30, 61, 70, 125, 190, 250 minutes: hourly points at cycles 1, 3, 5, 6, 7 (cycle 7 is the latest).
    const { rep, vm } = await history(d, [0, 30, 61, 70, 125, 190, 250], 3);
    const pts = await getRecoveryPoints(rep, 'vm');
    expect(pts.map((p) => [p.kind, p.sequence])).toEqual([['Latest', 7], ['Standard', 6], ['Standard', 5], ['Standard', 3]]);
    expect(pts[1].time).toBe(new Date(T0.getTime() + 190 * 60_000).toISOString());
    expect(pts.slice(1).every((p) => p.sizeOnDisk > 0)).toBe(true);
    await vm.close();

    const d0 = await sub();
    const zero = await history(d0, [0, 61, 122], 0);
    expect((await getRecoveryPoints(zero.rep, 'vm')).map((p) => p.kind)).toEqual(['Latest']);
    const replica = zero.rep.localSite(await zero.rep.get('vm')).diskPath(0);
    expect(existsSync(recoveryPointsDirFor(replica))).toBe(false);
    await zero.vm.close();
  });

  it('set-replication --recovery-history takes 0 to 24 only', async () => {
    const d = await sub();
    const rep = await replicatedVm(d, 'vm', [await rawDisk(join(d, 'a.img'), 4 * MiB)]);
    expect((await setReplication(rep, 'vm', { recoveryHistory: '24' })).settings.RecoveryHistory).toBe(24);
    await expect(setReplication(rep, 'vm', { recoveryHistory: '25' })).rejects.toThrow(/use 0 to 24/);
  });
});

describe('test failover', () => {
  it('a view at each point equals the primary as it was then; replication goes on under it; stop removes it', async () => {
    const d = await sub();
    const { rep, vm, a, b, copies } = await history(d, [0, 61, 122, 183], 3);
    const site = rep.localSite(await rep.get('vm'));
    const pts = await getRecoveryPoints(rep, 'vm');
    expect(pts.map((p) => p.sequence)).toEqual([4, 3, 2, 1]);
    for (const p of pts) {
      const out = await startFailover(rep, 'vm', 'test', { point: p.time });
      expect(out.point.sequence).toBe(p.sequence);
      expect(await sameContents(out.disks, copies.get(p.sequence)!)).toBe(true);
      if (p.sequence !== 1) {
        await stopFailover(rep, 'vm', 'test');
        continue;
      }
      // Replication continues while the test VM exists: the view keeps its point.
      await expect(startFailover(rep, 'vm', 'test')).rejects.toThrow(/already has a test failover/);
      for (let k = 0; k < 4; k++) await vm.write(0, k * 65536, randomBytes(65536, 77 + k));
      await vm.write(1, 0, randomBytes(65536, 78));
      expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
      expect(qemuIdentical(a, site.diskPath(0)) && qemuIdentical(b, site.diskPath(1))).toBe(true);
      expect(await sameContents(out.disks, copies.get(1)!)).toBe(true);
      // The new cycle moved the history on (point 1 is no longer kept); the view is independent of it.
      expect((await getRecoveryPoints(rep, 'vm')).map((q) => q.sequence)).toEqual([5, 4, 3, 2]);
      // And it is writable without touching the replica.
      const view = await openDisk(out.disks[0]);
      await view.write(4096, randomBytes(4096, 9));
      await view.close();
      expect(qemuIdentical(a, site.diskPath(0))).toBe(true);
      const stopped = await stopFailover(rep, 'vm', 'test');
      expect(stopped.removed).toEqual(out.disks);
      expect(existsSync(testViewPathFor(site.diskPath(0)))).toBe(false);
    }
    await expect(stopFailover(rep, 'vm', 'test')).rejects.toThrow(/no test failover to stop/);
    expect((await rep.get('vm')).state).toBe('Replicating');
    await vm.close();
  });
});

describe('the replica site lock', () => {
  it('a test failover waits while an apply holds the site, and an apply waits for the views being built', async () => {
    const d = await sub();
    const { rep, vm, copies } = await history(d, [0, 61], 2);
    const site = rep.localSite(await rep.get('vm'));
    const settled = (p: Promise<unknown>) => Promise.race([p.then(() => true, () => true), new Promise((r) => setTimeout(() => r(false), 300))]);
    // As an apply (of this or another process) would: hold the site.
    let release = await acquireLock(join(site.vmDir, 'site.lock'));
    const failover = startFailover(rep, 'vm', 'test', { point: 'latest' });
    expect(await settled(failover)).toBe(false);
    expect(existsSync(testViewPathFor(site.diskPath(0)))).toBe(false);
    await release();
    const out = await failover;
    expect(await sameContents(out.disks, copies.get(2)!)).toBe(true);
    await stopFailover(rep, 'vm', 'test');
    // And the other way round: a cycle's apply waits while the site is held.
    await vm.write(0, 0, randomBytes(4096, 5));
    release = await acquireLock(join(site.vmDir, 'site.lock'));
    const cycle = replicateCycle(rep, 'vm');
    expect(await settled(cycle)).toBe(false);
    await release();
    expect((await cycle).result).toBe('replicated');
    await vm.close();
  });
});

describe('one writer per replica disk', () => {
  it('an apply waits while another process (a resync) holds a replica disk, and goes on the moment that process is killed', async () => {
    const d = await sub();
    const { rep, vm } = await history(d, [0, 61], 2);
    const site = rep.localSite(await rep.get('vm'));
    const lib = pathToFileURL(join(ROOT, 'dist', 'writer-lock.js')).href;
    const holder = spawn(process.execPath, ['--input-type=module', '-e', `const { lockFile } = await import(${JSON.stringify(lib)}); await lockFile(process.argv[1]); process.stdout.write('held\\n'); setInterval(() => {}, 1000);`, site.diskPath(0)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => holder.stdout!.once('data', () => res()));
    const settled = (p: Promise<unknown>) => Promise.race([p.then(() => true, () => true), new Promise((r) => setTimeout(() => r(false), 300))]);
    await vm.write(0, 0, randomBytes(4096, 9));
    const cycle = replicateCycle(rep, 'vm');
    expect(await settled(cycle)).toBe(false);
    holder.kill('SIGKILL');
    expect((await cycle).result).toBe('replicated');
    await vm.close();
  });
});

describe('planned failover', () => {
  it('refused while the primary runs; with it off, the last changes are shipped and the replica equals the primary (no loss)', async () => {
    const d = await sub();
    const { rep, vm, a, b } = await history(d, [0, 61], 2);
    await vm.write(0, 3 * MiB, randomBytes(100_000, 31)); // not replicated yet
    await expect(startFailover(rep, 'vm', 'planned')).rejects.toThrow(/needs the primary VM off, and process \d+ is running 'vm'/);
    await vm.write(1, MiB, randomBytes(50_000, 32));
    await vm.close();
    // --planned is prepare + failover: the running copy is a view over each replica disk, not yet committed.
    const out = await startFailover(rep, 'vm', 'planned');
    expect(out.vm.state).toBe('FailedOverWaitingCompletion');
    expect(out.point.sequence).toBe(3);
    expect(await sameContents(out.disks, [a, b])).toBe(true);
    expect(await readFailover(rep, out.vm)).toMatchObject({ kind: 'planned', sequence: 3, phase: 'waiting' });
    await expect(startFailover(rep, 'vm', 'planned')).rejects.toThrow(/needs 'vm' Replicating/);
    const done = await completeFailover(rep, 'vm');
    expect(done.vm.state).toBe('FailedOver');
    expect(qemuIdentical(a, done.disks[0]) && qemuIdentical(b, done.disks[1])).toBe(true);
    expect(await readFailover(rep, done.vm)).toEqual(expect.not.objectContaining({ phase: expect.anything() }));
  });
});

describe('unplanned failover', () => {
  for (const which of [1, 2]) {
    it(`the replica becomes the point ${which === 1 ? 'three' : 'two'} hours back; completing it deletes the other points`, async () => {
      const d = await sub();
      const { rep, vm, copies } = await history(d, [0, 61, 122, 183], 3);
      await vm.close();
      const pts = await getRecoveryPoints(rep, 'vm');
      const target = pts.find((p) => p.sequence === which + 1)!;
      const out = await startFailover(rep, 'vm', 'unplanned', { point: target.time });
      expect(out.vm.state).toBe('FailedOverWaitingCompletion');
      expect(await sameContents(out.disks, copies.get(which + 1)!)).toBe(true);
      expect((await readFailover(rep, out.vm))).toMatchObject({ kind: 'unplanned', sequence: which + 1, phase: 'waiting' });
      // Until it is completed nothing of the replica changed: every point is still there.
      expect((await getRecoveryPoints(rep, 'vm')).map((p) => p.sequence)).toEqual([4, 3, 2, 1]);
      expect((await replicateCycle(rep, 'vm')).result).toBe('skipped');
      // Complete-VMFailover: the replica disks become the point, the other points are deleted.
      const done = await completeFailover(rep, 'vm');
      expect(done.vm.state).toBe('FailedOver');
      expect(await sameContents(done.disks, copies.get(which + 1)!)).toBe(true);
      expect((await getRecoveryPoints(rep, 'vm')).map((p) => [p.kind, p.sequence])).toEqual([['Latest', which + 1]]);
      expect((await replicateCycle(rep, 'vm')).result).toBe('skipped');
    });
  }
});

/** Diverge the primary while off and have a resync required. */
async function divergeAndRequire(rep: Replication, a: string): Promise<void> {
  for (let off = 0; off < 8 * MiB; off += MiB) await writeRaw(a, off + 4096, randomBytes(64 * 1024, off / MiB + 500));
  expect(await evaluateTriggers(rep, 'vm')).toBeDefined();
}

describe('failover and resync', () => {
  it('a completed resync deletes every recovery point; the history builds again', async () => {
    const d = await sub();
    const { rep, vm, clock, a } = await history(d, [0, 61, 122], 3);
    await vm.close();
    const replica = rep.localSite(await rep.get('vm')).diskPath(0);
    expect((await getRecoveryPoints(rep, 'vm')).length).toBe(3);
    await divergeAndRequire(rep, a);
    await resumeReplication(rep, 'vm', { resynchronize: true });
    expect((await runResync(rep, 'vm')).result).toBe('completed');
    expect(existsSync(recoveryPointsDirFor(replica))).toBe(false);
    expect((await getRecoveryPoints(rep, 'vm')).map((p) => p.kind)).toEqual(['Latest']);
    const vm2 = await RunningVm.start(rep, 'vm');
    for (const m of [200, 261]) {
      clock.set(new Date(T0.getTime() + m * 60_000));
      await vm2.write(0, 0, randomBytes(4096, m));
      expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    }
    await vm2.close();
    expect((await getRecoveryPoints(rep, 'vm')).map((p) => p.kind)).toEqual(['Latest', 'Standard']);
  });

  it('--keep-pre-resync-point keeps the pre-resync replica as one protected point (a test failover to it is the primary before the resync) until the first new hourly point', async () => {
    const d = await sub();
    const { rep, vm, clock, a, copies } = await history(d, [0, 61, 122], 3);
    await vm.close();
    const before = Math.max(...copies.keys());
    await divergeAndRequire(rep, a);
    clock.set(new Date(T0.getTime() + 130 * 60_000)); // the resync ends after the last cycle
    await resumeReplication(rep, 'vm', { resynchronize: true, keepPreResyncPoint: true });
    expect((await runResync(rep, 'vm')).result).toBe('completed');
    const pts = await getRecoveryPoints(rep, 'vm');
    expect(pts.map((p) => [p.kind, p.protected === true])).toEqual([['Latest', false], ['Standard', true]]);
    const view = await startFailover(rep, 'vm', 'test', { point: pts[1].time });
    expect(await sameContents(view.disks, copies.get(before)!)).toBe(true);
    await stopFailover(rep, 'vm', 'test');
    // Within the hour: no new point, the protected one stays and still rebuilds through the new cycle.
    const vm2 = await RunningVm.start(rep, 'vm');
    clock.set(new Date(T0.getTime() + 150 * 60_000));
    await vm2.write(0, 0, randomBytes(8192, 150));
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    const mid = await getRecoveryPoints(rep, 'vm');
    expect(mid.map((p) => p.protected === true)).toEqual([false, true]);
    const view2 = await startFailover(rep, 'vm', 'test', { point: mid[1].time });
    expect(await sameContents(view2.disks, copies.get(before)!)).toBe(true);
    await stopFailover(rep, 'vm', 'test');
    // The first new hourly point replaces it.
    clock.set(new Date(T0.getTime() + 200 * 60_000));
    await vm2.write(0, 4096, randomBytes(8192, 200));
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    await vm2.close();
    // The new hourly point is the latest for now; the protected one and its undo logs are gone.
    expect((await getRecoveryPoints(rep, 'vm')).map((p) => [p.kind, p.protected === true])).toEqual([['Latest', false]]);
    const replica = rep.localSite(await rep.get('vm')).diskPath(0);
    expect(await readFile(join(recoveryPointsDirFor(replica), 'index.json'), 'utf8')).not.toContain('protected');
  });

  it('an unplanned failover to the protected pre-resync point makes the replica the primary as it was before the resync', async () => {
    const d = await sub();
    const { rep, vm, clock, a, copies } = await history(d, [0, 61], 2);
    await vm.close();
    const before = Math.max(...copies.keys());
    await divergeAndRequire(rep, a);
    clock.set(new Date(T0.getTime() + 75 * 60_000));
    await resumeReplication(rep, 'vm', { resynchronize: true, keepPreResyncPoint: true });
    expect((await runResync(rep, 'vm')).result).toBe('completed');
    const pts = await getRecoveryPoints(rep, 'vm');
    expect(pts[1].protected).toBe(true);
    const out = await startFailover(rep, 'vm', 'unplanned', { point: pts[1].time });
    expect(out.vm.state).toBe('FailedOverWaitingCompletion');
    expect(await sameContents(out.disks, copies.get(before)!)).toBe(true);
    expect(await sameContents((await completeFailover(rep, 'vm')).disks, copies.get(before)!)).toBe(true);
  });

  it('--keep-pre-resync-point with the VM running: writes tracked during the resync are undone too', async () => {
    const d = await sub();
    const { rep, vm, clock, copies } = await history(d, [0, 61], 2);
    const before = Math.max(...copies.keys());
    clock.set(new Date(T0.getTime() + 75 * 60_000));
    await suspendReplication(rep, 'vm'); // forcing a resync from Replicating: suspend first, as Hyper-V
    await resumeReplication(rep, 'vm', { resynchronize: true, keepPreResyncPoint: true });
    let wrote: Promise<void> | undefined;
    const out = await runResync(rep, 'vm', {
      onProgress: (disk, p) => {
        if (disk.index === 0 && p.phase === 'merging') wrote ??= vm.write(0, 3 * MiB, randomBytes(20_000, 555));
      },
    });
    await wrote;
    expect(out.result).toBe('completed');
    expect(out.disks[0].result.trackedWritesApplied).toBeGreaterThan(0);
    await vm.close();
    const pts = await getRecoveryPoints(rep, 'vm');
    expect(pts[1].protected).toBe(true);
    const view = await startFailover(rep, 'vm', 'test', { point: pts[1].time });
    expect(await sameContents(view.disks, copies.get(before)!)).toBe(true);
  });

  it('--keep-pre-resync-point needs --resynchronize', async () => {
    const d = await sub();
    const rep = await replicatedVm(d, 'vm', [await rawDisk(join(d, 'a.img'), MiB)]);
    await expect(resumeReplication(rep, 'vm', { keepPreResyncPoint: true })).rejects.toThrow(/--keep-pre-resync-point needs --resynchronize/);
  });

  it('during a resync, test and planned failover are refused with the reason; unplanned cancels it and keeps the pre-resync points', async () => {
    const d = await sub();
    const { rep, vm, a, copies } = await history(d, [0, 61, 122], 3);
    await vm.close();
    await divergeAndRequire(rep, a);
    await resumeReplication(rep, 'vm', { resynchronize: true });
    // Suspended at once by the engine; then the compare of disk 0 "under way": diverged data in its
    // overlay, the checkpoint saying comparing (written here as an interrupted compare leaves them: on
    // these small disks the engine reports progress only once a disk's compare is done).
    expect((await runResync(rep, 'vm', { shouldPause: () => true })).result).toBe('paused');
    const site = rep.localSite(await rep.get('vm'));
    const replica = site.diskPath(0);
    await createOverlay(replica, `${replica}.resync.vhd`);
    const ov = await openDisk(`${replica}.resync.vhd`);
    await ov.write(4096, randomBytes(64 * 1024, 500));
    await ov.close();
    const now = new Date().toISOString();
    await writeCheckpoint(`${replica}.resync.json`, {
      version: 1, primary: a, virtualSize: 8 * MiB, leafSize: 65536, regionSize: MiB, fanout: 16, nextRegion: 1,
      phase: 'comparing', bytesReceived: 65536, leavesReceived: 1, startedAt: now, updatedAt: now,
    });
    expect((await rep.get('vm')).state).toBe('ResynchronizeSuspended');

    await expect(startFailover(rep, 'vm', 'test')).rejects.toThrow(/test failover is not possible: virtual machine 'vm' is ResynchronizeSuspended, so the replica is being rebuilt/);
    await expect(startFailover(rep, 'vm', 'planned')).rejects.toThrow(/planned failover is not possible: .*use --unplanned/);

    const out = await startFailover(rep, 'vm', 'unplanned', { point: new Date(T0.getTime() + 61 * 60_000).toISOString() });
    expect(out.resync).toBe('cancelled');
    expect(out.vm.state).toBe('FailedOverWaitingCompletion');
    expect(existsSync(`${site.diskPath(0)}.resync.vhd`)).toBe(false);
    expect(existsSync(`${site.diskPath(0)}.resync.json`)).toBe(false);
    // The pre-resync replica at the chosen point, not the diverged primary.
    expect(await sameContents(out.disks, copies.get(2)!)).toBe(true);
    expect(qemuIdentical(a, site.diskPath(0))).toBe(false);
    expect((await getRecoveryPoints(rep, 'vm')).map((p) => p.sequence)).toEqual([3, 2, 1]);
    // Rolled back: the view goes, and the VM is back where the cancelled resync left it.
    const stopped = await stopFailover(rep, 'vm');
    expect(stopped.removed).toEqual(out.disks);
    expect(stopped.vm.state).toBe('WaitingForStartResynchronize');
    expect((await getRecoveryPoints(rep, 'vm')).map((p) => p.sequence)).toEqual([3, 2, 1]);

  });

  it('an unplanned failover when one disk of the VM is already merged finishes the resync: every disk from the same time', async () => {
    const d = await sub();
    const { rep, vm, a, b } = await history(d, [0, 61, 122], 3);
    await vm.close();
    await divergeAndRequire(rep, a);
    await resumeReplication(rep, 'vm', { resynchronize: true });
    // Suspended once disk 0 reported its compare: it is merged, disk 1 is not started.
    let asked: Promise<unknown> | undefined;
    const first = await runResync(rep, 'vm', { onProgress: () => void (asked ??= suspendReplication(rep, 'vm')) });
    await asked;
    expect(first.result).toBe('paused');
    expect((await rep.get('vm')).resync?.disksDone).toEqual([0]);
    const site = rep.localSite(await rep.get('vm'));
    expect(qemuIdentical(a, site.diskPath(0))).toBe(true);
    // An older point cannot be had any more: said before anything changes.
    await expect(startFailover(rep, 'vm', 'unplanned', { point: T0.toISOString() })).rejects.toThrow(/past its point of no return .* run the failover without --point/);
    expect((await rep.get('vm')).state).toBe('ResynchronizeSuspended');
    const out = await startFailover(rep, 'vm', 'unplanned');
    expect(out.resync).toBe('merge-finished');
    expect(out.vm.state).toBe('FailedOverWaitingCompletion');
    // The resync's end is the only point left: the old ones were built on the old baseline.
    expect(out.point.kind).toBe('Latest');
    expect(qemuIdentical(a, site.diskPath(0)) && qemuIdentical(b, site.diskPath(1))).toBe(true);
  });

  it('an unplanned failover after the merge started lets the merge finish: the replica is the resynced primary, a clear state', async () => {
    const d = await sub();
    const { rep, vm, a, b } = await history(d, [0, 61, 122], 3);
    await vm.close();
    await divergeAndRequire(rep, a);
    await resumeReplication(rep, 'vm', { resynchronize: true });
    // The resync process dies once the merge has started (the point of no return).
    const site = rep.localSite(await rep.get('vm'));
    const cpPath = `${site.diskPath(0)}.resync.json`;
    await expect(
      runResync(rep, 'vm', {
        onProgress: (_d, p) => {
          if (p.phase === 'merging') throw new Error('killed during the merge');
        },
      }),
    ).rejects.toThrow(/killed during the merge/);
    // The compare finished; the replica writes `merging` before it touches the base: as if the process
    // died right there. (The merge is asked for right behind compare-done, so the replica in this
    // process may already have finished it: then it died just after, with the checkpoint at `merged`.)
    const { readCheckpoint } = await import('../host/resync/checkpoint.js');
    const cp = await readCheckpoint(cpPath);
    expect(['compared', 'merged']).toContain(cp?.phase);
    if (cp?.phase === 'compared') await writeCheckpoint(cpPath, { ...cp!, phase: 'merging' });
    const out = await startFailover(rep, 'vm', 'unplanned');
    expect(out.vm.state).toBe('FailedOverWaitingCompletion');
    expect(out.resync).toBe('merge-finished');
    expect(qemuIdentical(a, site.diskPath(0)) && qemuIdentical(b, site.diskPath(1))).toBe(true);
    expect(existsSync(cpPath)).toBe(false);
    expect(existsSync(`${site.diskPath(0)}.resync.vhd`)).toBe(false);
    expect((await getRecoveryPoints(rep, 'vm')).map((p) => p.kind)).toEqual(['Latest']);
  });
});

describe('reverse replication', () => {
  it('after a planned failover and writes on both sides, reverse resyncs the old primary; after a cycle it equals the new primary', async () => {
    const d = await sub();
    const { rep, vm, a, b } = await history(d, [0], 0);
    await vm.close();
    const out = await startFailover(rep, 'vm', 'planned');
    const site = rep.localSite(await rep.get('vm'));
    const replicas = [site.diskPath(0), site.diskPath(1)];
    // The failed-over VM writes to its running copy (the view), and the old primary diverged too.
    const view = await openDisk(out.disks[0]);
    await view.write(2 * MiB, randomBytes(100_000, 71));
    await view.close();
    await writeRaw(a, 5 * MiB, randomBytes(50_000, 72));
    // Reverse commits the failover first (the view is merged into the replica disk).
    const rev = await reverseReplication(rep, 'vm');
    expect(existsSync(out.disks[0])).toBe(false);
    expect(rev.disks.map((x) => [x.path, x.replicaPath])).toEqual([[replicas[0], a], [replicas[1], b]]);
    const run = await runResync(rep, 'vm');
    expect(run.result).toBe('completed');
    // A resync, not a full copy: only the differing leaves travelled.
    expect(run.disks.reduce((n, x) => n + x.result.bytesSent, 0)).toBeLessThan(MiB);
    const vm2 = await RunningVm.start(rep, 'vm');
    await vm2.write(0, 0, randomBytes(4096, 73));
    await vm2.write(1, MiB, randomBytes(4096, 74));
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    await vm2.close();
    expect(qemuIdentical(replicas[0], a)).toBe(true);
    expect(qemuIdentical(replicas[1], b)).toBe(true);
    const got = new Uint8Array(100_000);
    const fh = await open(a, 'r');
    await fh.read(got, 0, got.byteLength, 2 * MiB);
    await fh.close();
    expect(Buffer.compare(got, randomBytes(100_000, 71))).toBe(0);
  });

  it('after an unplanned failover to an older point, reverse makes the old primary (with its lost writes) the replica of that point', async () => {
    const d = await sub();
    const { rep, vm, a, b, copies } = await history(d, [0, 61, 122], 2);
    await vm.close();
    const pts = await getRecoveryPoints(rep, 'vm');
    const out = await startFailover(rep, 'vm', 'unplanned', { point: pts[1].time });
    expect(await sameContents(out.disks, copies.get(pts[1].sequence)!)).toBe(true);
    // The old primary comes back holding writes the replica never got, and writes of its own since.
    await writeRaw(a, 6 * MiB, randomBytes(30_000, 81));
    const rev = await reverseReplication(rep, 'vm');
    expect(rev.state).toBe('WaitingForStartResynchronize');
    expect(rev.resync?.evidence).toMatch(/^replication reversed after an unplanned failover: /);
    const run = await runResync(rep, 'vm');
    expect(run.result).toBe('completed');
    expect(qemuIdentical(rev.disks[0].path, a)).toBe(true);
    expect(qemuIdentical(rev.disks[1].path, b)).toBe(true);
    expect(await sameContents([a, b], copies.get(pts[1].sequence)!)).toBe(true);
  });

  it('is refused unless the VM was failed over, with one clear line', async () => {
    const d = await sub();
    const rep = await replicatedVm(d, 'vm', [await rawDisk(join(d, 'a.img'), MiB)]);
    await expect(reverseReplication(rep, 'vm')).rejects.toThrow(/^reverse-replication needs 'vm' failed over with start-failover vm --planned or --unplanned; it is Replicating$/);
  });
});
