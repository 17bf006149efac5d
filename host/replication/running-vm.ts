import { VhdsyncError } from '../errors.js';
import { type TrackRecord } from '../tracking/log.js';
import type { LogFs } from '../tracking/log-fs.js';
import { currentLog, trackingLogPathFor } from '../tracking/log-files.js';
import { dirtyMapPathFor } from '../tracking/dirty-map.js';
import { tryLock, type Release } from '../pid-lock.js';
import { describeHolder, tryLockFile, type HeldLock } from '../writer-lock.js';
import { openTrackedDisk, type TrackedDisk } from '../tracking/tracked-disk.js';
import { MAX_PROBES, PROBE_BYTES, takeFingerprint, type Probe } from './fingerprint.js';
import { RESYNC_STATES, TRACKING_STATES } from './names.js';
import { type ReplicationState } from '../replica/states.js';
import type { Replication } from './replication.js';
import type { VmRecord } from './store.js';
import { checkLogSize, detectPrimaryTriggers, type Trigger } from './triggers.js';
import { ensureLogs, pendingBytes, switchLogs } from './vm-logs.js';
import { checkScope, requireResync } from './resync-required.js';
import { toHex } from '../bytes.js';

export interface RunOptions {
  /** The file layer under the tracking logs (tests inject a failing one). */
  logFs?: LogFs;
  /** Log appends made durable by each disk's flush() rather than one by one (see TrackedDiskOptions). */
  logSyncOnFlush?: boolean;
}

/**
 * A running VM: the process that holds the VM's disks open for writing through the tracker (the
 * `workload` and `write` commands, or a library user). Starting it looks at the evidence left by the
 * last run — a log its dead writer never closed, a disk changed or put back while the VM was off —
 * and makes sure every disk has an open log when replication is tracking. While it runs, a failed log
 * append or logs grown past 50 % of the disks require a resync. A clean close seals the logs (they wait
 * to be shipped) and records each disk's fingerprint; a SIGKILL leaves the logs open (end-of-log 0).
 */
export class RunningVm {
  /** Triggers seen at start or while running (in order). */
  readonly triggers: Trigger[] = [];
  private readonly recent: Map<number, Probe[]>;
  private pendingChecks: Promise<void> = Promise.resolve();
  private sinceSizeCheck = 0;
  private readonly sizeCheckStep: number;
  private closed = false;
  private readonly checkingUntracked = new Set<number>();

  private constructor(
    private readonly rep: Replication,
    readonly vm: VmRecord,
    readonly disks: TrackedDisk[],
    private readonly dataWriteId: Uint8Array,
    private readonly releaseRun: Release,
  ) {
    this.recent = new Map(vm.disks.map((d) => [d.index, []]));
    const total = vm.disks.reduce((n, d) => n + d.virtualSize, 0);
    this.sizeCheckStep = Math.max(64 * 1024, Math.floor(total / 64));
  }

