import { openPrimary } from '../tracking/log-files.js';
import { VhdsyncError } from '../errors.js';
import { EventLog } from '../events/event-log.js';
import { startResync, type ResyncProgress, type ResyncResult } from '../resync/resync.js';
import { tryLock } from '../pid-lock.js';
import type { LinkShape } from '../transport/memory-link.js';
import { checkFingerprint, sampleRanges } from './fingerprint.js';
import type { ReplicationState } from '../replica/states.js';
import { LocalReplicaSite } from '../replica/local-site.js';
import { isReplicaAddress } from '../transport/replica-address.js';
import { parseStartTime } from './settings.js';
import { shellWord } from '../replica/vm-name.js';
import { TaskProgress } from './task-progress.js';
import type { ResyncInfo, VmDisk, VmRecord } from './store.js';
import { detectScopeBreach } from './triggers.js';
import { dropDirtyMaps, logInit, stopTracking } from './vm-logs.js';
import type { Replication } from './replication.js';
import { cancelInPlace, discardResync, refreshFingerprints, widenScope } from './resync-required.js';

/** Initial replication and resynchronization of a VM, run in this process (the engine is host/resync). */

export interface ResyncRunOptions {
  origin?: NonNullable<ResyncInfo['origin']>;
  /** Start over instead of continuing from checkpoints. */
  restart?: boolean;
  /** Keep the replica as it was before the resync as one protected recovery point (default: as `resume` said). */
  keepPreResyncPoint?: boolean;
  /** Compare every block even when the requirement's scope is DirtyExtents (`--full`). */
  full?: boolean;
  onProgress?: (disk: VmDisk, p: ResyncProgress) => void;
  /** Polled during the run: true pauses it at the next region boundary (SIGINT in the CLI). */
  shouldPause?: () => boolean;
  /** The link to a local replica directory, simulated (as `vhdsync resync --link`); default unlimited. */
  link?: LinkShape;
  /** Where the replica disks are made instead of the VM's replica site (offline initial replication's media). */
  site?: LocalReplicaSite;
}

export interface InitialReplicationOptions {
  /** The replica was lost: build a new one (from any state of a replicating VM). */
  again?: boolean;
  /** Replica disks already at the replica site are the initial copy, made equal by a resync. */
  useExistingReplica?: boolean;
}

export interface ResyncRunOutcome {
  result: 'completed' | 'paused' | 'cancelled';
  vm: VmRecord;
  disks: { index: number; path: string; result: ResyncResult }[];
}

/** How often a running resync looks for a pause or cancel request from another process. */
const CONTROL_POLL_MS = 100;

/**
 * Start-VMInitialReplication: the replica disks are created empty and filled by the resync engine.
 * `again`: the replica was lost (a resync refuses to re-seed it, host/replica/local-site.ts requireReplica); the
 * user asks explicitly for a new one, from any state of a replicating VM.
 */
export async function startInitialReplication(rep: Replication, name: string, opts: ResyncRunOptions & InitialReplicationOptions = {}): Promise<ResyncRunOutcome> {
  const owner = await rep.resyncPid(name);
  const againFrom: ReplicationState[] = ['Replicating', 'Suspended', 'Error', 'WaitingForStartResynchronize', 'ResynchronizeSuspended', 'Resynchronizing'];
  const again = opts.again === true;
  const current = await rep.store.load(name);
  if (current.offlineInitialReplication && !again) {
    const o = current.offlineInitialReplication;
    throw new VhdsyncError(
      'STATE',
      o.exportedAt
        ? `virtual machine '${current.name}' was exported for offline initial replication to ${o.path} at ${o.exportedAt}; import it at the replica site (vhdsync import-initial-replication ${shellWord(current.name)} --path DIR), or start over with --again`
        : `virtual machine '${current.name}' has an offline initial replication to ${o.path} under way; run start-initial-replication ${shellWord(current.name)} --destination-path ${shellWord(o.path)} again to finish it`,
    );
  }
  const fresh = current.state === 'ReadyForInitialReplication' || (again && againFrom.includes(current.state));
  if (fresh) {
    // A replica disk already at the replica site is never taken silently as the initial copy.
    const there = await rep.site(current).existingDisks();
    if (there.length > 0 && !opts.useExistingReplica) {
      throw new VhdsyncError(
        'EXISTS',
        `${there[0]}: a replica disk is already there; to use ${there.length > 1 ? 'them' : 'it'} as the initial copy add --use-existing-replica (compared block by block: a resynchronization, only the differences are sent), or remove ${there.length > 1 ? 'them' : 'it'}`,
      );
    }
    if (opts.useExistingReplica) return initialFromExisting(rep, name, current, opts);
  } else if (opts.useExistingReplica) {
    throw new VhdsyncError('STATE', `virtual machine '${current.name}' is ${current.state}; --use-existing-replica starts an initial replication (ReadyForInitialReplication, or with --again)`);
  }
  await rep.store.update(name, async (vm) => {
    if (vm.state === 'InitialReplicationInProgress' && owner === undefined) return; // its process died: continue
    if (again && againFrom.includes(vm.state)) {
      if (owner !== undefined) throw new VhdsyncError('BUSY', `a resynchronization of '${name}' is already running (process ${owner})`);
      await stopTracking(vm); // the replica starts from nothing: no log of the old one is of use
      vm.state = 'InitialReplicationInProgress';
      vm.initialReplicationSize = 0;
      vm.offlineInitialReplication = null;
      vm.resync = null;
      return;
    }
    if (vm.state !== 'ReadyForInitialReplication') {
      throw new VhdsyncError('STATE', `virtual machine '${name}' is ${vm.state}; initial replication ${vm.state === 'InitialReplicationInProgress' ? `is already running (process ${owner})` : 'is done'}`);
    }
    vm.state = 'InitialReplicationInProgress';
    vm.initialReplicationSize = 0;
    vm.initialReplicationStartTime = null;
    vm.resync = null;
  });
  return runResync(rep, name, { ...opts, origin: 'manual' });
}

