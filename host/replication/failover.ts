import { VhdsyncError } from '../errors.js';
import { replicateCycle } from './cycle.js';
import { RESYNC_STATES } from './names.js';
import { REPLICATION_STATES, type ReplicationState } from '../replica/states.js';
import type { RecoveryPoint } from '../replica/recovery-points.js';
import type { FailoverRecord } from '../replica/site.js';
import type { Replication } from './replication.js';
import type { VmRecord } from './store.js';
import { stopTracking } from './vm-logs.js';
import { resumeReplication, stopReplication } from './control.js';
import { runResync } from './resync-run.js';

/**
 * Start-VMFailover / Complete-VMFailover / Stop-VMFailover (reference §1.1, §1.3, §2.4), in Hyper-V's steps:
 * - test (`--test`): a writable differencing view of each replica disk at a chosen point,
 *   `<replica>.test-failover.vhd`; replication goes on (the apply copies what it overwrites into the
 *   view first, so the view never changes under the tester). Stop removes the views.
 * - prepare (`--prepare`, on the primary): the primary is off and Replicating; a last cycle ships every
 *   change; the VM is PreparedForFailover. Stop returns it to Replicating.
 * - failover (no flag after a prepare: planned, at the latest point; `--unplanned`: at a chosen point,
 *   accepting the loss of what was not replicated): the running copy is a writable differencing view
 *   of each replica disk at the point, `<replica>.failover.vhd` (Hyper-V runs a failed-over VM on a
 *   recovery snapshot the same way); the replica disks, their points and unapplied logs stay as they
 *   were. The VM is FailedOverWaitingCompletion. `--planned` is prepare + failover in one command.
 * - complete: the views are merged into the replica disks (journalled, resumed after a crash: the point
 *   of no return), every recovery point is deleted and unapplied logs dropped; the VM is FailedOver.
 * - stop (of a failover not completed, planned or unplanned): the views go; the replica is exactly as
 *   it was before the failover, and the VM returns to the state it had (Replicating: cycles resume,
 *   shipping what the primary tracked meanwhile).
 * During a resync test and planned failovers are refused; an unplanned one cancels the resync first
 * (overlay discarded, points intact), or, once a merge started (or a disk of the VM is already
 * merged), lets the resync finish first so that every disk is from the same time.
 * `<replica>/<vm>/failover.json` records what is in effect and its phase; each step writes it before
 * it acts, so a step killed half-way is finished by running it again (or undone by stop-failover
 * until complete-failover's merge starts). Everything on the replica's files is done by the replica
 * site (host/replica/local-site.ts), under its site and disk locks — on this machine, or on a replica server
 * (host/replica/remote-site.ts).
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

/** `--test`, `--planned` (prepare + failover) or `--unplanned`. */
export async function startFailover(rep: Replication, name: string, kind: FailoverKind, opts: { point?: string } = {}): Promise<FailoverResult> {
  if (kind === 'planned') {
    if (opts.point !== undefined && opts.point.toLowerCase() !== 'latest') throw new VhdsyncError('USAGE', '--point: a planned failover is to the latest point (every change is shipped first); use --unplanned for an older point');
    if ((await rep.get(name)).state !== 'PreparedForFailover') await prepareFailover(rep, name);
    return failOver(rep, name);
  }
  return kind === 'test' ? startTest(rep, name, opts.point) : failOver(rep, name, { unplanned: true, point: opts.point });
}

async function startTest(rep: Replication, name: string, at: string | undefined): Promise<FailoverResult> {
  const vm = await rep.get(name);
  refuseDuringResync(vm, 'test');
  const site = rep.site(vm);
  const existing = await site.failoverRecord();
  if (existing) throw inEffect(name, existing);
  const point = choosePoint(await site.points(vm.lastReplicationTime), at);
  // Recorded first: views left by a crash half-way are removed by stop-failover --test.
  await site.setFailoverRecord({ version: 1, kind: 'test', sequence: point.sequence, time: point.time, startedAt: rep.clock.now().toISOString() });
  // The record goes first (a crash while the views are made leaves one to stop); a refusal takes it back.
  const views = await site.createTestViews(point.sequence).catch(async (e: unknown) => {
    await site.removeTestViews().catch(() => undefined);
    await site.setFailoverRecord(null).catch(() => undefined);
    throw e;
  });
  return { kind: 'test', point, disks: views, vm };
}

