import { randomUUID } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, resolve } from 'node:path';
import { openDisk } from '../disk/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { EventLog } from '../events/event-log.js';
import { startResync, type ResyncProgress, type ResyncResult } from '../resync/resync.js';
import { lockHolder, tryLock } from '../pid-lock.js';
import type { LinkShape } from '../transport/memory-link.js';
import { idHex } from '../tracking/log.js';
import { checkFingerprint, sampleRanges, takeFingerprint } from './fingerprint.js';
import { replicationHealth } from './health.js';
import { DIRTY_EXTENT_REASONS, RESYNC_STATES, TRACKING_STATES, type ReplicationHealth, type ReplicationState } from './names.js';
import { LocalReplicaSite, type ReplicaDiskSpec, type ReplicaSite } from '../replica/local-site.js';
import { RemoteReplicaSite } from '../replica/remote-site.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { anyNetworkSetting, givenNetwork, loadNetwork, type NetworkSettings } from '../transport/network-settings.js';
import type { DialOptions } from '../transport/tls-connect.js';
import { systemClock, type Clock } from './schedule.js';
import { applySettings, defaultSettings, parseStartTime, type SettingsChange } from './settings.js';
import { averageLatencyMs, averageSize, emptyStatistics } from './statistics.js';
import { shellWord, vmFolderName } from '../replica/vm-name.js';
import { TaskProgress } from './task-progress.js';
import { checkVmName, newRecord, VmStore, type ResyncInfo, type UpdateContext, type VmDisk, type VmRecord } from './store.js';
import { detectPrimaryTriggers, detectScopeBreach, type Trigger } from './triggers.js';
import { dropDirtyMaps, logInit, pendingBytes, scopeBytesNow, stopTracking } from './vm-logs.js';

export interface EnableInput {
  name: string;
  disks: string[];
  /** A local directory, or a replica server: tls://HOST:PORT[/NAME] (NAME defaults to the VM's name). */
  replica: string;
  /** Certificates and bandwidth limit for a replica server. */
  network?: NetworkSettings;
  settings?: SettingsChange;
  /** `--initial-replication-start-time`: the service starts the initial replication then (≤ 7 days ahead). */
  initialReplicationStartTime?: string;
}

export interface ResumeInput {
  resynchronize?: boolean;
  resynchronizeStartTime?: string;
  continue?: boolean;
  /** With `resynchronize`: keep the replica as it was before as one protected recovery point. */
  keepPreResyncPoint?: boolean;
}

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
 * A VM's replication: the operations behind the cmdlets, the state machine and the transitions that
 * evidence forces. Every change goes through the store's lock and is written atomically.
 *
 *   ReadyForInitialReplication → InitialReplicationInProgress → Replicating ⇄ Suspended
 *   Replicating | Suspended | Error | (a resync) → WaitingForStartResynchronize   (a trigger; tracking stops)
 *   WaitingForStartResynchronize → Resynchronizing ⇄ ResynchronizeSuspended → Replicating
 *   Resynchronizing | ResynchronizeSuspended → WaitingForStartResynchronize     (stop-replication: cancel)
 */
export class Replication {
  readonly store: VmStore;
  readonly clock: Clock;

  /** The simulated link to local replica directories when a run names none (tests, demos). */
  readonly link: LinkShape | undefined;

  constructor(home: string, opts: { clock?: Clock; link?: LinkShape } = {}) {
    this.store = new VmStore(home);
    this.clock = opts.clock ?? systemClock;
    this.link = opts.link;
  }

  get events(): EventLog {
    return this.store.events;
  }

  /** Where the VM's replica is: a local directory, or a folder on a replica server. */
  site(vm: VmRecord): ReplicaSite {
    if (isReplicaAddress(vm.replica)) {
      const address = parseSiteAddress(vm.replica, vmFolderName(vm.name));
      return new RemoteReplicaSite(address, { vm: address.target, vmId: vm.vmId, disks: replicaDisks(vm) }, () => this.dialOptions(vm));
    }
    return this.localSite(vm);
  }

  /**
   * The VM's replica directory on this machine, for what runs on the replica's files (failover,
   * recovery points, reverse replication). `what` names the operation refused for a replica server.
   */
  localSite(vm: VmRecord, what = 'this operation'): LocalReplicaSite {
    if (isReplicaAddress(vm.replica)) {
      throw new VhdsyncError('UNSUPPORTED', `virtual machine '${vm.name}' is replicated to the replica server ${vm.replica}: ${what} works on a replica directory on this machine, not through a replica server yet`);
    }
    // A reversed relationship's replica disks stay where the old primary disks are.
    const disks = replicaDisks(vm).map((spec, i) => {
      const at = vm.disks[i].replicaPath;
      return at !== LocalReplicaSite.diskPathFor(vm.replica, vmFolderName(vm.name), vm.disks[i].path) ? { ...spec, path: at } : spec;
    });
    return new LocalReplicaSite(vm.replica, vmFolderName(vm.name), vm.vmId, disks, vm.name);
  }