/**
 * `--use-existing-replica`: the disks at the replica site (a copy placed by hand, a restored backup)
 * are the initial copy, made equal to the primaries by a resynchronization — every block compared,
 * only the differences sent, events 29242/29244 — never taken as they are.
 */
async function initialFromExisting(rep: Replication, name: string, vm: VmRecord, opts: ResyncRunOptions): Promise<ResyncRunOutcome> {
  await rep.site(vm).requireReplica();
  const now = rep.clock.now();
  await rep.store.update(name, async (v) => {
    if (v.state !== vm.state) throw new VhdsyncError('STATE', `virtual machine '${v.name}' is ${v.state} now; nothing changed`);
    await stopTracking(v);
    v.state = 'Resynchronizing';
    v.initialReplicationStartTime = null;
    v.resync = {
      reason: 'Requested',
      evidence: 'initial replication from the replica disks already at the replica site (--use-existing-replica): they are compared block by block',
      requiredAt: now.toISOString(),
      disksDone: [],
      restart: true,
      scope: 'Full',
    };
  });
  return runResync(rep, name, { ...opts, restart: true, origin: 'manual' });
}

/** `--initial-replication-start-time`: the service starts the initial replication then (at most 7 days ahead). */
export async function scheduleInitialReplication(rep: Replication, name: string, at: string): Promise<VmRecord> {
  const when = parseStartTime(at, rep.clock.now(), '--initial-replication-start-time');
  const { vm } = await rep.store.update(name, (v) => {
    if (v.state !== 'ReadyForInitialReplication') throw new VhdsyncError('STATE', `virtual machine '${v.name}' is ${v.state}; only an initial replication not yet started can be scheduled`);
    v.initialReplicationStartTime = when.toISOString();
  });
  return vm;
}

/**
 * Run the VM's resync (or initial replication) in this process, disk after disk, until it completes,
 * is paused (ResynchronizeSuspended) or cancelled (back to Resynchronization Required).
 */
export async function runResync(rep: Replication, name: string, opts: ResyncRunOptions = {}): Promise<ResyncRunOutcome> {
  const lock = await tryLock(rep.store.resyncLockPath(name));
  if (!('release' in lock)) throw new VhdsyncError('BUSY', `a resynchronization of '${name}' is already running (process ${lock.holder})`);
  try {
    return await runResyncLocked(rep, name, opts);
  } finally {
    await lock.release();
  }
}

