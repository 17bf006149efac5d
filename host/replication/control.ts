import { VhdsyncError } from '../errors.js';
import { parseStartTime } from './settings.js';
import { emptyStatistics } from './statistics.js';
import { shellWord } from '../replica/vm-name.js';
import type { VmRecord } from './store.js';
import { stopTracking } from './vm-logs.js';
import type { Replication } from './replication.js';
import { cancelInPlace, enterRequired, refreshFingerprints } from './resync-required.js';

/** Suspend-, Resume- and Stop-VMReplication, the service's window pause, Reset-VMReplicationStatistics. */

export interface ResumeInput {
  resynchronize?: boolean;
  resynchronizeStartTime?: string;
  continue?: boolean;
  /** With `resynchronize`: keep the replica as it was before as one protected recovery point. */
  keepPreResyncPoint?: boolean;
}

export async function suspendReplication(rep: Replication, name: string): Promise<VmRecord> {
  const owner = await rep.resyncPid(name);
  const { vm, result: wait } = await rep.store.update(name, (vm) => {
    switch (vm.state) {
      case 'Replicating':
      case 'Error':
        vm.state = 'Suspended';
        vm.retry = null;
        return false;
      case 'Suspended':
      case 'ResynchronizeSuspended':
        return false;
      case 'Resynchronizing':
        if (owner !== undefined) {
          vm.control = 'pause';
          return true;
        }
        vm.state = 'ResynchronizeSuspended';
        return false;
      default:
        throw new VhdsyncError('STATE', `virtual machine '${name}' is ${vm.state}; only replication or a resynchronization in progress can be suspended`);
    }
  });
  return wait ? waitFor(rep, name, (v) => v.state !== 'Resynchronizing', 'the resynchronization to pause') : vm;
}

/**
 * Resume-VMReplication. Suspended/Error → Replicating. With `resynchronize` (or from Resynchronization
 * Required): start a resync now — returned as `run` for the caller to drive — or schedule it at
 * `resynchronizeStartTime` (≤ 7 days ahead). ResynchronizeSuspended (or a resync whose process died)
 * continues from its checkpoints; with `resynchronize` it starts over.
 */
export async function resumeReplication(rep: Replication, name: string, input: ResumeInput = {}): Promise<{ vm: VmRecord; run?: { restart: boolean } }> {
  const now = rep.clock.now();
  const startAt = input.resynchronizeStartTime !== undefined ? parseStartTime(input.resynchronizeStartTime, now) : undefined;
  if (startAt && !input.resynchronize) throw new VhdsyncError('USAGE', '--resynchronize-start-time needs --resynchronize');
  if (input.keepPreResyncPoint && !input.resynchronize) throw new VhdsyncError('USAGE', '--keep-pre-resync-point needs --resynchronize');
  if (input.continue && input.resynchronize) throw new VhdsyncError('USAGE', '--continue and --resynchronize cannot be used together: --continue carries on a suspended resynchronization, --resynchronize starts one');
  const owner = await rep.resyncPid(name);
  const { vm, result } = await rep.store.update(name, async (vm, ctx): Promise<{ restart: boolean } | undefined> => {
    const state = vm.state;
    if (state === 'ResynchronizeSuspended' || (state === 'Resynchronizing' && owner === undefined)) {
      if (startAt) throw new VhdsyncError('STATE', `virtual machine '${name}' has a suspended resynchronization; continue it (--continue) or start over without a start time`);
      if (input.resynchronize && vm.resync) vm.resync.keepPreResyncPoint = input.keepPreResyncPoint === true;
      return { restart: input.resynchronize === true };
    }
    if (state === 'Resynchronizing') throw new VhdsyncError('BUSY', `virtual machine '${name}' is already resynchronizing (process ${owner})`);
    if (input.continue) throw new VhdsyncError('STATE', `virtual machine '${name}' is ${state}; --continue only applies to a suspended resynchronization`);
    if (input.resynchronize) {
      if (state === 'Replicating') {
        // Hyper-V refuses Resume-VMReplication -Resynchronize on a replicating VM: it is forced by suspending first.
        throw new VhdsyncError('STATE', `virtual machine '${vm.name}' is Replicating; to force a resynchronization, suspend replication first (vhdsync suspend-replication ${shellWord(vm.name)}), then resume-replication ${shellWord(vm.name)} --resynchronize, as Hyper-V requires`);
      }
      if (state === 'Suspended' || state === 'Error') {
        // The Hyper-V team's idiom for forcing a resync: Suspend-, then Resume-VMReplication -Resynchronize.
        enterRequired(vm, { reason: 'Requested', evidence: `resynchronization requested while ${state}` }, now, ctx);
        await stopTracking(vm);
        if ((await rep.runningPid(name)) === undefined) await refreshFingerprints(vm, now);
      } else if (state !== 'WaitingForStartResynchronize') {
        throw new VhdsyncError('STATE', `virtual machine '${name}' is ${state}; ${state === 'ReadyForInitialReplication' ? 'start the initial replication first' : 'it cannot be resynchronized now'}`);
      }
      if (vm.resync) vm.resync.keepPreResyncPoint = input.keepPreResyncPoint === true;
      if (startAt) {
        vm.resynchronizeStartTime = startAt.toISOString();
        return undefined;
      }
      vm.resynchronizeStartTime = null;
      return { restart: vm.resync?.restart ?? true };
    }
    switch (state) {
      case 'Suspended':
      case 'Error':
        vm.state = 'Replicating';
        vm.retry = null;
        vm.lastError = null;
        return undefined;
      case 'Replicating':
        return undefined;
      case 'WaitingForStartResynchronize':
        throw new VhdsyncError('STATE', `Resynchronization is required for the virtual machine ${name}; resume replication with --resynchronize to start it`);
      default:
        throw new VhdsyncError('STATE', `virtual machine '${name}' is ${state}; it cannot be resumed`);
    }
  });
  return { vm, run: result };
}