  static async start(rep: Replication, name: string, opts: RunOptions = {}): Promise<RunningVm> {
    await rep.store.load(name);
    const lock = await tryLock(rep.store.runLockPath(name));
    if (!('release' in lock)) throw new VhdsyncError('BUSY', `virtual machine '${name}' is already running (process ${lock.holder})`);
    const opened: TrackedDisk[] = [];
    // One writer, always: each disk's own writer lock while the VM runs, so that another writer of the
    // file (vhdsync resize, a resync onto it) is refused instead of changing it under the guest.
    const diskLocks: HeldLock[] = [];
    const release = async () => {
      for (const l of diskLocks.splice(0).reverse()) await l.release();
      await lock.release();
    };
    try {
      for (const d of (await rep.store.load(name)).disks) {
        // A missing disk is reported by the code below, as before.
        const held = await tryLockFile(d.path, { what: d.path }).catch((e: unknown) => {
          if (e instanceof VhdsyncError && e.code === 'NOT_FOUND') return undefined;
          throw e;
        });
        if (!held) continue;
        if (!('release' in held)) throw new VhdsyncError('BUSY', `virtual machine '${name}' cannot start: ${describeHolder(d.path, held.holder)}`);
        diskLocks.push(held);
      }
      const triggers: Trigger[] = [];
      let vm = await rep.store.load(name);
      // Writes after the prepare would be lost by the planned failover that follows it.
      if (vm.state === 'PreparedForFailover') {
        throw new VhdsyncError('STATE', `virtual machine '${name}' is prepared for a planned failover (its last changes are on the replica); fail over (start-failover ${name}) or cancel it first (stop-failover ${name})`);
      }
      if (TRACKING_STATES.includes(vm.state)) {
        const t = await detectPrimaryTriggers(vm, { running: false });
        if (t) {
          triggers.push(t);
          // Not written yet: the disks are as the last writer left them (their fingerprints are retaken).
          await requireResync(rep, name, t, { running: false });
        }
      }
      // A DirtyExtents scope whose disks changed while the VM was off (before bitmap mode marks anything).
      const widened = await checkScope(rep, name, { running: false });
      if (widened) triggers.push(widened);
      ({ vm } = await rep.store.update(name, async (v) => {
        if (keepsLogs(v.state) && !RESYNC_STATES.includes(v.state)) await ensureLogs(v);
      }));
      const dataWriteId = crypto.getRandomValues(new Uint8Array(16));
      let self: RunningVm | undefined;
      for (const d of vm.disks) {
        opened.push(
          await openTrackedDisk(d.path, {
            fs: opts.logFs,
            logSyncOnFlush: opts.logSyncOnFlush,
            dataWriteId,
            onLogError: (e) => self?.logFailed(d.index, e),
            onAppended: (_size, bytes) => self?.appended(bytes),
            onUntracked: () => self?.untracked(d.index),
          }),
        );
      }
      self = new RunningVm(rep, vm, opened, dataWriteId, release);
      self.triggers.push(...triggers);
      return self;
    } catch (e) {
      for (const d of opened) await d.close().catch(() => undefined);
      await release();
      throw e;
    }
  }

  get name(): string {
    return this.vm.name;
  }

  async write(diskIndex: number, offset: number, data: Uint8Array): Promise<void> {
    await this.writeMany(diskIndex, [{ offset, data }]);
  }

  async writeMany(diskIndex: number, writes: readonly TrackRecord[]): Promise<void> {
    if (this.closed) throw new VhdsyncError('STATE', `virtual machine '${this.name}' is shut down`);
    const disk = this.disks[diskIndex];
    if (!disk) throw new VhdsyncError('USAGE', `virtual machine '${this.name}' has no disk ${diskIndex} (it has ${this.disks.length})`);
    for (const w of writes) {
      if (w.offset < 0 || w.offset + w.data.byteLength > disk.virtualSize) {
        throw new VhdsyncError('OUT_OF_RANGE', `write at ${w.offset} (${w.data.byteLength} bytes) is past the end of disk ${diskIndex} (${disk.virtualSize} bytes)`);
      }
    }
    await disk.writeMany(writes);
    const probes = this.recent.get(diskIndex)!;
    for (const w of writes) {
      const at = probes.findIndex((p) => p.offset === w.offset);
      if (at >= 0) probes.splice(at, 1);
      probes.push({ offset: w.offset, length: Math.min(w.data.byteLength, PROBE_BYTES), digest: '', kind: 'written' });
      if (probes.length > MAX_PROBES) probes.shift();
    }
  }

  /** Wait for the checks that writes started (log size, write failures) to settle. */
  async settle(): Promise<void> {
    await this.pendingChecks;
  }

  private queue(work: () => Promise<void>): void {
    this.pendingChecks = this.pendingChecks.then(work).catch(() => undefined);
  }

  /** A log append failed: Hyper-V's "write failure to the tracking log". */
  private logFailed(diskIndex: number, e: Error): void {
    const disk = this.vm.disks[diskIndex];
    const code = (e as NodeJS.ErrnoException).code;
    const trigger: Trigger = {
      reason: 'TrackingLogWriteFailure',
      evidence: `${trackingLogPathFor(disk.path)}: a write could not be appended (${code ? `${code}: ` : ''}${e.message.replace(/^.*?: /, '')}); the log no longer holds every write`,
    };
    this.queue(async () => {
      this.triggers.push(trigger);
      await requireResync(this.rep, this.name, trigger);
    });
  }

