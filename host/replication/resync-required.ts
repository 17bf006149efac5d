import { sampleRanges, takeFingerprint } from './fingerprint.js';
import { DIRTY_EXTENT_REASONS, RESYNC_STATES, TRACKING_STATES } from './names.js';
import type { UpdateContext, VmRecord } from './store.js';
import { detectPrimaryTriggers, detectScopeBreach, type Trigger } from './triggers.js';
import { stopTracking } from './vm-logs.js';
import type { Replication } from './replication.js';
import { toHex } from '../bytes.js';

/**
 * Resynchronization Required: the transitions evidence forces (a trigger, a scope breach), and the
 * clean-up of an unfinished resync that goes back to it.
 */

/** Look at the evidence now; a trigger moves the VM to Resynchronization Required. */
export async function evaluateTriggers(rep: Replication, name: string): Promise<Trigger | undefined> {
  const vm = await rep.store.load(name);
  const running = (await rep.runningPid(name)) !== undefined;
  if (TRACKING_STATES.includes(vm.state)) {
    const trigger = await detectPrimaryTriggers(vm, { running });
    if (trigger) {
      await requireResync(rep, name, trigger);
      return trigger;
    }
  }
  return checkScope(rep, name, { running });
}

/**
 * A DirtyExtents requirement (or suspended resync) whose disks changed behind the tracker since its
 * extents were collected — modified while off, replaced, resized, a dirty map lost — compares every
 * block from now on (triggers.ts detectScopeBreach). Checked under the state lock, when nobody runs
 * the resync. `running`: the VM holds its disks (default: as its run lock says).
 */
export async function checkScope(rep: Replication, name: string, opts: { running?: boolean } = {}): Promise<Trigger | undefined> {
  const owner = await rep.resyncPid(name);
  const applies = (vm: VmRecord) =>
    vm.resync?.scope === 'DirtyExtents' && (vm.state === 'WaitingForStartResynchronize' || (owner === undefined && (vm.state === 'ResynchronizeSuspended' || vm.state === 'Resynchronizing')));
  // Looked at without the lock first (reads only): most passes find nothing, and write nothing.
  const seen = await rep.store.load(name);
  if (!applies(seen)) return undefined;
  const running = opts.running ?? (await rep.runningPid(name)) !== undefined;
  if (!(await detectScopeBreach(seen, { running }))) return undefined;
  const { result } = await rep.store.update(name, async (vm, ctx) => {
    if (!applies(vm)) return undefined;
    const breach = await detectScopeBreach(vm, { running });
    if (breach) await widenScope(vm, breach, ctx);
    return breach;
  });
  return result;
}

/** The scope becomes Full (a trigger that can hide a change anywhere came on top of a DirtyExtents one). */
export async function widenScope(vm: VmRecord, trigger: Trigger, ctx: UpdateContext): Promise<void> {
  if (!vm.resync || vm.resync.scope !== 'DirtyExtents') return;
  vm.resync.scope = 'Full';
  vm.resync.evidence = `${vm.resync.evidence}; then ${trigger.reason}: ${trigger.evidence}`;
  // A suspended resync compared only the dirty extents so far: it starts over.
  vm.resync.restart = true;
  await stopTracking(vm);
  ctx.emit({ id: 90002, level: 'Error', vm: vm.name, reason: trigger.reason, evidence: `${trigger.evidence}; the resynchronization compares every block (scope Full)` });
}

/**
 * Resynchronization Required: health Critical, tracking stops (every log goes), a running resync is
 * told to cancel. When the VM is off, its disks' fingerprints are taken again: the resync will make
 * the replica equal to the disks as they are now. `running`: the VM holds its disks (default: as its
 * run lock says; a VM that is starting holds the lock but has not written yet).
 */
export async function requireResync(rep: Replication, name: string, trigger: Trigger, opts: { running?: boolean } = {}): Promise<VmRecord> {
  const running = opts.running ?? (await rep.runningPid(name)) !== undefined;
  const resyncOwner = await rep.resyncPid(name);
  const now = rep.clock.now();
  const { vm } = await rep.store.update(name, async (vm, ctx) => {
    if (vm.state === 'WaitingForStartResynchronize' && vm.resync?.scope === 'DirtyExtents' && !DIRTY_EXTENT_REASONS.includes(trigger.reason)) {
      // In bitmap mode, a trigger that can hide a change anywhere (a failed dirty-map write) widens the scope.
      await widenScope(vm, trigger, ctx);
      return;
    }
    if (!TRACKING_STATES.includes(vm.state)) return;
    if (RESYNC_STATES.includes(vm.state)) {
      if (resyncOwner !== undefined) vm.control = 'cancel';
      else await discardResync(rep, vm);
    }
    enterRequired(vm, trigger, now, ctx);
    await stopTracking(vm);
    if (!running) await refreshFingerprints(vm, now);
  });
  return vm;
}

export function enterRequired(vm: VmRecord, trigger: Trigger, now: Date, ctx: UpdateContext): void {
  // Beyond Hyper-V: after a crash or a log overflow only the dirty extents are compared — unless an
  // unfinished requirement (or the initial replication) already needs everything compared.
  const dirty =
    DIRTY_EXTENT_REASONS.includes(trigger.reason) &&
    vm.state !== 'InitialReplicationInProgress' &&
    (vm.resync === null || vm.resync.scope === 'DirtyExtents');
  vm.state = 'WaitingForStartResynchronize';
  // A DirtyExtents requirement on top of one whose maps are kept: a lost map is lost extents still.
  const mapsKept = dirty && vm.resync?.mapsKept === true;
  vm.resync = { reason: trigger.reason, evidence: trigger.evidence, requiredAt: now.toISOString(), disksDone: [], restart: true, scope: dirty ? 'DirtyExtents' : 'Full', ...(mapsKept ? { mapsKept } : {}) };
  vm.retry = null;
  ctx.emit({ id: 90002, level: 'Error', vm: vm.name, reason: trigger.reason, evidence: trigger.evidence });
}

/** Drop every unfinished resync artifact of the VM (overlays, checkpoints); refused once a merge started. */
export async function discardResync(rep: Replication, vm: VmRecord): Promise<void> {
  const site = rep.site(vm);
  for (const d of vm.disks) await site.cancelResync(d.index);
}

export async function refreshFingerprints(vm: VmRecord, now: Date): Promise<void> {
  for (const d of vm.disks) {
    const ranges = d.fingerprint?.probes ?? sampleRanges(d.virtualSize).map((r) => ({ ...r, kind: 'sample' as const }));
    d.fingerprint = await takeFingerprint(d.path, ranges, d.fingerprint?.dataWriteId ?? toHex(new Uint8Array(16)), now);
  }
}

export async function cancelInPlace(rep: Replication, vm: VmRecord): Promise<void> {
  await discardResync(rep, vm);
  await stopTracking(vm);
  vm.state = 'WaitingForStartResynchronize';
  vm.control = null;
  if (vm.resync) {
    vm.resync.disksDone = [];
    vm.resync.restart = true;
    vm.resync.pausedByWindow = false;
    delete vm.resync.continuationSequence;
    delete vm.resync.compareSeconds;
  }
}