/** Stop-VMReplication: cancel the resync in progress; the VM is left in Resynchronization Required. */
export async function stopReplication(rep: Replication, name: string): Promise<VmRecord> {
  const owner = await rep.resyncPid(name);
  const { vm, result: wait } = await rep.store.update(name, async (vm) => {
    if (vm.state !== 'Resynchronizing' && vm.state !== 'ResynchronizeSuspended') {
      throw new VhdsyncError('STATE', `virtual machine '${name}' is ${vm.state}; there is no resynchronization to cancel`);
    }
    if (owner !== undefined) {
      vm.control = 'cancel';
      return true;
    }
    await cancelInPlace(rep, vm);
    return false;
  });
  return wait ? waitFor(rep, name, (v) => v.state !== 'Resynchronizing', 'the resynchronization to cancel') : vm;
}

async function waitFor(rep: Replication, name: string, done: (vm: VmRecord) => boolean, what: string, timeoutMs = 120_000): Promise<VmRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const vm = await rep.store.load(name);
    if (done(vm)) return vm;
    if ((await rep.resyncPid(name)) === undefined) {
      // Its process went away without answering: act on the request here.
      const again = await rep.store.load(name);
      if (done(again)) return again;
      if (again.control === 'cancel') return stopReplication(rep, name);
      if (again.control === 'pause') return suspendReplication(rep, name);
    }
    if (Date.now() > deadline) throw new VhdsyncError('BUSY', `timed out waiting for ${what} of '${name}'`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The service asks a running automatic resync to pause because its window closed. */
export async function pauseForWindow(rep: Replication, name: string): Promise<void> {
  const owner = await rep.resyncPid(name);
  await rep.store.update(name, (vm) => {
    if (vm.state !== 'Resynchronizing' || !vm.resync) return;
    vm.resync.pausedByWindow = true;
    if (owner !== undefined) vm.control = 'pause';
    else vm.state = 'ResynchronizeSuspended';
  });
}

/** The statistics of the monitoring interval start again now (the cumulative counters stay, as Hyper-V's). */
export async function resetStatistics(rep: Replication, name: string): Promise<VmRecord> {
  const now = rep.clock.now();
  const { vm } = await rep.store.update(name, (vm) => {
    vm.statistics = emptyStatistics(now);
  });
  return vm;
}