async function runResyncLocked(rep: Replication, name: string, opts: ResyncRunOptions): Promise<ResyncRunOutcome> {
  const now = rep.clock.now();
  const vmOff = (await rep.runningPid(name)) === undefined;
  const { vm: started, result: fresh } = await rep.store.update(name, async (vm, ctx) => {
    const initial = vm.state === 'InitialReplicationInProgress';
    const ok: ReplicationState[] = ['WaitingForStartResynchronize', 'ResynchronizeSuspended', 'Resynchronizing', 'InitialReplicationInProgress'];
    if (!ok.includes(vm.state)) throw new VhdsyncError('STATE', `virtual machine '${name}' is ${vm.state}; there is no resynchronization to run`);
    // The scope is decided now, on the disks as they are now: a change behind the tracker since the
    // requirement (or the pause) was entered widens it to Full — before the fingerprints are retaken.
    if (!initial && opts.full !== true) {
      const breach = await detectScopeBreach(vm, { running: !vmOff });
      if (breach) await widenScope(vm, breach, ctx);
    }
    let restart = opts.restart === true || vm.state === 'WaitingForStartResynchronize' || vm.resync?.restart === true;
    if (await followResize(vm)) restart = true;
    if (vmOff) {
      // The compare sees the disks as they are now. A disk changed while a resync was suspended may
      // have changed behind its checkpoint: that one starts over.
      if (!restart && !initial) {
        for (const d of vm.disks) if (d.fingerprint && (await checkFingerprint(d.path, d.fingerprint)).kind !== 'unchanged') restart = true;
      }
      await refreshFingerprints(vm, now);
    }
    if (!vm.resync || restart) {
      vm.resync = {
        reason: vm.resync?.reason ?? 'Requested',
        evidence: vm.resync?.evidence ?? (initial ? 'initial replication' : 'requested'),
        requiredAt: vm.resync?.requiredAt ?? now.toISOString(),
        disksDone: [],
        keepPreResyncPoint: vm.resync?.keepPreResyncPoint,
        scope: !initial && opts.full !== true && vm.resync?.scope === 'DirtyExtents' ? 'DirtyExtents' : 'Full',
        scopeBytes: vm.resync?.scopeBytes,
        ...(vm.resync?.mapsKept ? { mapsKept: true } : {}),
      };
      if (restart) await stopTracking(vm);
    }
    if (opts.full === true && vm.resync.scope === 'DirtyExtents') {
      vm.resync.scope = 'Full';
      await dropDirtyMaps(vm);
    }
    vm.resync.restart = false;
    if (opts.keepPreResyncPoint !== undefined) vm.resync.keepPreResyncPoint = opts.keepPreResyncPoint;
    vm.resync.origin = opts.origin ?? vm.resync.origin ?? 'manual';
    vm.resync.startedAt ??= now.toISOString();
    vm.resync.pausedByWindow = false;
    vm.resync.continuationSequence ??= vm.nextSequence++;
    vm.resynchronizeStartTime = null;
    vm.control = null;
    vm.lastError = null;
    if (!initial) vm.state = 'Resynchronizing';
    return restart;
  });
  const initial = started.state === 'InitialReplicationInProgress';
  const site = opts.site ?? rep.site(started);
  const network = !opts.site && isReplicaAddress(started.replica) ? await rep.dialOptions(started) : undefined;
  const seq = started.resync!.continuationSequence!;
  const results: ResyncRunOutcome['disks'] = [];
  const progress = new TaskProgress(rep.store.vmDir(name), started.resync!.startedAt!);
  let stopped: 'pause' | 'cancel' | undefined;
  let wanted: 'pause' | 'cancel' | undefined;
  try {
    if (initial) await site.createEmptyDisks();
    else await site.requireReplica();
    for (const d of started.disks) {
      if (started.resync!.disksDone.includes(d.index)) continue;
      // A request that came while the previous disk ran stops the run before the next disk starts.
      const now = await rep.store.load(name);
      const asked = stopRequested(now, opts);
      if (asked) {
        stopped = asked;
        break;
      }
      // A merge past its point of no return (killed in it) is finished, never started over: a fresh
      // compare follows it anyway (the next resync of this VM, or the replica's own rule).
      const phase = fresh ? await site.resyncPhase(d.index) : null;
      const handle = startResync({
        primary: d.path,
        replica: opts.site ? opts.site.diskPath(d.index) : d.replicaPath,
        vm: started.name,
        restart: fresh && phase !== 'merging' && phase !== 'merged',
        keepPreResyncPoint: !initial && started.resync!.keepPreResyncPoint === true,
        ...(network ? { network } : { link: opts.link ?? rep.link }),
        // An initial replication is not a resync: its 29242/29244 and Resynchronized Bytes stay private.
        events: initial ? new EventLog() : rep.events,
        counters: initial ? undefined : rep.store.counters,
        tracking: { log: logInit(started, d, 0), next: logInit(started, d, seq) },
        priorCompareSeconds: started.resync!.compareSeconds?.[d.index] ?? 0,
        scope: !initial && started.resync!.scope === 'DirtyExtents' ? 'auto' : 'full',
        onProgress: (p) => {
          opts.onProgress?.(d, p);
          progress.note(d.index, p);
          checkControl(); // at every region boundary, besides the timer
        },
      });
      let checking = false;
      const checkControl = () => {
        if (checking) return;
        checking = true;
        void rep.store
          .tryLoad(name)
          .then((v) => {
            const want = stopRequested(v, opts);
            if (want) {
              wanted ??= want;
              if (want === 'cancel') handle.cancel();
              else handle.pause();
            }
          }, () => undefined)
          .finally(() => (checking = false));
      };
      const poll = setInterval(checkControl, CONTROL_POLL_MS);
      let result: ResyncResult;
      try {
        result = await handle.done;
      } finally {
        clearInterval(poll);
      }
      results.push({ index: d.index, path: d.path, result });
      const prior = started.resync!.compareSeconds?.[d.index] ?? 0;
      if (result.result === 'paused') {
        // The next session's 29244 counts this one's time too (a cancel starts over: cancelInPlace drops it).
        await rep.store.update(name, (vm) => {
          if (vm.resync) vm.resync.compareSeconds = { ...vm.resync.compareSeconds, [d.index]: prior + result.phases.compare };
        });
      }
      if (result.result !== 'completed') {
        // Only a run that really stopped counts: a request that came after the last region is moot.
        stopped = wanted ?? 'pause';
        break;
      }
      await rep.store.update(name, (vm) => {
        if (vm.resync && !vm.resync.disksDone.includes(d.index)) vm.resync.disksDone.push(d.index);
      });
    }
  } catch (e) {
    await rep.store.update(name, (vm) => {
      vm.lastError = (e as Error).message;
      if (vm.state === 'Resynchronizing') vm.state = 'WaitingForStartResynchronize';
      if (vm.resync && (e as VhdsyncError).code === 'CHECKPOINT') vm.resync.restart = true;
    }).catch(() => undefined);
    throw e;
  }
  const running = (await rep.runningPid(name)) !== undefined;
  const end = rep.clock.now();
  await progress.flush();
  const { vm, result } = await rep.store.update(name, async (vm): Promise<ResyncRunOutcome['result']> => {
    if (initial) vm.initialReplicationSize = (vm.initialReplicationSize ?? 0) + results.reduce((t, r) => t + r.result.bytesSent, 0);
    // A trigger that fired meanwhile wins; a cancel or pause that came after the last merge does not.
    const required = vm.state === 'WaitingForStartResynchronize';
    const cancelled = required || (stopped !== undefined && vm.control === 'cancel');
    if (stopped === undefined && !required && (vm.state === 'Resynchronizing' || vm.state === 'InitialReplicationInProgress')) {
      const keep = vm.resync?.keepPreResyncPoint === true;
      await site.rebase(seq - 1, keep ? { preResyncPointTime: vm.lastReplicationTime ?? vm.resync?.startedAt ?? end.toISOString() } : {});
      vm.lastShippedSequence = seq - 1;
      vm.resync = null;
      vm.control = null;
      vm.retry = null;
      if (opts.site && vm.offlineInitialReplication) {
        // Exported to removable media: replication starts once the replica site has imported it.
        vm.offlineInitialReplication = { ...vm.offlineInitialReplication, sequence: seq, exportedAt: end.toISOString() };
      } else {
        vm.state = 'Replicating';
        vm.lastReplicationTime = end.toISOString();
        vm.lastCycleAt = end.toISOString();
      }
      if (!running) await refreshFingerprints(vm, end);
      await dropDirtyMaps(vm);
      return 'completed';
    }
    if (cancelled) {
      if (vm.state !== 'WaitingForStartResynchronize') await cancelInPlace(rep, vm);
      else {
        // A trigger fired during the resync: its artifacts go; the requirement stays.
        await discardResync(rep, vm);
        await stopTracking(vm);
        vm.control = null;
      }
      return 'cancelled';
    }
    if (vm.state === 'Resynchronizing') vm.state = 'ResynchronizeSuspended';
    vm.control = null;
    return 'paused';
  });
  return { result, vm, disks: results };
}

