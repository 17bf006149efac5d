import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { cp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { MiB } from '../host/units.js';
import { newSite, type Site } from './support/cli.js';
import { rawDisk, vhdDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { until } from './support/until.js';
import { sha256File } from './support/digest.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-repl-cli-')));
afterAll(() => cleanup());

const site = () => newSite(dir);

const logSize = (disk: string) => stat(`${disk}.vhdsync-track`).then((s) => s.size, () => 0);

/** Resume with --resynchronize and check the end of the story: events, state, identical replicas, bytes. */
function resyncAndCheck(s: Site, disks: string[], totalSize: number) {
  const before = s.json('events', 'vm').length;
  const out = s.json('resume-replication', 'vm', '--resynchronize');
  expect(out.Result).toBe('completed');
  const events = s.json('events', 'vm').slice(before);
  const ids = events.map((e: { Id: number }) => e.Id);
  expect(ids.filter((i: number) => i === 29242 || i === 29244)).toEqual(disks.flatMap(() => [29242, 29244]));
  const after = s.json('get-replication', 'vm');
  expect(after).toMatchObject({ State: 'Replicating', Health: 'Normal', ResynchronizationReason: null });
  disks.forEach((p, i) => expect(qemuIdentical(p, after.ReplicatedDisks[i].ReplicaPath)).toBe(true));
  const sent = out.Disks.reduce((t: number, x: { BytesSent: number }) => t + x.BytesSent, 0);
  expect(sent).toBeLessThan(totalSize / 4); // far below the disk size: only what differs
  return { out, sent };
}

function expectRequired(s: Site, reason: string, evidence: RegExp) {
  const g = s.json('get-replication', 'vm');
  expect(g).toMatchObject({ State: 'WaitingForStartResynchronize', Health: 'Critical', ResynchronizationReason: reason });
  expect(g.ReplicationHealthDetails[0]).toBe('Resynchronization is required for the virtual machine vm. Resume replication to start resynchronization.');
  expect(g.ResynchronizationEvidence).toMatch(evidence);
  // The table view says it with names too.
  const table = s.ok('get-replication').stdout;
  expect(table).toMatch(/vm\s+WaitingForStartResynchronize\s+Critical/);
}

