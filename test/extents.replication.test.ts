/**
 * Beyond Hyper-V: after a host crash (TrackingLogNotClosed) or logs overflowing during an outage
 * (TrackingLogTooLarge) the resync compares only the dirty extents; triggers that can hide a change
 * anywhere, and --full, keep the full compare.
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCore } from '../host/core/index.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { dirtyMapPathFor } from '../host/tracking/dirty-map.js';
import { trackingLogPathFor } from '../host/tracking/log-files.js';
import { evaluateTriggers, requireResync } from '../host/replication/resync-required.js';
import { runResync } from '../host/replication/resync-run.js';
import { scopeView } from '../host/replication/views.js';
import { MiB, GiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { homeCli, background } from './support/cli.js';
import { rawDisk, vhdDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { replicatedVm } from './support/replicated-vm.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-extents-vm-'));
});
afterAll(() => cleanup());

/** `vhdsync workload` in its own process, SIGKILLed once its open log holds `bytes`. */
async function crashWorkload(home: string, vm: string, disk: string, bytes: number): Promise<void> {
  const { child, exited: closed } = background(['workload', vm, '--home', home, '--pattern', 'hot', '--rate', '24MB/s', '--duration', '1h', '--seed', '7'], { home });
  let gone = false;
  const exited = closed.then(() => (gone = true));
  for (;;) {
    if (gone) throw new Error('vhdsync workload ended before it was killed');
    const size = await stat(trackingLogPathFor(disk)).then((s) => s.size, () => 0);
    if (size >= bytes) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await exited;
}

describe('a resync after a crash or a log overflow compares only the dirty extents', () => {
  it('an 8 GiB disk crashed (SIGKILL of vhdsync workload) after 64 MiB of hot writes: the resync reads ≤ 5 % of it and ends identical', async () => {
    const primary = vhdDisk(join(dir, 'big.vhd'), 8 * GiB);
    const home = join(dir, 'home');
    const rep = await replicatedVm(dir, 'big', [primary]);
    const vhd = homeCli(home);
    await crashWorkload(home, 'big', primary, 64 * MiB);

    const trigger = await evaluateTriggers(rep, 'big');
    expect(trigger?.reason).toBe('TrackingLogNotClosed');
    const view = vhd.json('get-replication', 'big');
    expect(view.ResynchronizationScope).toBe('DirtyExtents');
    const size = (await rep.get('big')).disks[0].virtualSize;
    expect(view.ResynchronizationScopeBytes).toBeGreaterThanOrEqual(64 * MiB / 4); // hot spots are rewritten
    expect(view.ResynchronizationScopeBytes).toBeLessThanOrEqual(size * 0.05);
    const measured = vhd.json('measure-replication', 'big');
    expect((Array.isArray(measured) ? measured[0] : measured).ResynchronizationScope).toBe('DirtyExtents');

    const out = vhd.json('resume-replication', 'big', '--resynchronize');
    expect(out.Result).toBe('completed');
    const d = out.Disks[0];
    expect(d.ResynchronizationScope).toBe('DirtyExtents');
    expect(d.BytesRead).toBeGreaterThan(0);
    expect(d.BytesRead / size).toBeLessThanOrEqual(0.05);
    expect(qemuIdentical(primary, (await rep.get('big')).disks[0].replicaPath)).toBe(true);
    const events = vhd.json('events', 'big') as { Id: number; Scope?: string; Message: string }[];
    const started = events.filter((e) => e.Id === 29242).pop()!;
    expect(started.Scope).toBe('DirtyExtents');
    expect(started.Message).toMatch(/scope DirtyExtents \(\d+ bytes\)/);
    expect(events.filter((e) => e.Id === 29244).pop()!.Message).toMatch(/scope DirtyExtents, \d+ bytes read/);
    expect(existsSync(dirtyMapPathFor(primary))).toBe(false); // done with once the resync completed
    expect((await rep.get('big')).state).toBe('Replicating');
  });

  it('logs overflowing during an outage switch the disk to bitmap mode; the resync reads ≤ 5 % and ends identical', async () => {
    const sub = join(dir, 'outage');
    const primary = vhdDisk(join(dir, 'outage.vhd'), 256 * MiB);
    const rep = await replicatedVm(sub, 'outage', [primary]);
    const vhd = homeCli(join(sub, 'home'));
    // No cycle ships (the replica is unreachable): 150 MiB of hot writes pass half the disk's size.
    const run = vhd.json('workload', 'outage', '--pattern', 'hot', '--rate', 'unlimited', '--bytes', '150M', '--seed', '3');
    expect(run.Triggers.map((t: { Reason: string }) => t.Reason)).toEqual(['TrackingLogTooLarge']);
    const vm = await rep.get('outage');
    expect([vm.state, vm.resync?.scope]).toEqual(['WaitingForStartResynchronize', 'DirtyExtents']);
    expect(existsSync(trackingLogPathFor(primary))).toBe(false); // no data logged any more ...
    expect(existsSync(dirtyMapPathFor(primary))).toBe(true); // ... only the extents written

    const out = vhd.json('resume-replication', 'outage', '--resynchronize');
    expect([out.Result, out.Disks[0].ResynchronizationScope]).toEqual(['completed', 'DirtyExtents']);
    expect(out.Disks[0].BytesRead / vm.disks[0].virtualSize).toBeLessThanOrEqual(0.05);
    expect(qemuIdentical(primary, vm.disks[0].replicaPath)).toBe(true);
  });

  it('a trigger that can hide a change anywhere, or --full, compares everything', async () => {
    const sub = join(dir, 'full');
    const primary = await rawDisk(join(dir, 'full.raw'), 8 * MiB, 5);
    const rep = await replicatedVm(sub, 'full', [primary]);
    const vm = await RunningVm.start(rep, 'full');
    await vm.write(0, 3 * MiB, randomBytes(4096, 9));
    // A crash seen while the writer lives on (as a host crash would leave it): the scope is dirty.
    await requireResync(rep, 'full', { reason: 'TrackingLogNotClosed', evidence: 'test' });
    expect((await rep.get('full')).resync?.scope).toBe('DirtyExtents');
    await vm.write(0, 6 * MiB, randomBytes(4096, 10)); // bitmap mode
    const bits = (await scopeView(await rep.get('full'))).ResynchronizationScopeBytes;
    expect(bits).toBe(2 * MiB);
    // A failed write to the dirty map could hide a change anywhere: the scope becomes Full.
    await requireResync(rep, 'full', { reason: 'TrackingLogWriteFailure', evidence: 'test' });
    expect((await rep.get('full')).resync?.scope).toBe('Full');
    expect(existsSync(dirtyMapPathFor(primary))).toBe(false);
    await vm.close();
    const full = await runResync(rep, 'full');
    expect([full.result, full.disks[0].result.scope, full.disks[0].result.bytesReadPrimary]).toEqual(['completed', 'Full', 8 * MiB]);

    // --full forces the full compare of a DirtyExtents requirement.
    await requireResync(rep, 'full', { reason: 'TrackingLogTooLarge', evidence: 'test' });
    expect((await rep.get('full')).resync?.scope).toBe('DirtyExtents');
    const forced = homeCli(join(sub, 'home')).json('resume-replication', 'full', '--resynchronize', '--full');
    expect([forced.Result, forced.Disks[0].ResynchronizationScope]).toEqual(['completed', 'Full']);
    expect(qemuIdentical(primary, (await rep.get('full')).disks[0].replicaPath)).toBe(true);
  });
});