/** Start-VMFailover -Prepare: the primary is off, so one last cycle ships everything; the VM is PreparedForFailover. */
export async function prepareFailover(rep: Replication, name: string): Promise<VmRecord> {
  const vm = await rep.get(name);
  refuseDuringResync(vm, 'planned');
  const pid = await rep.runningPid(name);
  if (pid !== undefined) throw new VhdsyncError('STATE', `planned failover needs the primary VM off, and process ${pid} is running '${name}'; shut it down first, or use --unplanned`);
  if (vm.state !== 'Replicating') throw new VhdsyncError('STATE', `planned failover needs '${name}' Replicating, so that every change can be shipped; it is ${vm.state} (use --unplanned to accept the loss)`);
  const site = rep.site(vm);
  const existing = await site.failoverRecord();
  if (existing) throw inEffect(name, existing);
  const cycle = await replicateCycle(rep, name);
  if (cycle.result === 'failed') throw new VhdsyncError('IO', `planned failover: the last replication cycle failed (${cycle.error}); nothing changed, try again`);
  if (cycle.result === 'resync-required') throw new VhdsyncError('STATE', `planned failover: ${cycle.trigger.evidence}; a resynchronization is required first`);
  const latest = await site.lastApplied();
  const { vm: after } = await rep.store.update(name, async (v) => {
    if (v.lastShippedSequence !== latest) throw new VhdsyncError('STATE', `planned failover: cycle ${v.lastShippedSequence} was shipped but the replica applied only up to ${latest}; try again`);
    if (v.state !== 'Replicating') throw new VhdsyncError('STATE', `planned failover: '${name}' is ${v.state} now; nothing changed`);
    v.state = 'PreparedForFailover';
    v.control = null;
  });
  return after;
}

/**
 * Start-VMFailover on the replica: planned after a prepare (the latest point, no loss), or `unplanned`
 * at a point. The running copy is a view over each replica disk; the VM is FailedOverWaitingCompletion.
 */
export async function failOver(rep: Replication, name: string, opts: { unplanned?: boolean; point?: string } = {}): Promise<FailoverResult> {
  let vm = await rep.get(name);
  const existing = await rep.site(vm).failoverRecord();
  if (existing?.reverting) return finishLegacyRevert(rep, name, existing);
  if (vm.state === 'FailedOverWaitingCompletion') {
    throw new VhdsyncError('STATE', `virtual machine '${name}' is already failed over (${existing?.kind ?? 'planned'}), waiting for completion: complete-failover ${name} commits it, stop-failover ${name} rolls it back`);
  }
  // A failover that was killed after recording itself and before the VM said so: made again, the same.
  const again = existing?.phase === 'waiting' && (existing.kind === 'planned' ? !opts.unplanned : !!opts.unplanned) ? existing : undefined;
  if (existing && !again) throw inEffect(name, existing);
  if (!opts.unplanned) {
    if (vm.state !== 'PreparedForFailover') {
      throw new VhdsyncError(
        'STATE',
        `virtual machine '${name}' is ${vm.state}, not PreparedForFailover: prepare the planned failover first (start-failover ${name} --prepare, with the VM off), or fail over with --unplanned at a recovery point (what was not replicated is lost)`,
      );
    }
    if (opts.point !== undefined && opts.point.toLowerCase() !== 'latest') throw new VhdsyncError('USAGE', '--point: a planned failover is to the latest point; use --unplanned for an older point');
    const site = rep.site(vm);
    const latest = await site.lastApplied();
    const point: RecoveryPoint = again
      ? { sequence: again.sequence, time: again.time, kind: 'Latest', sizeOnDisk: 0 }
      : { sequence: latest, time: vm.lastReplicationTime ?? rep.clock.now().toISOString(), kind: 'Latest', sizeOnDisk: 0 };
    return viewsAndState(rep, name, { kind: 'planned', point, resumeState: 'Replicating' });
  }
  let resync: FailoverResult['resync'];
  if (!again) {
    if (vm.state === 'InitialReplicationInProgress' || vm.state === 'ReadyForInitialReplication') {
      throw new VhdsyncError('STATE', `failover is not possible: virtual machine '${name}' has no complete replica yet (${vm.state})`);
    }
    resync = await settleResync(rep, name, opts.point);
    if (resync) vm = await rep.get(name);
  }
  const site = rep.site(vm);
  const point = again ? ({ sequence: again.sequence, time: again.time, kind: 'Standard', sizeOnDisk: 0 } as RecoveryPoint) : choosePoint(await site.points(vm.lastReplicationTime), opts.point);
  const out = await viewsAndState(rep, name, { kind: 'unplanned', point, resumeState: again?.resumeState ?? vm.state });
  return { ...out, resync };
}