  /** How to reach the VM's replica server: its certificates (loaded now) and bandwidth limit. */
  async dialOptions(vm: VmRecord): Promise<DialOptions> {
    return loadNetwork(vm.network ?? {}, `virtual machine '${vm.name}' (replica server ${vm.replica})`);
  }

  /** The pid of the live process running the VM (workload / write), if any. */
  runningPid(name: string): Promise<number | undefined> {
    return lockHolder(this.store.runLockPath(name));
  }

  /** The pid of the live process running the VM's resync, if any. */
  resyncPid(name: string): Promise<number | undefined> {
    return lockHolder(this.store.resyncLockPath(name));
  }

  // ---- Enable-VMReplication ----

  async enable(input: EnableInput): Promise<VmRecord> {
    const name = checkVmName(input.name);
    const now = this.clock.now();
    if (input.disks.length === 0) throw new VhdsyncError('USAGE', `enable-replication ${name}: give at least one --disk`);
    const irTime = input.initialReplicationStartTime === undefined ? undefined : parseStartTime(input.initialReplicationStartTime, now, '--initial-replication-start-time').toISOString();
    const settings = applySettings(defaultSettings(), input.settings ?? {});
    const remote = isReplicaAddress(input.replica);
    const replica = remote ? parseSiteAddress(input.replica, vmFolderName(name)).url : resolve(input.replica);
    const given = givenNetwork(input.network ?? {});
    if (!remote && anyNetworkSetting(given)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(given)} applies to a replica server (--replica tls://HOST:PORT/NAME); ${input.replica} is a local directory`);
    const network = remote ? given : undefined;
    // Certificates and rates are checked now: one line here rather than a failing cycle later.
    if (network) await loadNetwork(network, `enable-replication ${name} --replica ${replica}`);
    const disks: VmDisk[] = [];
    const seen = new Map<string, string>();
    for (const [index, given] of input.disks.entries()) {
      const path = await realpath(resolve(given)).catch((e) => {
        throw ioError(given, e);
      });
      const file = basename(path);
      if (seen.has(path)) throw new VhdsyncError('USAGE', `${given}: the same disk is given twice`);
      if ([...seen.values()].includes(file)) throw new VhdsyncError('USAGE', `${given}: another disk of ${name} has the file name ${file}; replica disks are named after their primaries, so names must differ`);
      seen.set(path, file);
      const disk = await openDisk(path, { readOnly: true });
      const info = { format: disk.format, type: disk.type, virtualSize: disk.virtualSize, sectorSize: disk.sectorSize };
      await disk.close();
      const replicaPath = remote ? `${replica}/${file}` : LocalReplicaSite.diskPathFor(replica, vmFolderName(name), path);
      if (replicaPath === path) throw new VhdsyncError('USAGE', `${given}: the replica of this disk would be the disk itself; choose another --replica directory`);
      const dataWriteId = idHex(crypto.getRandomValues(new Uint8Array(16)));
      const fingerprint = await takeFingerprint(path, sampleRanges(info.virtualSize).map((r) => ({ ...r, kind: 'sample' as const })), dataWriteId, now);
      disks.push({ index, path, diskId: randomUUID(), ...info, replicaPath, fingerprint });
    }
    const vm = newRecord({ name, vmId: randomUUID(), replica, disks, settings, ...(network ? { network } : {}) }, now);
    if (irTime) vm.initialReplicationStartTime = irTime;
    // A replica server is asked now whether it takes this VM (Hyper-V's Enable-VMReplication checks
    // the connection too): a wrong address, certificate or a folder of another VM is one line here.
    if (remote) await this.site(vm).lastApplied();
    await this.store.create(vm, (others) => {
      for (const o of others) {
        for (const d of o.disks) {
          if (disks.some((x) => x.path === d.path)) throw new VhdsyncError('BUSY', `${d.path}: this disk is already replicated by virtual machine '${o.name}'`);
          if (disks.some((x) => x.replicaPath === d.path || x.path === d.replicaPath)) {
            throw new VhdsyncError('BUSY', `${d.path}: this disk is a primary or replica of virtual machine '${o.name}'`);
          }
        }
      }
    });
    await this.events.emit({ id: 90001, level: 'Information', vm: name, from: 'Disabled', to: vm.state });
    return vm;
  }

  /**
   * Remove-VMReplication. Returns what could not be cleaned up: a replica server that cannot be reached
   * does not keep a VM from being removed (the server may be gone for good); its unfinished resync files
   * then stay under the server's root.
   */
  async remove(name: string): Promise<{ warnings: string[] }> {
    const vm = await this.store.load(name);
    const busy = (await this.runningPid(name)) ?? (await this.resyncPid(name));
    if (busy) throw new VhdsyncError('BUSY', `virtual machine '${name}' is in use by process ${busy}; stop it first`);
    const warnings: string[] = [];
    if (RESYNC_STATES.includes(vm.state)) {
      await this.discardResync(vm).catch((e: VhdsyncError) => {
        if (!isReplicaAddress(vm.replica) || (e.code !== 'LINK' && e.code !== 'AUTH')) throw e;
        warnings.push(`the unfinished resynchronization on ${vm.replica} was left there: ${e.message}`);
      });
    }
    await stopTracking(vm);
    await dropDirtyMaps(vm, { activityLogs: true });
    await this.store.remove(name);
    await this.events.emit({ id: 90001, level: 'Information', vm: vm.name, from: vm.state, to: 'Disabled', ...(warnings.length ? { warnings } : {}) });
    return { warnings };
  }

  // ---- Get / Set ----

  async get(name: string): Promise<VmRecord> {
    return this.store.load(name);
  }

  async list(): Promise<VmRecord[]> {
    return this.store.list();
  }

  health(vm: VmRecord): { health: ReplicationHealth; details: string[] } {
    return replicationHealth(vm, this.clock.now());
  }

  /**
   * Set-VMReplication. `network` changes what a VM replicated to a replica server connects with: its
   * certificate files (checked now) and bandwidth limit (`unlimited` removes it).
   */
  async set(name: string, change: SettingsChange, network: NetworkSettings = {}): Promise<VmRecord> {
    const given = givenNetwork(network);
    let next: NetworkSettings | undefined;
    if (anyNetworkSetting(given)) {
      const vm = await this.store.load(name);
      if (!isReplicaAddress(vm.replica)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(given)} applies to a VM replicated to a replica server; '${name}' replicates to the directory ${vm.replica}`);
      next = { ...vm.network, ...given };
      await loadNetwork(next, `set-replication ${name}`);
    }
    const { vm } = await this.store.update(name, (vm) => {
      vm.settings = applySettings(vm.settings, change);
      if (next) vm.network = next;
    });
    return vm;
  }

  // ---- Triggers ----

  /** Look at the evidence now; a trigger moves the VM to Resynchronization Required. */
  async evaluate(name: string): Promise<Trigger | undefined> {
    const vm = await this.store.load(name);
    const running = (await this.runningPid(name)) !== undefined;
    if (TRACKING_STATES.includes(vm.state)) {
      const trigger = await detectPrimaryTriggers(vm, { running });
      if (trigger) {
        await this.requireResync(name, trigger);
        return trigger;
      }
    }
    return this.checkScope(name, { running });
  }

  /**
   * A DirtyExtents requirement (or suspended resync) whose disks changed behind the tracker since its
   * extents were collected — modified while off, replaced, resized, a dirty map lost — compares every
   * block from now on (triggers.ts detectScopeBreach). Checked under the state lock, when nobody runs
   * the resync. `running`: the VM holds its disks (default: as its run lock says).
   */
  async checkScope(name: string, opts: { running?: boolean } = {}): Promise<Trigger | undefined> {
    const owner = await this.resyncPid(name);
    const applies = (vm: VmRecord) =>
      vm.resync?.scope === 'DirtyExtents' && (vm.state === 'WaitingForStartResynchronize' || (owner === undefined && (vm.state === 'ResynchronizeSuspended' || vm.state === 'Resynchronizing')));
    // Looked at without the lock first (reads only): most passes find nothing, and write nothing.
    const seen = await this.store.load(name);
    if (!applies(seen)) return undefined;
    const running = opts.running ?? (await this.runningPid(name)) !== undefined;
    if (!(await detectScopeBreach(seen, { running }))) return undefined;
    const { result } = await this.store.update(name, async (vm, ctx) => {
      if (!applies(vm)) return undefined;
      const breach = await detectScopeBreach(vm, { running });
      if (breach) await this.widenScope(vm, breach, ctx);
      return breach;
    });
    return result;
  }

  /** The scope becomes Full (a trigger that can hide a change anywhere came on top of a DirtyExtents one). */
  private async widenScope(vm: VmRecord, trigger: Trigger, ctx: UpdateContext): Promise<void> {
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
  async requireResync(name: string, trigger: Trigger, opts: { running?: boolean } = {}): Promise<VmRecord> {
    const running = opts.running ?? (await this.runningPid(name)) !== undefined;
    const resyncOwner = await this.resyncPid(name);
    const now = this.clock.now();
    const { vm } = await this.store.update(name, async (vm, ctx) => {
      if (vm.state === 'WaitingForStartResynchronize' && vm.resync?.scope === 'DirtyExtents' && !DIRTY_EXTENT_REASONS.includes(trigger.reason)) {
        // In bitmap mode, a trigger that can hide a change anywhere (a failed dirty-map write) widens the scope.
        await this.widenScope(vm, trigger, ctx);
        return;
      }
      if (!TRACKING_STATES.includes(vm.state)) return;
      if (RESYNC_STATES.includes(vm.state)) {
        if (resyncOwner !== undefined) vm.control = 'cancel';
        else await this.discardResync(vm);
      }
      this.enterRequired(vm, trigger, now, ctx);
      await stopTracking(vm);
      if (!running) await this.refreshFingerprints(vm, now);
    });
    return vm;
  }

  private enterRequired(vm: VmRecord, trigger: Trigger, now: Date, ctx: UpdateContext): void {
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
  private async discardResync(vm: VmRecord): Promise<void> {
    const site = this.site(vm);
    for (const d of vm.disks) await site.cancelResync(d.index);
  }

  async refreshFingerprints(vm: VmRecord, now: Date): Promise<void> {
    for (const d of vm.disks) {
      const ranges = d.fingerprint?.probes ?? sampleRanges(d.virtualSize).map((r) => ({ ...r, kind: 'sample' as const }));
      d.fingerprint = await takeFingerprint(d.path, ranges, d.fingerprint?.dataWriteId ?? idHex(new Uint8Array(16)), now);
    }
  }

  // ---- Suspend / Resume / Stop ----

  async suspend(name: string): Promise<VmRecord> {
    const owner = await this.resyncPid(name);
    const { vm, result: wait } = await this.store.update(name, (vm) => {
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
    return wait ? this.waitFor(name, (v) => v.state !== 'Resynchronizing', 'the resynchronization to pause') : vm;
  }

  /**
   * Resume-VMReplication. Suspended/Error → Replicating. With `resynchronize` (or from Resynchronization
   * Required): start a resync now — returned as `run` for the caller to drive — or schedule it at
   * `resynchronizeStartTime` (≤ 7 days ahead). ResynchronizeSuspended (or a resync whose process died)
   * continues from its checkpoints; with `resynchronize` it starts over.
   */
  async resume(name: string, input: ResumeInput = {}): Promise<{ vm: VmRecord; run?: { restart: boolean } }> {
    const now = this.clock.now();
    const startAt = input.resynchronizeStartTime !== undefined ? parseStartTime(input.resynchronizeStartTime, now) : undefined;
    if (startAt && !input.resynchronize) throw new VhdsyncError('USAGE', '--resynchronize-start-time needs --resynchronize');
    if (input.keepPreResyncPoint && !input.resynchronize) throw new VhdsyncError('USAGE', '--keep-pre-resync-point needs --resynchronize');
    if (input.continue && input.resynchronize) throw new VhdsyncError('USAGE', '--continue and --resynchronize cannot be used together: --continue carries on a suspended resynchronization, --resynchronize starts one');
    const owner = await this.resyncPid(name);
    const { vm, result } = await this.store.update(name, async (vm, ctx): Promise<{ restart: boolean } | undefined> => {
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
          this.enterRequired(vm, { reason: 'Requested', evidence: `resynchronization requested while ${state}` }, now, ctx);
          await stopTracking(vm);
          if ((await this.runningPid(name)) === undefined) await this.refreshFingerprints(vm, now);
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
  async stop(name: string): Promise<VmRecord> {
    const owner = await this.resyncPid(name);
    const { vm, result: wait } = await this.store.update(name, async (vm) => {
      if (vm.state !== 'Resynchronizing' && vm.state !== 'ResynchronizeSuspended') {
        throw new VhdsyncError('STATE', `virtual machine '${name}' is ${vm.state}; there is no resynchronization to cancel`);
      }
      if (owner !== undefined) {
        vm.control = 'cancel';
        return true;
      }
      await this.cancelInPlace(vm);
      return false;
    });
    return wait ? this.waitFor(name, (v) => v.state !== 'Resynchronizing', 'the resynchronization to cancel') : vm;
  }

  private async cancelInPlace(vm: VmRecord): Promise<void> {
    await this.discardResync(vm);
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

  private async waitFor(name: string, done: (vm: VmRecord) => boolean, what: string, timeoutMs = 120_000): Promise<VmRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const vm = await this.store.load(name);
      if (done(vm)) return vm;
      if ((await this.resyncPid(name)) === undefined) {
        // Its process went away without answering: act on the request here.
        const again = await this.store.load(name);
        if (done(again)) return again;
        if (again.control === 'cancel') return this.stop(name);
        if (again.control === 'pause') return this.suspend(name);
      }
      if (Date.now() > deadline) throw new VhdsyncError('BUSY', `timed out waiting for ${what} of '${name}'`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  // ---- Initial replication and resynchronization (the engine is host/resync) ----

  /**
   * Start-VMInitialReplication: the replica disks are created empty and filled by the resync engine.
   * `again`: the replica was lost (a resync refuses to re-seed it, host/replica/local-site.ts requireReplica); the
   * user asks explicitly for a new one, from any state of a replicating VM.
   */
  async startInitialReplication(name: string, opts: ResyncRunOptions & InitialReplicationOptions = {}): Promise<ResyncRunOutcome> {
    const owner = await this.resyncPid(name);
    const againFrom: ReplicationState[] = ['Replicating', 'Suspended', 'Error', 'WaitingForStartResynchronize', 'ResynchronizeSuspended', 'Resynchronizing'];
    const again = opts.again === true;
    const current = await this.store.load(name);
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
      const there = await this.site(current).existingDisks();
      if (there.length > 0 && !opts.useExistingReplica) {
        throw new VhdsyncError(
          'EXISTS',
          `${there[0]}: a replica disk is already there; to use ${there.length > 1 ? 'them' : 'it'} as the initial copy add --use-existing-replica (compared block by block: a resynchronization, only the differences are sent), or remove ${there.length > 1 ? 'them' : 'it'}`,
        );
      }
      if (opts.useExistingReplica) return this.initialFromExisting(name, current, opts);
    } else if (opts.useExistingReplica) {
      throw new VhdsyncError('STATE', `virtual machine '${current.name}' is ${current.state}; --use-existing-replica starts an initial replication (ReadyForInitialReplication, or with --again)`);
    }
    await this.store.update(name, async (vm) => {
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
    return this.runResync(name, { ...opts, origin: 'manual' });
  }

  /**
   * `--use-existing-replica`: the disks at the replica site (a copy placed by hand, a restored backup)
   * are the initial copy, made equal to the primaries by a resynchronization — every block compared,
   * only the differences sent, events 29242/29244 — never taken as they are.
   */
  private async initialFromExisting(name: string, vm: VmRecord, opts: ResyncRunOptions): Promise<ResyncRunOutcome> {
    await this.site(vm).requireReplica();
    const now = this.clock.now();
    await this.store.update(name, async (v) => {
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
    return this.runResync(name, { ...opts, restart: true, origin: 'manual' });
  }

  /** `--initial-replication-start-time`: the service starts the initial replication then (at most 7 days ahead). */
  async scheduleInitialReplication(name: string, at: string): Promise<VmRecord> {
    const when = parseStartTime(at, this.clock.now(), '--initial-replication-start-time');
    const { vm } = await this.store.update(name, (v) => {
      if (v.state !== 'ReadyForInitialReplication') throw new VhdsyncError('STATE', `virtual machine '${v.name}' is ${v.state}; only an initial replication not yet started can be scheduled`);
      v.initialReplicationStartTime = when.toISOString();
    });
    return vm;
  }

  /**
   * Run the VM's resync (or initial replication) in this process, disk after disk, until it completes,
   * is paused (ResynchronizeSuspended) or cancelled (back to Resynchronization Required).
   */
  async runResync(name: string, opts: ResyncRunOptions = {}): Promise<ResyncRunOutcome> {
    const lock = await tryLock(this.store.resyncLockPath(name));
    if (!('release' in lock)) throw new VhdsyncError('BUSY', `a resynchronization of '${name}' is already running (process ${lock.holder})`);
    try {
      return await this.runResyncLocked(name, opts);
    } finally {
      await lock.release();
    }
  }

  private async runResyncLocked(name: string, opts: ResyncRunOptions): Promise<ResyncRunOutcome> {
    const now = this.clock.now();
    const vmOff = (await this.runningPid(name)) === undefined;
    const { vm: started, result: fresh } = await this.store.update(name, async (vm, ctx) => {
      const initial = vm.state === 'InitialReplicationInProgress';
      const ok: ReplicationState[] = ['WaitingForStartResynchronize', 'ResynchronizeSuspended', 'Resynchronizing', 'InitialReplicationInProgress'];
      if (!ok.includes(vm.state)) throw new VhdsyncError('STATE', `virtual machine '${name}' is ${vm.state}; there is no resynchronization to run`);
      // The scope is decided now, on the disks as they are now: a change behind the tracker since the
      // requirement (or the pause) was entered widens it to Full — before the fingerprints are retaken.
      if (!initial && opts.full !== true) {
        const breach = await detectScopeBreach(vm, { running: !vmOff });
        if (breach) await this.widenScope(vm, breach, ctx);
      }
      let restart = opts.restart === true || vm.state === 'WaitingForStartResynchronize' || vm.resync?.restart === true;
      if (await followResize(vm)) restart = true;
      if (vmOff) {
        // The compare sees the disks as they are now. A disk changed while a resync was suspended may
        // have changed behind its checkpoint: that one starts over.
        if (!restart && !initial) {
          for (const d of vm.disks) if (d.fingerprint && (await checkFingerprint(d.path, d.fingerprint)).kind !== 'unchanged') restart = true;
        }
        await this.refreshFingerprints(vm, now);
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
    const site = opts.site ?? this.site(started);
    const network = !opts.site && isReplicaAddress(started.replica) ? await this.dialOptions(started) : undefined;
    const seq = started.resync!.continuationSequence!;
    const results: ResyncRunOutcome['disks'] = [];
    const progress = new TaskProgress(this.store.vmDir(name), started.resync!.startedAt!);
    let stopped: 'pause' | 'cancel' | undefined;
    let wanted: 'pause' | 'cancel' | undefined;
    try {
      if (initial) await site.createEmptyDisks();
      else await site.requireReplica();
      for (const d of started.disks) {
        if (started.resync!.disksDone.includes(d.index)) continue;
        // A request that came while the previous disk ran stops the run before the next disk starts.
        const now = await this.store.load(name);
        const asked = now.control ?? (now.state === 'WaitingForStartResynchronize' ? 'cancel' : undefined) ?? (opts.shouldPause?.() ? 'pause' : undefined);
        if (asked) {
          stopped = asked;
          break;
        }
        const handle = startResync({
          primary: d.path,
          replica: opts.site ? opts.site.diskPath(d.index) : d.replicaPath,
          vm: started.name,
          restart: fresh,
          keepPreResyncPoint: !initial && started.resync!.keepPreResyncPoint === true,
          ...(network ? { network } : { link: opts.link ?? this.link }),
          // An initial replication is not a resync: its 29242/29244 and Resynchronized Bytes stay private.
          events: initial ? new EventLog() : this.events,
          counters: initial ? undefined : this.store.counters,
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
          void this.store
            .tryLoad(name)
            .then((v) => {
              const want = v?.control ?? (v && v.state === 'WaitingForStartResynchronize' ? 'cancel' : undefined) ?? (opts.shouldPause?.() ? 'pause' : undefined);
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
          await this.store.update(name, (vm) => {
            if (vm.resync) vm.resync.compareSeconds = { ...vm.resync.compareSeconds, [d.index]: prior + result.phases.compare };
          });
        }
        if (result.result !== 'completed') {
          // Only a run that really stopped counts: a request that came after the last region is moot.
          stopped = wanted ?? 'pause';
          break;
        }
        await this.store.update(name, (vm) => {
          if (vm.resync && !vm.resync.disksDone.includes(d.index)) vm.resync.disksDone.push(d.index);
        });
      }
    } catch (e) {
      await this.store.update(name, (vm) => {
        vm.lastError = (e as Error).message;
        if (vm.state === 'Resynchronizing') vm.state = 'WaitingForStartResynchronize';
        if (vm.resync && (e as VhdsyncError).code === 'CHECKPOINT') vm.resync.restart = true;
      }).catch(() => undefined);
      throw e;
    }
    const running = (await this.runningPid(name)) !== undefined;
    const end = this.clock.now();
    await progress.flush();
    const { vm, result } = await this.store.update(name, async (vm): Promise<ResyncRunOutcome['result']> => {
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
        if (!running) await this.refreshFingerprints(vm, end);
        await dropDirtyMaps(vm);
        return 'completed';
      }
      if (cancelled) {
        if (vm.state !== 'WaitingForStartResynchronize') await this.cancelInPlace(vm);
        else {
          // A trigger fired during the resync: its artifacts go; the requirement stays.
          await this.discardResync(vm);
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

  /** The service asks a running automatic resync to pause because its window closed. */
  async pauseForWindow(name: string): Promise<void> {
    const owner = await this.resyncPid(name);
    await this.store.update(name, (vm) => {
      if (vm.state !== 'Resynchronizing' || !vm.resync) return;
      vm.resync.pausedByWindow = true;
      if (owner !== undefined) vm.control = 'pause';
      else vm.state = 'ResynchronizeSuspended';
    });
  }

  /** ResynchronizationScope (Full | DirtyExtents) and its bytes now, while a resync is required or running. */
  async scopeView(vm: VmRecord): Promise<{ ResynchronizationScope: 'Full' | 'DirtyExtents' | null; ResynchronizationScopeBytes: number | null }> {
    if (!vm.resync || vm.state === 'InitialReplicationInProgress') return { ResynchronizationScope: null, ResynchronizationScopeBytes: null };
    return { ResynchronizationScope: vm.resync.scope ?? 'Full', ResynchronizationScopeBytes: await scopeBytesNow(vm) };
  }

  // ---- Reset-VMReplicationStatistics ----

  /** The statistics of the monitoring interval start again now (the cumulative counters stay, as Hyper-V's). */
  async resetStatistics(name: string): Promise<VmRecord> {
    const now = this.clock.now();
    const { vm } = await this.store.update(name, (vm) => {
      vm.statistics = emptyStatistics(now);
    });
    return vm;
  }

  /**
   * Measure's CurrentTask: the resync or initial replication under way (running or suspended), how
   * far it is (bytes compared over every disk, from the running process's progress file) and its scope.
   */
  async currentTask(vm: VmRecord): Promise<CurrentTask | null> {
    if (!RESYNC_STATES.includes(vm.state) || !vm.resync) return null;
    const initial = vm.state === 'InitialReplicationInProgress';
    const p = await TaskProgress.read(this.store.vmDir(vm.name), vm.resync.startedAt);
    const total = vm.disks.reduce((t, d) => t + d.virtualSize, 0);
    let done = 0;
    for (const d of vm.disks) {
      if (vm.resync.disksDone.includes(d.index)) done += d.virtualSize;
      else if (p?.disks[d.index] !== undefined) done += Math.min(p.disks[d.index], d.virtualSize);
    }
    const running = (await this.resyncPid(vm.name)) !== undefined;
    return {
      Task: initial ? 'InitialReplication' : 'Resynchronization',
      State: vm.state === 'Resynchronizing' && !running ? 'ResynchronizeSuspended' : vm.state,
      Running: running,
      PercentComplete: total > 0 ? Math.floor((done * 100) / total) : 0,
      BytesCompared: done,
      BytesTotal: total,
      Scope: initial ? 'Full' : (vm.resync.scope ?? 'Full'),
      ScopeBytes: initial ? null : await scopeBytesNow(vm),
      Disk: p?.current ?? null,
      Phase: p?.phase ?? null,
      StartedAt: vm.resync.startedAt ?? null,
    };
  }

  // ---- Measure-VMReplication ----

  async measure(name: string): Promise<Measurement> {
    const vm = await this.store.load(name);
    const { health, details } = this.health(vm);
    const pending = await pendingBytes(vm).catch(() => 0);
    const counters = (await this.store.counters.read())[vm.name];
    const s = vm.statistics;
    return {
      VMName: vm.name,
      State: vm.state,
      Health: health,
      CurrentTask: await this.currentTask(vm),
      LastReplicationType: vm.lastReplicationType ?? 'None',
      InitialReplicationSize: vm.initialReplicationSize ?? 0,
      ...(await this.scopeView(vm)),
      LastReplicationTime: vm.lastReplicationTime,
      PendingReplicationSize: pending,
      AverageReplicationLatency: averageLatencyMs(s) / 1000,
      MaximumReplicationLatency: s.maximumReplicationLatencyMs / 1000,
      AverageReplicationSize: averageSize(s),
      MaximumReplicationSize: s.maximumReplicationSize,
      LastReplicationSize: s.lastReplicationSize,
      SuccessfulReplicationCount: s.successfulReplicationCount,
      MissedReplicationCount: s.missedReplicationCount,
      ReplicationErrors: s.replicationErrors,
      MonitoringStartTime: s.monitoringStartTime,
      MonitoringEndTime: this.clock.now().toISOString(),
      ReplicationHealthDetails: details,
      Relationship: 'Simple',
      Counters: {
        'Resynchronized Bytes': counters?.['Resynchronized Bytes'] ?? 0,
        'Network Bytes Sent': counters?.['Network Bytes Sent'] ?? 0,
        'Replication Count': counters?.['Replication Count'] ?? 0,
        'Average Replication Size': averageSize(s),
        'Average Replication Latency': averageLatencyMs(s) / 1000,
        'Last Replication Size': s.lastReplicationSize,
        'Pending Replication Size': pending,
      },
    };
  }
}

export interface CurrentTask {
  Task: 'Resynchronization' | 'InitialReplication';
  State: ReplicationState;
  /** A process is running it now (else it is suspended, or its process died and the service continues it). */
  Running: boolean;
  PercentComplete: number;
  BytesCompared: number;
  BytesTotal: number;
  Scope: 'Full' | 'DirtyExtents';
  ScopeBytes: number | null;
  /** The disk being compared (index), and its phase: comparing, merging, applying… */
  Disk: number | null;
  Phase: string | null;
  StartedAt: string | null;
}

export interface Measurement {
  VMName: string;
  State: ReplicationState;
  Health: ReplicationHealth;
  /** The resync or initial replication under way, with how far it is and its scope (null: none). */
  CurrentTask: CurrentTask | null;
  /** Regular after a replication cycle; None before the first. */
  LastReplicationType: 'None' | 'Regular' | 'Planned';
  /** Bytes the initial replication sent (0 before it ran). */
  InitialReplicationSize: number;
  ResynchronizationScope: 'Full' | 'DirtyExtents' | null;
  ResynchronizationScopeBytes: number | null;
  LastReplicationTime: string | null;
  PendingReplicationSize: number;
  /** Seconds. */
  AverageReplicationLatency: number;
  MaximumReplicationLatency: number;
  AverageReplicationSize: number;
  MaximumReplicationSize: number;
  LastReplicationSize: number;
  SuccessfulReplicationCount: number;
  MissedReplicationCount: number;
  ReplicationErrors: number;
  MonitoringStartTime: string;
  MonitoringEndTime: string;
  ReplicationHealthDetails: string[];
  Relationship: 'Simple';
  Counters: Record<string, number>;
}

/** What a replica site is told of each disk of the VM (named after the replica's file). */
function replicaDisks(vm: VmRecord): ReplicaDiskSpec[] {
  return vm.disks.map((d) => ({ index: d.index, name: basename(d.replicaPath), diskId: d.diskId, virtualSize: d.virtualSize, format: d.format, sectorSize: d.sectorSize ?? 512 }));
}

/** Get-VMReplication's object, with Hyper-V's property names (PascalCase, states and health as names). */
export function replicationView(vm: VmRecord, health: { health: ReplicationHealth; details: string[] }) {
  const server = isReplicaAddress(vm.replica) ? parseSiteAddress(vm.replica, vmFolderName(vm.name)) : undefined;
  return {
    VMName: vm.name,
    VMId: vm.vmId,
    State: vm.state,
    Health: health.health,
    Mode: 'Primary' as const,
    FrequencySec: vm.settings.ReplicationFrequencySec,
    PrimaryServer: hostname(),
    ReplicaServer: vm.replica,
    Relationship: 'Simple' as const,
    AutoResynchronizeEnabled: vm.settings.AutoResynchronizeEnabled,
    AutoResynchronizeIntervalStart: vm.settings.AutoResynchronizeIntervalStart,
    AutoResynchronizeIntervalEnd: vm.settings.AutoResynchronizeIntervalEnd,
    PauseResynchronizeOutsideWindow: vm.settings.PauseResynchronizeOutsideWindow,
    ResynchronizeStartTime: vm.resynchronizeStartTime,
    LastReplicationTime: vm.lastReplicationTime,
    ReplicationHealthDetails: health.details,
    ResynchronizationReason: vm.resync?.reason ?? null,
    ResynchronizationScope: vm.resync && vm.state !== 'InitialReplicationInProgress' ? (vm.resync.scope ?? 'Full') : null,
    ResynchronizationScopeBytes: vm.resync && vm.state !== 'InitialReplicationInProgress' ? (vm.resync.scopeBytes ?? null) : null,
    ResynchronizationEvidence: vm.resync?.evidence ?? null,
    LastError: vm.lastError,
    ReplicatedDisks: vm.disks.map((d) => ({ Index: d.index, Path: d.path, ReplicaPath: d.replicaPath, VirtualSize: d.virtualSize, Format: d.format, Type: d.type })),
    // Get-VMReplication's own property names (| fl *), besides the short ones above.
    ReplicationState: vm.state,
    ReplicationHealth: health.health,
    ReplicationMode: 'Primary' as const,
    ReplicationRelationshipType: 'Simple' as const,
    ReplicationFrequencySec: vm.settings.ReplicationFrequencySec,
    PrimaryServerName: hostname(),
    ReplicaServerName: server ? server.host : hostname(),
    ReplicaServerPort: server ? server.port : null,
    /** Certificate: mutual TLS to a replica server; None: a directory on this machine. */
    AuthenticationType: server ? ('Certificate' as const) : ('None' as const),
    RecoveryHistory: vm.settings.RecoveryHistory ?? 0,
    InitialReplicationStartTime: vm.initialReplicationStartTime ?? null,
    BandwidthLimit: vm.network?.bandwidth ?? null,
  };
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
    const disk = await openDisk(d.path, { readOnly: true });
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
