import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import type { Replication } from '../host/replication/replication.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { ReplicationService } from '../host/service/service.js';
import { resumeReplication } from '../host/replication/control.js';
import { healthNow } from '../host/replication/views.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { FakeClock, replicatedVm } from './support/replicated-vm.js';
import { tempDir, subDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-repl-svc-'));
});
afterAll(() => cleanup());

const sub = () => subDir(dir);

/** Local time on a fixed day, so the window tests mean the same in every time zone. */
const at = (h: number, m = 0, day = 10) => new Date(2024, 5, day, h, m, 0);

/** Change the primary while the VM is off, and let the service see it (ModifiedWhileOff). */
async function breakReplication(rep: Replication, svc: ReplicationService, disk: string, seed: number): Promise<void> {
  const fh = await open(disk, 'r+');
  for (let i = 0; i < 8; i++) await fh.write(randomBytes(128 * 1024, seed + i), 0, 128 * 1024, i * MiB + 8192);
  await fh.close();
  const [p] = await svc.pass();
  expect(p.trigger?.reason).toBe('ModifiedWhileOff');
  expect((await rep.get('vm')).state).toBe('WaitingForStartResynchronize');
}

async function until(rep: Replication, state: string): Promise<void> {
  for (let i = 0; i < 400 && (await rep.get('vm')).state !== state; i++) await new Promise((r) => setTimeout(r, 5));
  expect((await rep.get('vm')).state).toBe(state);
}

describe('the service: automatic and scheduled resyncs (fake clock)', () => {
  it('AutoResynchronizeEnabled starts the resync only inside the start window', async () => {
    const d = await sub();
    const clock = new FakeClock(at(14));
    const a = await rawDisk(join(d, 'a.img'), 16 * MiB);
    const rep = await replicatedVm(d, 'vm', [a], { clock, settings: { autoResynchronizeEnabled: '1' } });
    const svc = new ReplicationService(rep);
    await breakReplication(rep, svc, a, 10);
    const [afternoon] = await svc.pass();
    expect(afternoon.resync).toBeUndefined();
    expect((await rep.get('vm')).state).toBe('WaitingForStartResynchronize');
    clock.set(at(19));
    const [evening] = await svc.pass();
    expect(evening.resync?.started).toBe('start');
    await svc.idle();
    expect(evening.resync?.outcome).toBe('completed');
    const vm = await rep.get('vm');
    expect(vm.state).toBe('Replicating');
    expect(healthNow(rep, vm).health).toBe('Normal');
    expect(qemuIdentical(a, rep.localSite(vm).diskPath(0))).toBe(true);
  });

  it('manual policy (Hyper-V\'s default) never starts one; a ResynchronizeStartTime starts it at that time', async () => {
    const d = await sub();
    const clock = new FakeClock(at(9));
    const a = await rawDisk(join(d, 'a.img'), 16 * MiB);
    const rep = await replicatedVm(d, 'vm', [a], { clock });
    const svc = new ReplicationService(rep);
    await breakReplication(rep, svc, a, 20);
    clock.set(at(23));
    expect((await svc.pass())[0].resync).toBeUndefined();
    const { vm, run } = await resumeReplication(rep, 'vm', { resynchronize: true, resynchronizeStartTime: '2024-06-12 03:00' });
    expect(run).toBeUndefined();
    expect(vm.resynchronizeStartTime).toBe(at(3, 0, 12).toISOString());
    clock.set(at(2, 59, 12));
    expect((await svc.pass())[0].resync).toBeUndefined();
    clock.set(at(3, 0, 12));
    const [due] = await svc.pass();
    expect(due.resync?.started).toBe('start');
    await svc.idle();
    const after = await rep.get('vm');
    expect(after.state).toBe('Replicating');
    expect(after.resynchronizeStartTime).toBeNull();
    await expect(resumeReplication(rep, 'vm', { resynchronize: true, resynchronizeStartTime: '2024-06-20 03:00' })).rejects.toThrow(/more than 7 days ahead/);
    expect((await rep.get('vm')).state).toBe('Replicating'); // nothing changed
  });

  it('beyond Hyper-V: an automatic resync pauses when its window closes and continues when it opens again', async () => {
    const d = await sub();
    const clock = new FakeClock(at(12));
    const a = await rawDisk(join(d, 'a.img'), 16 * MiB);
    const b = await rawDisk(join(d, 'b.img'), 16 * MiB);
    const rep = await replicatedVm(d, 'vm', [a, b], {
      clock,
      link: { rate: 2e6, latencyMs: 1 },
      settings: { autoResynchronizeEnabled: '1', pauseResynchronizeOutsideWindow: '1', autoResynchronizeIntervalStart: '22:00', autoResynchronizeIntervalEnd: '05:00' },
    });
    const svc = new ReplicationService(rep);
    await breakReplication(rep, svc, a, 30);
    // b changes too while the VM waits for its resync: the resync (started later) sees it.
    const fb = await open(b, 'r+');
    for (let i = 0; i < 8; i++) await fb.write(randomBytes(128 * 1024, 40 + i), 0, 128 * 1024, i * MiB + 8192);
    await fb.close();
    clock.set(at(4, 59, 11));
    expect((await svc.pass())[0].resync?.started).toBe('start');
    await until(rep, 'Resynchronizing');
    clock.set(at(5, 0, 11));
    const [closing] = await svc.pass();
    expect(closing.paused).toBe(true);
    await svc.idle();
    const paused = await rep.get('vm');
    expect(paused.state).toBe('ResynchronizeSuspended');
    expect(paused.resync?.pausedByWindow).toBe(true);
    expect(healthNow(rep, paused).details[0]).toMatch(/until its start window opens/);
    clock.set(at(12, 0, 11));
    expect((await svc.pass())[0].resync).toBeUndefined();
    clock.set(at(22, 0, 11));
    expect((await svc.pass())[0].resync?.started).toBe('continue');
    await svc.idle();
    const done = await rep.get('vm');
    expect(done.state).toBe('Replicating');
    for (const [i, p] of [a, b].entries()) expect(qemuIdentical(p, rep.localSite(done).diskPath(i))).toBe(true);
  });
});