describe('vhdsync replication (CLI, real files)', () => {
  it('the full story: enable, initial replication, cycles applied, SIGKILL of the running VM → required → resync → Replicating', async () => {
    const s = await site();
    const vhd = vhdDisk(join(s.d, 'system.vhd'), 32 * MiB);
    const raw = await rawDisk(join(s.d, 'data.img'), 16 * MiB, 5);
    const total = (await s.json('enable-replication', 'vm', '--disk', vhd, raw, '--replica', s.replica, '--frequency', '30')).ReplicatedDisks.reduce(
      (t: number, d: { VirtualSize: number }) => t + d.VirtualSize,
      0,
    );
    expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'ReadyForInitialReplication', Health: 'Warning', FrequencySec: 30, AutoResynchronizeEnabled: false });
    expect(s.json('start-initial-replication', 'vm')).toMatchObject({ Result: 'completed', State: 'Replicating', Health: 'Normal' });
    expect(qemuIdentical(raw, join(s.replica, 'vm', 'data.img'))).toBe(true);

    // Two runs of the VM, each followed by a cycle: the replica equals the primary as of each shipped log.
    for (const [pattern, seed] of [['fileserver', '1'], ['sql', '2']]) {
      const w = s.json('workload', 'vm', '--pattern', pattern, '--rate', '20MB/s', '--duration', '1s', '--seed', seed, '--bytes', '3M');
      expect(w).toMatchObject({ State: 'Replicating', Triggers: [] });
      expect(w.Bytes).toBeGreaterThanOrEqual(3 * MiB);
      const [pass] = s.json('service', '--once');
      expect(pass.Cycle.Result).toBe('replicated');
      expect(qemuIdentical(vhd, join(s.replica, 'vm', 'system.vhd'))).toBe(true);
      expect(qemuIdentical(raw, join(s.replica, 'vm', 'data.img'))).toBe(true);
    }

    // SIGKILL the running VM: its logs stay open (end-of-log 0) with a dead writer.
    const bg = s.background('workload', 'vm', '--pattern', 'random', '--rate', '4MB/s', '--duration', '30s');
    await bg.ready((o) => /is running \(process|resynchroniz/i.test(o.stderr));
    await until(async () => (await logSize(raw)) > 64 * 1024, 'tracked writes');
    bg.child.kill('SIGKILL');
    expect((await bg.exited).signal).toBe('SIGKILL');
    const header = new Uint8Array(await readFile(`${raw}.vhdsync-track`)).subarray(0, 512);
    expect(new DataView(header.buffer, header.byteOffset).getUint32(48, true)).toBe(0); // end-of-log

    // The next start of the VM detects it.
    const next = s.run('workload', 'vm', '--bytes', '256K', '--rate', 'unlimited', '--duration', '5s');
    expect(next.status).toBe(0);
    expect(next.stderr).toMatch(/resynchronization required: TrackingLogNotClosed: .*vhdsync-track: end-of-log is 0 and its writer \(process \d+\) is gone/);
    expectRequired(s, 'TrackingLogNotClosed', /not closed gracefully/);
    const m0 = s.json('measure-replication', 'vm');
    expect(m0.Health).toBe('Critical');

    const { sent } = resyncAndCheck(s, [vhd, raw], total);
    const m = s.json('measure-replication', 'vm');
    expect(m.Counters['Resynchronized Bytes']).toBe(sent);
    expect(m.Counters['Resynchronized Bytes']).toBeLessThan(total / 8);
    expect(m.Counters['Replication Count']).toBe(2);
    expect(m.SuccessfulReplicationCount).toBe(2);
    const ids = s.json('events', 'vm').map((e: { Id: number }) => e.Id);
    expect(ids).toContain(90002);
    expect(s.json('events', 'vm', '--id', '29242')).toHaveLength(2);
    // After the resync, replication goes on normally.
    s.json('workload', 'vm', '--bytes', '512K', '--rate', 'unlimited', '--duration', '5s');
    expect(s.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(raw, join(s.replica, 'vm', 'data.img'))).toBe(true);
  });

  it('an unlimited-rate workload with only a duration writes in bounded bursts and ends on time', async () => {
    const s = await site();
    const raw = await rawDisk(join(s.d, 'data.img'), 64 * MiB, 9);
    s.json('enable-replication', 'vm', '--disk', raw, '--replica', s.replica);
    s.json('start-initial-replication', 'vm');
    // Before the fix this planned one endless burst in memory (11 GB RSS, never returned).
    expect(s.json('workload', 'vm', '--rate', 'unlimited', '--duration', '1s').Bytes).toBeGreaterThan(0);
  });

  it('trigger: the disk modified while the VM was off (qemu-io), seen by the service', async () => {
    const s = await site();
    const p = vhdDisk(join(s.d, 'p.vhd'), 32 * MiB);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '3');
    s.ok('service', '--once');
    execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5a 30M 64k', p]);
    const [pass] = s.json('service', '--once');
    expect(pass.Trigger.Reason).toBe('ModifiedWhileOff');
    expectRequired(s, 'ModifiedWhileOff', /p\.vhd: .* with no tracked write to explain it: the disk was modified while the VM was off/);
    const { out } = resyncAndCheck(s, [p], 32 * MiB);
    expect(out.Disks[0].BytesSent).toBe(65536);
  });

  it('trigger: the primary reverted to an older copy, seen when the VM starts', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 16 * MiB, 2);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '4');
    s.ok('service', '--once');
    await cp(p, join(s.d, 'backup.img'));
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '5', '--pattern', 'sql');
    s.ok('service', '--once');
    await cp(join(s.d, 'backup.img'), p); // the admin restores yesterday's copy
    const w = s.run('write', 'vm', '--offset', '0', '--length', '4096', '--pattern', '0xab');
    expect(w.status).toBe(0);
    expect(w.stderr).toMatch(/RevertedToOlderPoint/);
    expectRequired(s, 'RevertedToOlderPoint', /the data of the last tracked writes .* is no longer on the disk: an older copy of the disk was put back/);
    resyncAndCheck(s, [p], 16 * MiB);
  });

  it('trigger: tracking logs past 50 % of the disks while replication is suspended, seen by the running VM', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    expect(s.json('suspend-replication', 'vm')).toMatchObject({ State: 'Suspended', Health: 'Warning' });
    const w = s.json('workload', 'vm', '--pattern', 'random', '--bytes', '5M', '--rate', 'unlimited', '--duration', '10s');
    expect(w.Triggers.map((t: { Reason: string }) => t.Reason)).toEqual(['TrackingLogTooLarge']);
    expect(w.Bytes).toBeGreaterThanOrEqual(5 * MiB); // the VM kept writing; tracking stopped
    expectRequired(s, 'TrackingLogTooLarge', /more than 50 % of the VM's 8 MiB of virtual disks/);
    expect(existsSync(`${p}.vhdsync-track`)).toBe(false);
    const out = s.json('resume-replication', 'vm', '--resynchronize');
    expect(out.State).toBe('Replicating');
    expect(qemuIdentical(p, join(s.replica, 'vm', 'p.img'))).toBe(true);
  });

  it('trigger: the tracking log lost under the running VM is a write failure', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 16 * MiB);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const bg = s.background('workload', 'vm', '--pattern', 'random', '--rate', '2MB/s', '--duration', '30s');
    await bg.ready((o) => /is running \(process|resynchroniz/i.test(o.stderr));
    await until(async () => (await logSize(p)) > 16 * 1024, 'tracked writes');
    await rm(`${p}.vhdsync-track`); // the volume holding the log loses it
    await until(() => s.json('get-replication', 'vm').State !== 'Replicating', 'the VM to notice');
    bg.child.kill('SIGTERM');
    const done = await bg.exited;
    expect(done.code).toBe(0);
    expectRequired(s, 'TrackingLogWriteFailure', /the tracking log is gone while the VM writes/);
    resyncAndCheck(s, [p], 16 * MiB);
  });

  it('trigger: an older backup of the replica restored, seen by the replica', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 16 * MiB, 6);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '6');
    s.ok('service', '--once');
    await cp(join(s.replica, 'vm'), join(s.d, 'replica-backup'), { recursive: true });
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '7');
    s.ok('service', '--once');
    await rm(join(s.replica, 'vm'), { recursive: true });
    await cp(join(s.d, 'replica-backup'), join(s.replica, 'vm'), { recursive: true });
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '8');
    const [pass] = s.json('service', '--once');
    expect(pass.Cycle).toMatchObject({ Result: 'resync-required', Trigger: { Reason: 'ReplicaLogOutOfSequence' } });
    expectRequired(s, 'ReplicaLogOutOfSequence', /replica disk changed since log \d+ was applied .* restored from a backup/);
    resyncAndCheck(s, [p], 16 * MiB);
  });

  it('trigger: a corrupted log shipped to the replica is invalid and never applied', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 16 * MiB);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    s.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '9', '--pattern', 'sql');
    const sealed = `${p}.vhdsync-track.00000001`;
    const bytes = new Uint8Array(await readFile(sealed));
    bytes[bytes.length - 100] ^= 0x40; // bit rot in the last write's data
    await writeFile(sealed, bytes);
    const replicaBefore = sha256File(join(s.replica, 'vm', 'p.img'));
    const [pass] = s.json('service', '--once');
    expect(pass.Cycle).toMatchObject({ Result: 'resync-required', Trigger: { Reason: 'ReplicaLogInvalid' } });
    expect(sha256File(join(s.replica, 'vm', 'p.img'))).toBe(replicaBefore);
    expectRequired(s, 'ReplicaLogInvalid', /00000001-0\.log: a record is damaged/);
    resyncAndCheck(s, [p], 16 * MiB);
  });

  it('suspend-replication pauses a running resync from another process; --continue carries on; stop-replication cancels it', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 16 * MiB);
    const b = await rawDisk(join(s.d, 'b.img'), 16 * MiB);
    s.ok('enable-replication', 'vm', '--disk', a, b, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    for (const p of [a, b]) execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 1M 1M', p]);
    s.ok('service', '--once'); // sees the change: resync required (manual policy: nothing starts)
    const started = () => {
      const bg = s.background('resume-replication', 'vm', '--resynchronize', '--link', '2MB/s', '--json');
      return bg;
    };
    let bg = started();
    await until(() => s.json('get-replication', 'vm').State === 'Resynchronizing', 'the resync to start');
    expect(s.json('suspend-replication', 'vm')).toMatchObject({ State: 'ResynchronizeSuspended', Health: 'Warning' });
    let done = await bg.exited;
    expect(done.code).toBe(3);
    const paused = JSON.parse(done.stdout);
    expect(paused.Result).toBe('paused');
    // Where it stops depends on when the suspend lands (a CLI started in another process): in disk 0
    // before its data started (its only region is abandoned), between the disks, or in disk 1.
    const first = paused.Disks.map((x: { Result: string }) => x.Result);
    expect([['paused'], ['completed'], ['completed', 'paused']]).toContainEqual(first);
    const finished = first.filter((r: string) => r === 'completed').length;

    // --continue: only what is left is done.
    const cont = s.json('resume-replication', 'vm', '--continue');
    expect(cont.Result).toBe('completed');
    expect(cont.Disks.map((x: { Index: number }) => x.Index)).toEqual([0, 1].slice(finished));
    expect(cont.State).toBe('Replicating');
    for (const [i, p] of [a, b].entries()) expect(qemuIdentical(p, join(s.replica, 'vm', i ? 'b.img' : 'a.img'))).toBe(true);

    // Again, and this time cancel it: back to required; the next one starts from the beginning.
    for (const p of [a, b]) execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x62 4M 1M', p]);
    s.ok('service', '--once');
    bg = started();
    await until(() => s.json('get-replication', 'vm').State === 'Resynchronizing', 'the resync to start');
    expect(s.json('stop-replication', 'vm')).toMatchObject({ State: 'WaitingForStartResynchronize', Health: 'Critical' });
    done = await bg.exited;
    expect(done.stdout, `exit ${done.code}: ${done.stderr}`).not.toBe('');
    expect(JSON.parse(done.stdout).Result).toBe('cancelled');
    expect(existsSync(join(s.replica, 'vm', 'b.img.resync.vhd'))).toBe(false);
    const again = s.json('resume-replication', 'vm', '--resynchronize');
    expect(again.Disks.map((x: { Index: number; ResumedFrom: number }) => [x.Index, x.ResumedFrom])).toEqual([[0, 0], [1, 0]]);
    expect(again.State).toBe('Replicating');
  });

  it('the daemon: sees a change made while the VM is off, resyncs it automatically, and stops cleanly on SIGTERM', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 16 * MiB, 3);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica, '--auto-resynchronize-enabled', '1', '--auto-resynchronize-interval-start', '00:00:00', '--auto-resynchronize-interval-end', '23:59:59');
    s.ok('start-initial-replication', 'vm');
    const svc = s.background('service', '--tick', '50ms');
    const log = () => svc.output().stderr;
    const exited = svc.exited.then((r) => r.code);
    await until(() => /replication service started/.test(log()), 'the service');
    expect(s.run('service', '--once').stderr).toMatch(/already running for this home \(process \d+\)/);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 5M 256k', p]);
    await until(() => /resynchronization completed/.test(log()), 'the automatic resync');
    expect(log()).toMatch(/resynchronization required: ModifiedWhileOff/);
    expect(log()).toMatch(/starting an automatic resynchronization/);
    svc.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'Replicating', Health: 'Normal' });
    expect(qemuIdentical(p, join(s.replica, 'vm', 'p.img'))).toBe(true);
  });

  it('bad input: each a clear line, exit 2, nothing changed', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB);
    const q = await rawDisk(join(s.d, 'q.img'), 8 * MiB);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    const state = () => readFile(join(s.home, 'vms', 'vm', 'vm.json'), 'utf8');
    const before = await state();
    const week = new Date(Date.now() + 8 * 24 * 3600_000).toISOString();
    const cases: [string[], RegExp][] = [
      [['get-replication', 'nosuch'], /no virtual machine named 'nosuch' is enabled for replication/],
      [['resume-replication', 'nosuch'], /no virtual machine named 'nosuch'/],
      [['set-replication', 'vm', '--auto-resynchronize-interval-start', '25:00'], /--auto-resynchronize-interval-start: '25:00' is not a time of day/],
      [['set-replication', 'vm', '--frequency', '60'], /--frequency: '60' is not a replication frequency; use 30, 300 or 900 seconds/],
      [['set-replication', 'vm', '--frequency', '30', '--auto-resynchronize-enabled', 'maybe'], /not a boolean/],
      [['resume-replication', 'vm', '--resynchronize', '--resynchronize-start-time', week], /more than 7 days ahead/],
      [['resume-replication', 'vm', '--resynchronize', '--resynchronize-start-time', 'tomorrowish'], /not a date and time/],
      [['resume-replication', 'vm', '--resynchronize'], /start the initial replication first/],
      [['enable-replication', 'other', '--disk', p, q, '--replica', join(s.d, 'r2')], /p\.img: this disk is already replicated by virtual machine 'vm'/],
      [['enable-replication', 'vm', '--disk', q, '--replica', s.replica], /a virtual machine named 'vm' is already enabled/],
      [['enable-replication', 'bad*name', '--disk', q, '--replica', s.replica], /not a usable VM name/],
      [['enable-replication', 'x', '--disk', join(s.d, 'missing.img'), '--replica', s.replica], /missing\.img: no such file/],
      [['stop-replication', 'vm'], /no resynchronization to cancel/],
      [['write', 'vm', '--offset', '0'], /exactly one of --pattern 0xAB or --from FILE/],
      [['workload', 'vm', '--pattern', 'video'], /--pattern: 'video' is not a pattern/],
      [['events', '--id', 'x'], /--id: 'x' is not an event id/],
    ];
    for (const [k, [args, message]] of cases.entries()) {
      const r = s.run(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/);
      if (k % 4 === 0) {
        const j = s.run(...args, '--json');
        expect(JSON.parse(j.stdout).error.code, args.join(' ')).toMatch(/^[A-Z_]+$/);
      }
    }
    expect(await state()).toBe(before);
    expect(s.json('get-replication')).toHaveLength(1);
    expect(existsSync(join(s.d, 'r2'))).toBe(false);
  });
});