  /**
   * A write found no log. That is right when tracking is off (resync required, or a resync that has
   * not reached this disk yet); while replication tracks the disk, the log was lost under the VM.
   */
  private untracked(diskIndex: number): void {
    if (this.checkingUntracked.has(diskIndex)) return;
    this.checkingUntracked.add(diskIndex);
    const disk = this.vm.disks[diskIndex];
    this.queue(async () => {
      try {
        // Under the VM's lock: a resync starting removes the logs and saves its state in one update.
        const seen = await this.rep.store.inspect(this.name, async (vm) => {
          // With a DirtyExtents scope, the disk's dirty map takes every write (bitmap mode) until its
          // resync's log does: a write that found neither is missing from the scope.
          const scoped = vm.resync?.scope === 'DirtyExtents' && (vm.state === 'WaitingForStartResynchronize' || RESYNC_STATES.includes(vm.state));
          if (!scoped && (!TRACKING_STATES.includes(vm.state) || RESYNC_STATES.includes(vm.state))) return undefined;
          if (await currentLog(disk.path)) return undefined; // a switch opened the next one meanwhile
          return { vm, scoped };
        });
        if (!seen) return;
        const { vm, scoped } = seen;
        const trigger: Trigger = scoped
          ? { reason: 'TrackingLogWriteFailure', evidence: `${dirtyMapPathFor(disk.path)}: a write found neither a tracking log nor the dirty map (${vm.state}, scope DirtyExtents); the write is missing from the scope` }
          : {
              reason: 'TrackingLogWriteFailure',
              evidence: `${trackingLogPathFor(disk.path)}: the tracking log is gone while the VM writes (${vm.state}); writes could not be appended to it`,
            };
        this.triggers.push(trigger);
        await requireResync(this.rep, this.name, trigger);
      } finally {
        this.checkingUntracked.delete(diskIndex);
      }
    });
  }

  /** Every so often, weigh all the VM's logs against half its disks (Hyper-V's 50 % rule). */
  private appended(bytes: number): void {
    this.sinceSizeCheck += bytes;
    if (this.sinceSizeCheck < this.sizeCheckStep) return;
    this.sinceSizeCheck = 0;
    this.queue(async () => {
      const vm = await this.rep.store.load(this.name);
      if (!TRACKING_STATES.includes(vm.state)) return;
      const t = await checkLogSize(vm, await pendingBytes(vm));
      if (t) {
        this.triggers.push(t);
        await requireResync(this.rep, this.name, t);
      }
    });
  }

  /**
   * Shut down cleanly: replication logs are sealed (end-of-log written; they wait to be shipped), a
   * resync's log is released for the resync to take, and each disk's fingerprint is recorded.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.settle();
      for (const d of this.disks) await d.close();
      const now = this.rep.clock.now();
      await this.rep.store.update(this.name, async (vm) => {
        if (keepsLogs(vm.state) && !RESYNC_STATES.includes(vm.state)) await switchLogs(vm, { running: false });
        for (const d of vm.disks) {
          const written = this.recent.get(d.index) ?? [];
          const kept = (d.fingerprint?.probes ?? []).filter((p) => !written.some((w) => w.offset === p.offset));
          const ranges = [...kept, ...written].slice(-MAX_PROBES);
          d.fingerprint = await takeFingerprint(d.path, ranges, toHex(this.dataWriteId), now);
        }
      });
    } finally {
      await this.releaseRun();
    }
  }
}

/**
 * A failover not yet completed may be stopped, and replication then resumes: the primary's writes
 * meanwhile are tracked (and sealed at a clean close) as while Replicating, and shipped after the stop.
 */
function keepsLogs(state: ReplicationState): boolean {
  return TRACKING_STATES.includes(state) || state === 'FailedOverWaitingCompletion';
}