/** Record the failover (first, so a crash is finished by running it again), make the views, then say so in the VM's state. */
async function viewsAndState(rep: Replication, name: string, f: { kind: 'planned' | 'unplanned'; point: RecoveryPoint; resumeState: string }): Promise<FailoverResult> {
  const vm = await rep.get(name);
  const site = rep.site(vm);
  await site.setFailoverRecord({ version: 1, kind: f.kind, sequence: f.point.sequence, time: f.point.time, phase: 'waiting', resumeState: f.resumeState, startedAt: rep.clock.now().toISOString() });
  const views = await site.createFailoverViews(f.point.sequence);
  const { vm: after } = await rep.store.update(name, async (v) => {
    v.state = 'FailedOverWaitingCompletion';
    v.control = null;
  });
  return { kind: f.kind, point: f.point, disks: views, vm: after };
}

/**
 * Before an unplanned failover: a resync before its merge is cancelled (every resync write is in the
 * overlay: the replica and its points are as before it); one past its point of no return is finished.
 */
async function settleResync(rep: Replication, name: string, at: string | undefined): Promise<FailoverResult['resync']> {
  const vm = await rep.get(name);
  // A merge that started (checkpoint `merging`, the point of no return) or ended without the resync's
  // commit (`merged`: the base is the resynced disk, the tracked writes are still to apply) must finish
  // whatever the state says: a resync process that died there leaves the VM in Resynchronization Required.
  const merging = [];
  for (const d of vm.disks) {
    const phase = await rep.site(vm).resyncPhase(d.index);
    if (phase === 'merging' || phase === 'merged') merging.push(d.replicaPath);
  }
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
      if (vm.state === 'WaitingForStartResynchronize') await resumeReplication(rep, name, { resynchronize: true });
      else if (vm.state === 'ResynchronizeSuspended') await resumeReplication(rep, name, { continue: true });
      const out = await runResync(rep, name, { restart: false });
      if (out.result !== 'completed') throw new VhdsyncError('STATE', `${merging[0]}: the resync merge did not finish (${out.result}); run the failover again`);
    }
    return 'merge-finished';
  }
  if (inResync) {
    await stopReplication(rep, name);
    return 'cancelled';
  }
  return undefined;
}

/** A failover record of an older vhdsync that reverted the replica in place and was killed doing it: finished the old way. */
async function finishLegacyRevert(rep: Replication, name: string, rec: FailoverRecord): Promise<FailoverResult> {
  const vm = await rep.get(name);
  const site = rep.site(vm);
  await site.revertTo(rec.sequence);
  const { vm: after } = await rep.store.update(name, async (v) => {
    await stopTracking(v);
    v.state = 'FailedOver';
    v.control = null;
  });
  await site.setFailoverRecord({ version: 1, kind: rec.kind, sequence: rec.sequence, time: rec.time, startedAt: rec.startedAt });
  return { kind: rec.kind, point: { sequence: rec.sequence, time: rec.time, kind: 'Standard', sizeOnDisk: 0 }, disks: vm.disks.map((d) => site.diskLocation(d.index)), vm: after };
}

export interface CompleteResult {
  kind: 'planned' | 'unplanned';
  point: RecoveryPoint;
  /** The replica disks, now the failed-over VM's own. */
  disks: string[];
  vm: VmRecord;
}

/**
 * Complete-VMFailover: the views are merged into the replica disks (the point of no return), the other
 * recovery points are deleted, unapplied logs dropped; the primary stops tracking; the VM is FailedOver.
 */
export async function completeFailover(rep: Replication, name: string): Promise<CompleteResult> {
  const vm = await rep.get(name);
  const site = rep.site(vm);
  const rec = await site.failoverRecord();
  const resuming = rec?.phase === 'completing';
  if (!rec || rec.kind === 'test' || !(rec.phase === 'waiting' || resuming) || !(vm.state === 'FailedOverWaitingCompletion' || resuming)) {
    const what = rec?.phase === 'stopping' ? `its failover is being stopped; run stop-failover ${name} again to finish` : rec && rec.kind !== 'test' && !rec.phase ? 'its failover is already complete' : `it is ${vm.state}${rec?.kind === 'test' ? ' with a test failover (stop-failover ' + name + ')' : ''}`;
    throw new VhdsyncError('STATE', `complete-failover needs '${name}' failed over and waiting for completion (start-failover ${name}); ${what}`);
  }
  if (!resuming) await site.setFailoverRecord({ ...rec, phase: 'completing' });
  try {
    await site.commitFailover(rec.sequence);
  } catch (e) {
    // Busy views are refused before anything is merged: the failover still waits, and can be stopped.
    if (!resuming && e instanceof VhdsyncError && e.code === 'BUSY') await site.setFailoverRecord(rec);
    throw e;
  }
  const { vm: after } = await rep.store.update(name, async (v) => {
    await stopTracking(v);
    v.state = 'FailedOver';
    v.control = null;
  });
  const { phase: _done, resumeState: _gone, ...completed } = rec;
  await site.setFailoverRecord(completed);
  const point: RecoveryPoint = { sequence: rec.sequence, time: rec.time, kind: 'Latest', sizeOnDisk: 0 };
  return { kind: rec.kind, point, disks: vm.disks.map((d) => site.diskLocation(d.index)), vm: after };
}