/**
 * Whether a running resync is asked to stop: a pause or cancel request in the VM's record (from
 * suspend-/stop-replication in another process), a requirement that came meanwhile (cancel), or the
 * caller's own pause (SIGINT in the CLI). Asked before each disk and at every region boundary.
 */
function stopRequested(vm: VmRecord | undefined, opts: ResyncRunOptions): 'pause' | 'cancel' | undefined {
  return vm?.control ?? (vm?.state === 'WaitingForStartResynchronize' ? 'cancel' : undefined) ?? (opts.shouldPause?.() ? 'pause' : undefined);
}

/**
 * A disk resized since the record was written (on both sides, by another tool): the record follows the
 * primary, else every write past the old end would invalidate a log and the VM would loop in
 * Resynchronization Required. The resync's preflight still refuses a replica of another size. The
 * fingerprint samples the new size. True when a size changed (the resync then starts over).
 */
async function followResize(vm: VmRecord): Promise<boolean> {
  let changed = false;
  for (const d of vm.disks) {
    const disk = await openPrimary(d.path) // the VM may be running: between two of its batches;
    const size = disk.virtualSize;
    await disk.close();
    if (size === d.virtualSize) continue;
    d.virtualSize = size;
    // New sample points; their digests are taken by refreshFingerprints below (an empty one never matches).
    if (d.fingerprint) d.fingerprint.probes = sampleRanges(size).map((r) => ({ ...r, kind: 'sample' as const, digest: '' }));
    changed = true;
  }
  return changed;
}
