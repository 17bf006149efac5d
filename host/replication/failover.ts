import { VhdsyncError } from '../errors.js';
import { replicateCycle } from './cycle.js';
import { RESYNC_STATES } from './names.js';
import type { RecoveryPoint } from './recovery-points.js';
import type { FailoverRecord } from './replica-site.js';
import type { Replication } from './replication.js';
import type { VmRecord } from './store.js';
import { stopTracking } from './vm-logs.js';

/**
 * Start-VMFailover / Stop-VMFailover on the replica (reference §1.2, §2.4 step 5):
 * - test: a writable differencing view of each replica disk at a chosen point,
 *   `<replica>.test-failover.vhd`; replication goes on (the apply copies what it overwrites into the
 *   view first, so the view never changes under the tester). Stop removes the views.
 * - planned: the primary is off and Replicating; a last cycle ships every change; the replica is the
 *   primary exactly (no data loss) and the VM is FailedOver.
 * - unplanned: the replica disks themselves become the chosen point (undo logs written in place) and
 *   the VM is FailedOver; newer points and shipped-but-unapplied logs are dropped (that is the loss).
 * During a resync test and planned failovers are refused; an unplanned one cancels the resync first
 * (overlay discarded, points intact), or, once a merge started (or a disk of the VM is already
 * merged), lets the resync finish first so that every disk is from the same time.
 * `<replica>/<vm>/failover.json` records what is in effect. Everything on the replica's files is done
 * by the replica site (replica-site.ts) — on this machine, or on a replica server (remote-site.ts).
 */
export type FailoverKind = FailoverRecord['kind'];
export type { FailoverRecord };

export interface FailoverResult {
  kind: FailoverKind;
  point: RecoveryPoint;
  /** The disks to start the failed-over VM from. */
  disks: string[];
  /** What happened to a resync that was in progress. */
  resync?: 'cancelled' | 'merge-finished';
  vm: VmRecord;
}

/** The failover in effect for the VM, as its replica site records it. */
export function readFailover(rep: Replication, vm: VmRecord): Promise<FailoverRecord | undefined> {
  return rep.site(vm).failoverRecord();
}

/** Get-VMReplicationCheckpoint-like: the latest point and the hourly ones, newest first. */
export async function getRecoveryPoints(rep: Replication, name: string): Promise<RecoveryPoint[]> {
  const vm = await rep.get(name);
  return rep.site(vm).points(vm.lastReplicationTime);
}

/** `--point`: 'latest', or a time; the newest point at or before it. */
export function choosePoint(points: RecoveryPoint[], at: string | undefined): RecoveryPoint {
  if (at === undefined || at.toLowerCase() === 'latest') return points[0];
  const t = Date.parse(at);
  if (Number.isNaN(t)) throw new VhdsyncError('USAGE', `--point: '${at}' is not a time; give 'latest' or a time as get-recovery-points prints it`);
  const p = points.find((x) => Date.parse(x.time) <= t);
  if (!p) {
    throw new VhdsyncError('NOT_FOUND', `--point: no recovery point at or before ${new Date(t).toISOString()}; the oldest is ${points.at(-1)?.time} (see get-recovery-points)`);
  }
  return p;
}

function refuseDuringResync(vm: VmRecord, kind: 'test' | 'planned'): void {
  if (!RESYNC_STATES.includes(vm.state)) return;
  const what = vm.state === 'InitialReplicationInProgress' ? 'the initial replication is in progress' : `virtual machine '${vm.name}' is ${vm.state}`;
  throw new VhdsyncError(
    'STATE',
    `${kind} failover is not possible: ${what}, so the replica is being rebuilt against the primary and no consistent point can be promised; wait for it to finish, or use --unplanned (which cancels the resynchronization)`,
  );
}

export async function startFailover(rep: Replication, name: string, kind: FailoverKind, opts: { point?: string } = {}): Promise<FailoverResult> {
  if (kind === 'planned') return startPlanned(rep, name);
  return kind === 'test' ? startTest(rep, name, opts.point) : startUnplanned(rep, name, opts.point);
}

async function startTest(rep: Replication, name: string, at: string | undefined): Promise<FailoverResult> {
  const vm = await rep.get(name);
  refuseDuringResync(vm, 'test');
  const site = rep.site(vm);
  const existing = await site.failoverRecord();
  if (existing) throw new VhdsyncError('STATE', `virtual machine '${name}' already has a ${existing.kind} failover in effect; stop it first (stop-failover ${name}${existing.kind === 'test' ? ' --test' : ''})`);
  const point = choosePoint(await site.points(vm.lastReplicationTime), at);
  // Recorded first: views left by a crash half-way are removed by stop-failover --test.
  await site.setFailoverRecord({ version: 1, kind: 'test', sequence: point.sequence, time: point.time, startedAt: rep.clock.now().toISOString() });
  const views = await site.createTestViews(point.sequence);
  return { kind: 'test', point, disks: views, vm };
}

