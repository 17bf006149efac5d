/**
 * A DirtyExtents scope holds only while every change to a primary since the scope was collected is in
 * its dirty map. A disk changed behind the tracker while the VM is already in Resynchronization Required
 * (modified while off, replaced, resized), a dirty map lost or damaged, or a suspended resync whose disk
 * changed before it continues: each must widen the scope to Full, never compare too little.
 *
 * Everything goes through the built CLI with its own VHDSYNC_HOME; the disks are changed behind the
 * tracker with qemu-io / qemu-img / cp, and the end is judged by `qemu-img compare`.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, renameSync } from 'node:fs';
import { readFile, rm as rmFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCore } from '../host/core/index.js';
import { ActivityLog, activityLogPathFor } from '../host/tracking/activity-log.js';
import { dirtyExtents, dirtyMapPathFor, encodeDirtyMap, readDirtyMap } from '../host/tracking/dirty-map.js';
import { trackingLogPathFor } from '../host/tracking/log-files.js';
import { randomBytes } from './support/bytes.js';
import { cli, background } from './support/cli.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

const SIZE = 32 * MiB;
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-extents-off-'));
});
afterAll(() => cleanup());

/** The CLI with its own VHDSYNC_HOME (and no --home: the environment alone must do). */
function vhdsyncAt(home: string) {
  const at = { home };
  const run = (...args: string[]) => cli(args, at);
  const ok = (...args: string[]) => {
    const r = run(...args);
    if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r;
  };
  const json = (...args: string[]) => JSON.parse(ok(...args, '--json').stdout);
  return { at, run, ok, json };
}