describe('the service: cycles, retries and statistics (fake clock)', () => {
  it('cycles run every ReplicationFrequencySec; missed intervals are counted; failures back off 1, 2 min with event 32315', async () => {
    const d = await sub();
    const clock = new FakeClock(at(10));
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a], { clock, settings: { frequency: 30 } });
    const svc = new ReplicationService(rep, { monitoringIntervalMs: 3600_000 });
    const write = async (seed: number) => {
      const vm = await RunningVm.start(rep, 'vm');
      await vm.write(0, (seed % 100) * 65536, randomBytes(65536, seed));
      await vm.close();
    };
    // The initial replication counts as the last cycle: nothing is due for 30 s.
    await write(1);
    clock.advance(10_000);
    expect((await svc.pass())[0].cycle).toBeUndefined();
    clock.advance(20_000);
    expect((await svc.pass())[0].cycle?.result).toBe('replicated');

    // The replica site breaks: its log folder is a file.
    const logs = join(d, 'replica', 'vm', 'logs');
    await rm(logs, { recursive: true, force: true });
    await writeFile(logs, 'not a folder');
    await write(2);
    clock.advance(30_000);
    const failed = (await svc.pass())[0].cycle;
    expect(failed).toMatchObject({ result: 'failed', attempt: 1 });
    let vm = await rep.get('vm');
    expect(healthNow(rep, vm).health).toBe('Critical');
    expect(vm.retry?.nextAt).toBe(new Date(clock.now().getTime() + 60_000).toISOString());
    const e32315 = rep.events.records.filter((e) => e.id === 32315);
    expect(e32315).toHaveLength(1);
    expect(e32315[0]).toMatchObject({ attempt: 1, retryTime: vm.retry?.nextAt });
    clock.advance(45_000);
    expect((await svc.pass())[0].cycle).toBeUndefined(); // not before the retry time
    clock.advance(15_000);
    expect((await svc.pass())[0].cycle).toMatchObject({ result: 'failed', attempt: 2 });
    vm = await rep.get('vm');
    expect(vm.retry?.nextAt).toBe(new Date(clock.now().getTime() + 120_000).toISOString());

    // Fixed: the next retry ships both pending cycles, in order.
    await rm(logs);
    clock.advance(120_000);
    const ok = (await svc.pass())[0].cycle;
    expect(ok).toMatchObject({ result: 'replicated' });
    vm = await rep.get('vm');
    expect(vm.retry).toBeNull();
    expect(qemuIdentical(a, rep.localSite(vm).diskPath(0))).toBe(true);

    // Four intervals without the service: three cycles were missed.
    clock.advance(4 * 30_000);
    await svc.pass();
    vm = await rep.get('vm');
    expect(vm.statistics.missedReplicationCount).toBe(3);
    expect(healthNow(rep, vm).health).toBe('Warning'); // more than 20 % missed

    // The monitoring interval ends: event 29174 with its statistics, and a new interval. The hour
    // without a pass missed 119 more cycles of 30 s.
    clock.advance(3600_000);
    const [report] = await svc.pass();
    expect(report.statisticsReported).toBe(true);
    const stats = rep.events.records.filter((e) => e.id === 29174);
    expect(stats).toHaveLength(1);
    expect(stats[0]).toMatchObject({ vm: 'vm', successfulReplicationCount: 4, missedReplicationCount: 3 + 119, replicationErrors: 2 });
    expect((await rep.get('vm')).statistics.successfulReplicationCount).toBe(0);
  });
});