/** Planned: the primary is off, so one last cycle ships everything; the replica is the primary exactly. */
async function startPlanned(rep: Replication, name: string): Promise<FailoverResult> {
  const vm = await rep.get(name);
  refuseDuringResync(vm, 'planned');
  const pid = await rep.runningPid(name);
  if (pid !== undefined) throw new VhdsyncError('STATE', `planned failover needs the primary VM off, and process ${pid} is running '${name}'; shut it down first, or use --unplanned`);
  if (vm.state !== 'Replicating') throw new VhdsyncError('STATE', `planned failover needs '${name}' Replicating, so that every change can be shipped; it is ${vm.state} (use --unplanned to accept the loss)`);
  const site = rep.site(vm);
  const existing = await site.failoverRecord();
  if (existing) throw new VhdsyncError('STATE', `virtual machine '${name}' already has a ${existing.kind} failover in effect`);
  const cycle = await replicateCycle(rep, name);
  if (cycle.result === 'failed') throw new VhdsyncError('IO', `planned failover: the last replication cycle failed (${cycle.error}); nothing changed, try again`);
  if (cycle.result === 'resync-required') throw new VhdsyncError('STATE', `planned failover: ${cycle.trigger.evidence}; a resynchronization is required first`);
  const latest = await site.lastApplied();
  const { vm: after } = await rep.store.update(name, async (v) => {
    if (v.lastShippedSequence !== latest) throw new VhdsyncError('STATE', `planned failover: cycle ${v.lastShippedSequence} was shipped but the replica applied only up to ${latest}; try again`);
    await stopTracking(v);
    v.state = 'FailedOver';
    v.control = null;
  });
  const point: RecoveryPoint = { sequence: latest, time: after.lastReplicationTime ?? rep.clock.now().toISOString(), kind: 'Latest', sizeOnDisk: 0 };
  await site.setFailoverRecord({ version: 1, kind: 'planned', sequence: latest, time: point.time, startedAt: rep.clock.now().toISOString() });
  return { kind: 'planned', point, disks: vm.disks.map((d) => site.diskLocation(d.index)), vm: after };
}

async function startUnplanned(rep: Replication, name: string, at: string | undefined): Promise<FailoverResult> {
  let vm = await rep.get(name);
  let resync: FailoverResult['resync'];
  if (vm.state === 'InitialReplicationInProgress' || vm.state === 'ReadyForInitialReplication') {
    throw new VhdsyncError('STATE', `failover is not possible: virtual machine '${name}' has no complete replica yet (${vm.state})`);
  }
  // A merge that started (checkpoint `merging`, the point of no return) must finish whatever the
  // state says: a resync process that died in it leaves the VM in Resynchronization Required.
  const merging = [];
  for (const d of vm.disks) if ((await rep.site(vm).resyncPhase(d.index)) === 'merging') merging.push(d.replicaPath);
  // Disks are resynchronized one after another: once one is merged, cancelling would leave the VM's
  // disks from two different times. Finish the resync then, too.
  const inResync = vm.state === 'Resynchronizing' || vm.state === 'ResynchronizeSuspended';
  if (inResync && (vm.resync?.disksDone.length ?? 0) > 0) merging.push(...vm.resync!.disksDone.map((i) => vm.disks[i].replicaPath));
  if (merging.length > 0) {
    if (at !== undefined && at.toLowerCase() !== 'latest') {
      throw new VhdsyncError(
        'STATE',
        `--point: the resynchronization of '${name}' is past its point of no return (${merging[0]} is merged or merging); it must finish first and leaves only the latest point; run the failover without --point`,
      );
    }
    if ((await rep.resyncPid(name)) !== undefined) {
      await waitUntil(rep, name, (v) => !RESYNC_STATES.includes(v.state));
    } else {
      if (vm.state === 'WaitingForStartResynchronize') await rep.resume(name, { resynchronize: true });
      else if (vm.state === 'ResynchronizeSuspended') await rep.resume(name, { continue: true });
      const out = await rep.runResync(name, { restart: false });
      if (out.result !== 'completed') throw new VhdsyncError('STATE', `${merging[0]}: the resync merge did not finish (${out.result}); run the failover again`);
    }
    resync = 'merge-finished';
    vm = await rep.get(name);
  } else if (inResync) {
    // Before the merge every resync write is in the overlay: dropping it leaves the replica (and its
    // recovery points) exactly as before the resync.
    await rep.stop(name);
    resync = 'cancelled';
    vm = await rep.get(name);
  }
  const site = rep.site(vm);
  const existing = await site.failoverRecord();
  if (existing && !(existing.kind === 'unplanned' && existing.reverting)) {
    throw new VhdsyncError('STATE', `virtual machine '${name}' already has a ${existing.kind} failover in effect${existing.kind === 'test' ? `; stop it first (stop-failover ${name} --test)` : ''}`);
  }
  const point = existing ? ({ sequence: existing.sequence, time: existing.time, kind: 'Standard', sizeOnDisk: 0 } as RecoveryPoint) : choosePoint(await site.points(vm.lastReplicationTime), at);
  await site.setFailoverRecord({ version: 1, kind: 'unplanned', sequence: point.sequence, time: point.time, reverting: true, startedAt: rep.clock.now().toISOString() });
  await site.revertTo(point.sequence);
  const { vm: after } = await rep.store.update(name, async (v) => {
    await stopTracking(v);
    v.state = 'FailedOver';
    v.control = null;
  });
  await site.setFailoverRecord({ version: 1, kind: 'unplanned', sequence: point.sequence, time: point.time, startedAt: rep.clock.now().toISOString() });
  return { kind: 'unplanned', point, disks: vm.disks.map((d) => site.diskLocation(d.index)), resync, vm: after };
}

/** Stop-VMFailover: removes a test failover's views; replication was never disturbed. */
export async function stopFailover(rep: Replication, name: string, kind: 'test'): Promise<{ removed: string[] }> {
  const site = rep.site(await rep.get(name));
  const rec = await site.failoverRecord();
  if (!rec || rec.kind !== kind) throw new VhdsyncError('STATE', `virtual machine '${name}' has no ${kind} failover to stop`);
  const removed = await site.removeTestViews();
  await site.setFailoverRecord(null);
  return { removed };
}

async function waitUntil(rep: Replication, name: string, done: (v: VmRecord) => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (done(await rep.get(name))) return;
    if (Date.now() > deadline) throw new VhdsyncError('BUSY', `timed out waiting for the resynchronization of '${name}' to finish its merge`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