/** Change a raw disk behind the tracker, as another tool would. */
function qemuWrite(path: string, offset: number, length: number, byte: number): void {
  const r = spawnSync('qemu-io', ['-f', 'raw', '-c', `write -P ${byte} ${offset} ${length}`, path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`qemu-io failed: ${r.stderr}`);
}

interface Crashed {
  name: string;
  primary: string;
  replica: string;
  vhd: ReturnType<typeof vhdsyncAt>;
}

/**
 * A replicated VM whose `vhdsync workload` was SIGKILLed: `service --once` sees the log not closed
 * gracefully, and the VM waits in Resynchronization Required with a DirtyExtents scope.
 */
async function crashedVm(name: string, beforeSeen?: (c: Crashed) => Promise<void>): Promise<Crashed> {
  const sub = join(dir, name);
  const home = join(sub, 'home');
  const vhd = vhdsyncAt(home);
  spawnSync('mkdir', ['-p', sub]);
  const primary = await rawImage(join(sub, `${name}.raw`), SIZE, [[0, randomBytes(SIZE, name.length + 1)]]);
  vhd.ok('enable-replication', name, '--disk', primary, '--replica', join(sub, 'replica'));
  vhd.ok('start-initial-replication', name);
  const replica = join(sub, 'replica', name, `${name}.raw`);
  expect(qemuIdentical(primary, replica)).toBe(true);
  const c = { name, primary, replica, vhd };
  await killedWorkload(c);
  if (beforeSeen) {
    await beforeSeen(c);
    return c;
  }

  vhd.ok('service', '--once', '--quiet');
  const view = vhd.json('get-replication', name);
  expect([view.State, view.ResynchronizationReason, view.ResynchronizationScope]).toEqual(['WaitingForStartResynchronize', 'TrackingLogNotClosed', 'DirtyExtents']);
  expect(view.ResynchronizationScopeBytes).toBeLessThan(SIZE / 2);
  return c;
}

/** `vhdsync workload` of the VM, SIGKILLed once its open log holds 1 MiB. */
async function killedWorkload(c: Crashed): Promise<void> {
  const { child, exited: closed } = background(['workload', c.name, '--pattern', 'hot', '--rate', '4MB/s', '--duration', '1h', '--seed', '11'], c.vhd.at);
  let gone = false;
  const exited = closed.then(() => (gone = true));
  for (;;) {
    if (gone) throw new Error('vhdsync workload ended before it was killed');
    if ((await stat(trackingLogPathFor(c.primary)).then((s) => s.size, () => 0)) >= 1 * MiB) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await exited;
}

/** A 1 MiB extent of the disk outside its dirty map: where a change would be missed by a scoped compare. */
async function cleanExtent(primary: string): Promise<number> {
  const map = (await readDirtyMap(primary))!;
  const dirty = new Set(dirtyExtents(map));
  for (let e = Math.floor(SIZE / map.extentSize) - 1; e >= 0; e--) if (!dirty.has(e)) return e * map.extentSize;
  throw new Error('every extent is dirty');
}

function lastEvent(vhd: Crashed['vhd'], name: string, id: number): { Scope?: string; Message: string } {
  const events = vhd.json('events', name) as { Id: number; Scope?: string; Message: string }[];
  return events.filter((e) => e.Id === id).pop()!;
}

/** Resync now; it must compare everything and leave the replica identical to the primary. */
function resyncFull(c: Crashed, ...extra: string[]): void {
  const out = c.vhd.json('resume-replication', c.name, '--resynchronize', ...extra);
  expect(out.Result).toBe('completed');
  expect(qemuIdentical(c.primary, c.replica), 'the replica equals the primary after the resync').toBe(true);
  expect(out.Disks[0].ResynchronizationScope).toBe('Full');
  expect(out.Disks[0].BytesCompared).toBe(SIZE);
  expect(lastEvent(c.vhd, c.name, 29242).Scope).toBe('Full');
  expect(existsSync(dirtyMapPathFor(c.primary))).toBe(false);
}

describe('a DirtyExtents scope widens to Full when a disk changed behind the tracker', () => {
  it('a disk modified while the VM is off, already in Resynchronization Required: the resync compares everything and ends identical', async () => {
    const c = await crashedVm('offmod');
    const at = await cleanExtent(c.primary);
    qemuWrite(c.primary, at + 4096, 64 * 1024, 0x5a);
    expect(qemuIdentical(c.primary, c.replica)).toBe(false);

    // The service sees it as well (the VM is off): get-replication shows the wider scope before any resync.
    c.vhd.ok('service', '--once', '--quiet');
    const view = c.vhd.json('get-replication', c.name);
    expect([view.State, view.ResynchronizationScope, view.ResynchronizationScopeBytes]).toEqual(['WaitingForStartResynchronize', 'Full', SIZE]);
    expect(view.ResynchronizationEvidence).toMatch(/modified while the VM was off/);
    resyncFull(c);
  });

  it('the same change found only when the resync starts (no service pass in between)', async () => {
    const c = await crashedVm('offstart');
    qemuWrite(c.primary, (await cleanExtent(c.primary)) + 512, 4096, 0x33);
    resyncFull(c);
  });

  it('a disk modified while off, then the VM started: the start sees it before bitmap mode marks anything', async () => {
    const c = await crashedVm('offrun');
    const at = await cleanExtent(c.primary);
    qemuWrite(c.primary, at, 8192, 0x21);
    // A tracked write elsewhere: the VM runs (bitmap mode) and shuts down cleanly, fingerprint retaken.
    c.vhd.ok('write', c.name, '--offset', '0', '--pattern', '0x44', '--length', '4096');
    const view = c.vhd.json('get-replication', c.name);
    expect(view.ResynchronizationScope).toBe('Full');
    expect(view.ResynchronizationEvidence).toMatch(/ModifiedWhileOff/);
    resyncFull(c);
  });

  it('a suspended DirtyExtents resync whose disk is modified while off starts over with a full compare', async () => {
    const c = await crashedVm('offpause');
    const overlay = `${c.replica}.resync.vhd`;
    const resync = background(['resume-replication', c.name, '--resynchronize', '--link', '1mbps'], c.vhd.at);
    const { child } = resync;
    let code: number | null | undefined;
    const exited = resync.exited.then((r) => (code = r.code));
    let created = -1;
    // Interrupted once data has reached the replica's overlay (the resync is under way).
    for (;;) {
      if (code !== undefined) throw new Error(`the resync ended before it was interrupted (exit ${code}): ${resync.output().stderr}`);
      const now = await stat(overlay).then((s) => s.size, () => -1);
      if (created < 0 && now > 0) created = now;
      else if (created > 0 && now > created) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGINT');
    expect(await exited).toBe(3);
    const paused = c.vhd.json('get-replication', c.name);
    expect([paused.State, paused.ResynchronizationScope]).toEqual(['ResynchronizeSuspended', 'DirtyExtents']);

    qemuWrite(c.primary, (await cleanExtent(c.primary)) + 65536, 4096, 0x7e);
    const out = c.vhd.json('resume-replication', c.name, '--continue');
    expect(out.Result).toBe('completed');
    expect(qemuIdentical(c.primary, c.replica), 'the replica equals the primary after the resync').toBe(true);
    expect([out.Disks[0].ResynchronizationScope, out.Disks[0].ResumedFrom, out.Disks[0].BytesCompared]).toEqual(['Full', 0, SIZE]);
    expect(lastEvent(c.vhd, c.name, 29242).Scope).toBe('Full');
  });

  it('a disk replaced by another file (another inode) while in Resynchronization Required', async () => {
    const c = await crashedVm('offswap');
    const copy = `${c.primary}.new`;
    copyFileSync(c.primary, copy);
    qemuWrite(copy, await cleanExtent(c.primary), 4096, 0x19);
    renameSync(copy, c.primary);
    resyncFull(c);
  });

  it('a disk replaced after its writer crashed, before the crash was seen: the crash scope is not trusted', async () => {
    const sub = join(dir, 'crashswap');
    const home = join(sub, 'home');
    const vhd = vhdsyncAt(home);
    spawnSync('mkdir', ['-p', sub]);
    const primary = await rawImage(join(sub, 'crashswap.raw'), SIZE, [[0, randomBytes(SIZE, 3)]]);
    vhd.ok('enable-replication', 'crashswap', '--disk', primary, '--replica', join(sub, 'replica'));
    vhd.ok('start-initial-replication', 'crashswap');
    const c: Crashed = { name: 'crashswap', primary, replica: join(sub, 'replica', 'crashswap', 'crashswap.raw'), vhd };
    await killedWorkload(c);
    const copy = `${primary}.new`;
    copyFileSync(primary, copy);
    qemuWrite(copy, SIZE - 4096, 4096, 0x66);
    renameSync(copy, primary);
    vhd.ok('service', '--once', '--quiet');
    const view = vhd.json('get-replication', 'crashswap');
    expect([view.State, view.ResynchronizationReason, view.ResynchronizationScope]).toEqual(['WaitingForStartResynchronize', 'ModifiedWhileOff', 'Full']);
    expect(view.ResynchronizationEvidence).toMatch(/replaced/);
    resyncFull(c);
  });

  it('a disk resized (both sides, by another tool) while in Resynchronization Required', async () => {
    const c = await crashedVm('offgrow');
    for (const p of [c.primary, c.replica]) await truncate(p, SIZE + 4 * MiB);
    c.vhd.ok('service', '--once', '--quiet');
    expect(c.vhd.json('get-replication', c.name).ResynchronizationScope).toBe('Full');
    const out = c.vhd.json('resume-replication', c.name, '--resynchronize');
    expect([out.Result, out.Disks[0].ResynchronizationScope, out.Disks[0].BytesCompared]).toEqual(['completed', 'Full', SIZE + 4 * MiB]);
    expect(qemuIdentical(c.primary, c.replica)).toBe(true);
  });
});

describe('only evidence widens the scope', () => {
  it('a crash seen by the VM\'s own next start keeps DirtyExtents: the crashed writer\'s changes are not taken for a change while off', async () => {
    const sub = join(dir, 'restart');
    const vhd = vhdsyncAt(join(sub, 'home'));
    spawnSync('mkdir', ['-p', sub]);
    const primary = await rawImage(join(sub, 'restart.raw'), SIZE, [[0, randomBytes(SIZE, 5)]]);
    vhd.ok('enable-replication', 'restart', '--disk', primary, '--replica', join(sub, 'replica'));
    vhd.ok('start-initial-replication', 'restart');
    const c: Crashed = { name: 'restart', primary, replica: join(sub, 'replica', 'restart', 'restart.raw'), vhd };
    await killedWorkload(c);
    // The VM starts again before anything else looked: its start finds the crash, then writes in bitmap mode.
    vhd.ok('write', 'restart', '--offset', String(SIZE - 4096), '--pattern', '0x12', '--length', '4096');
    const view = vhd.json('get-replication', 'restart');
    expect([view.ResynchronizationReason, view.ResynchronizationScope]).toEqual(['TrackingLogNotClosed', 'DirtyExtents']);
    const out = vhd.json('resume-replication', 'restart', '--resynchronize');
    expect([out.Result, out.Disks[0].ResynchronizationScope]).toEqual(['completed', 'DirtyExtents']);
    expect(out.Disks[0].BytesRead).toBeLessThan(SIZE / 2);
    expect(qemuIdentical(primary, c.replica)).toBe(true);
  });
});

describe('a crash scope needs the activity log of this very file', () => {
  it('an activity log deleted after the crash, before it was seen: the scope is Full', async () => {
    const c = await crashedVm('algone', async (x) => rmFile(activityLogPathFor(x.primary)));
    c.vhd.ok('service', '--once', '--quiet');
    const view = c.vhd.json('get-replication', c.name);
    expect([view.ResynchronizationReason, view.ResynchronizationScope]).toEqual(['TrackingLogNotClosed', 'Full']);
    expect(view.ResynchronizationEvidence).toMatch(/activity log is gone or unreadable/);
    resyncFull(c);
  });

  it('an activity log copied from another disk over this one\'s: the scope is Full', async () => {
    const other = await rawImage(join(dir, 'other.raw'), SIZE);
    const al = await ActivityLog.open(other, { extentSize: MiB, capacity: 1024 });
    await al.admit([0]);
    await al.close();
    const c = await crashedVm('alother', async (x) => copyFileSync(activityLogPathFor(other), activityLogPathFor(x.primary)));
    c.vhd.ok('service', '--once', '--quiet');
    const view = c.vhd.json('get-replication', c.name);
    expect([view.ResynchronizationReason, view.ResynchronizationScope]).toEqual(['TrackingLogNotClosed', 'Full']);
    expect(view.ResynchronizationEvidence).toMatch(/kept for another file/);
    resyncFull(c);
  });
});

describe('a lost, damaged or foreign dirty map widens the scope to Full, never to less', () => {
  it('a dirty map deleted after bitmap mode marked a write: the resync compares everything', async () => {
    const c = await crashedVm('mapgone');
    const at = await cleanExtent(c.primary);
    // Bitmap mode: the VM's write lands outside the crash's extents and only the dirty map knows it.
    c.vhd.ok('write', c.name, '--offset', String(at), '--pattern', '0x55', '--length', '8192');
    expect(dirtyExtents((await readDirtyMap(c.primary))!)).toContain(at / MiB);
    await rmFile(dirtyMapPathFor(c.primary));
    resyncFull(c);
    expect(lastEvent(c.vhd, c.name, 90002).Message).toMatch(/dirty map is gone/);
  });

  it('a write in bitmap mode that finds no dirty map widens the scope at once', async () => {
    const c = await crashedVm('mapgonerun');
    await rmFile(dirtyMapPathFor(c.primary));
    c.vhd.ok('write', c.name, '--offset', String(SIZE - 8192), '--pattern', '0x56', '--length', '4096');
    const view = c.vhd.json('get-replication', c.name);
    expect(view.ResynchronizationScope).toBe('Full');
    expect(view.ResynchronizationEvidence).toMatch(/neither a tracking log nor the dirty map|dirty map is gone/);
    resyncFull(c);
  });

  for (const [what, damage] of [
    ['damaged (a flipped header byte)', async (p: string) => {
      const b = new Uint8Array(await readFile(p));
      b[20] ^= 0xff;
      await writeFile(p, b);
    }],
    ['truncated', async (p: string) => truncate(p, 514)],
    ['kept for another replica', async (p: string, c: Crashed) => {
      const map = (await readDirtyMap(c.primary))!;
      await writeFile(p, encodeDirtyMap({ ...map, replica: join(dir, 'elsewhere.raw') }));
    }],
  ] as const) {
    it(`a dirty map ${what}: the resync compares everything`, async () => {
      const c = await crashedVm(`map${what.split(' ')[0]}`);
      await damage(dirtyMapPathFor(c.primary), c);
      resyncFull(c);
    });
  }
});