export interface StopResult {
  kind: FailoverKind | 'prepared';
  removed: string[];
  vm: VmRecord;
}

/**
 * Stop-VMFailover: a test failover's views are removed (replication was never disturbed); a planned or
 * unplanned failover not yet completed is rolled back (its views go; the replica was never touched; the
 * VM returns to the state it had, so replication resumes); a prepared primary returns to Replicating.
 * `only: 'test'` (`stop-failover --test`) stops a test failover and nothing else.
 */
export async function stopFailover(rep: Replication, name: string, only?: 'test'): Promise<StopResult> {
  const vm = await rep.get(name);
  const site = rep.site(vm);
  const rec = await site.failoverRecord();
  if (only === 'test' || rec?.kind === 'test') {
    if (!rec || rec.kind !== 'test') throw new VhdsyncError('STATE', `virtual machine '${name}' has no test failover to stop`);
    const removed = await site.removeTestViews();
    await site.setFailoverRecord(null);
    return { kind: 'test', removed, vm };
  }
  if (!rec && vm.state === 'PreparedForFailover') {
    const { vm: after } = await rep.store.update(name, async (v) => {
      if (v.state !== 'PreparedForFailover') throw new VhdsyncError('STATE', `stop-failover: '${name}' is ${v.state} now; nothing changed`);
      v.state = 'Replicating';
    });
    return { kind: 'prepared', removed: [], vm: after };
  }
  if (!rec || !rec.phase) {
    const what = rec ? `its ${rec.kind} failover is complete (reverse-replication ${name} replicates back)` : `it is ${vm.state}`;
    throw new VhdsyncError('STATE', `virtual machine '${name}' has no failover to stop: ${what}`);
  }
  if (rec.phase === 'completing') {
    throw new VhdsyncError('STATE', `complete-failover ${name} has started merging the failed-over disks into the replica (the point of no return); run complete-failover ${name} again to finish`);
  }
  if (rec.phase !== 'stopping') await site.setFailoverRecord({ ...rec, phase: 'stopping' });
  let removed: string[];
  try {
    removed = await site.removeFailoverViews();
  } catch (e) {
    // Busy views are refused before any is removed: the failover still waits.
    if (rec.phase !== 'stopping' && e instanceof VhdsyncError && e.code === 'BUSY') await site.setFailoverRecord(rec);
    throw e;
  }
  const back = (REPLICATION_STATES as readonly string[]).includes(rec.resumeState ?? '') ? (rec.resumeState as ReplicationState) : 'Replicating';
  const { vm: after } = await rep.store.update(name, async (v) => {
    v.state = back;
    v.control = null;
  });
  await site.setFailoverRecord(null);
  return { kind: rec.kind, removed, vm: after };
}

function inEffect(name: string, rec: FailoverRecord): VhdsyncError {
  const next =
    rec.kind === 'test' ? `; stop it first (stop-failover ${name} --test)`
    : rec.phase === 'completing' ? `, being completed; run complete-failover ${name} again to finish`
    : rec.phase === 'stopping' ? `, being stopped; run stop-failover ${name} again to finish`
    : rec.phase === 'waiting' ? `, waiting for completion: complete-failover ${name} commits it, stop-failover ${name} rolls it back`
    : '';
  return new VhdsyncError('STATE', `virtual machine '${name}' already has a ${rec.kind} failover in effect${next}`);
}

async function waitUntil(rep: Replication, name: string, done: (v: VmRecord) => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (done(await rep.get(name))) return;
    if (Date.now() > deadline) throw new VhdsyncError('BUSY', `timed out waiting for the resynchronization of '${name}' to finish its merge`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
