import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createVhd, createVhdx, openDisk } from '../disk/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { pathExists, removeIfExists, syncDir, tempPathFor, writeFileAtomic } from '../fsutil.js';
import { lockFile, type HeldLock } from '../writer-lock.js';
import { idHex, scanTrackingLog, idFromHex, sameId } from '../tracking/log.js';
import { fileIdentity, sameIdentity, type FileIdentity } from '../file-identity.js';
import { shellWord } from './vm-name.js';
import { keepForExtended, startKeeping } from './extended-logs.js';
import { cycleLogs, logName } from './log-folder.js';
import type { ResyncReason } from './states.js';
import { cancelResync } from '../resync/resync.js';
import { withLock } from '../pid-lock.js';
import { readCheckpoint } from '../resync/checkpoint.js';
import { checkpointPathFor } from '../resync/paths.js';
import { mergeJournalPath, mergeOverlay } from '../disk/merge.js';
import {
  UndoCapture, adoptPreResyncPoint, createPointView, deleteRecoveryPoints, dropHistory, failoverViewPathFor, listPoints, recordApplied, revertReplicaTo, testViewPathFor,
  type RecoveryPoint,
} from './recovery-points.js';

/**
 * The replica site of one VM in a local directory:
 *   <dir>/<vm>/<primary file name>   the replica of each disk (check it with `vhdsync checksum` or qemu-img)
 *   <dir>/<vm>/logs/<seq>-<disk>.log shipped tracking logs waiting to be applied
 *   <dir>/<vm>/replica.json          the last applied sequence and each replica disk's file identity
 * Logs are applied strictly in sequence, a whole cycle (all disks) at a time, only after every log of
 * the cycle has been checked end to end. What the replica sees decides the sixth trigger: a log that is
 * out of sequence, or invalid, or a replica disk that is not the one the last log was applied to (a
 * backup of the replica restored) — each is reported, never applied.
 */
export interface ReplicaDiskSpec {
  index: number;
  /** File name on the replica (the primary's file name). */
  name: string;
  /** Where the replica disk is when it is not `<root>/<vm>/<name>`: a reversed relationship's old primary. */
  path?: string;
  diskId: string;
  virtualSize: number;
  format: 'raw' | 'vhd' | 'vhdx';
  /** Logical sector size of the primary (512 or 4096): a VHDX replica is made with the same. */
  sectorSize: number;
}

interface ReplicaState {
  version: 1;
  vmId: string;
  lastAppliedSequence: number;
  /** A cycle whose apply started and did not finish: it is applied again (writes are idempotent in order). */
  applying: number | null;
  /** `diskId`: the primary's id of the disk (absent in states written before it was recorded). */
  disks: { name: string; identity: FileIdentity; diskId?: string }[];
  updatedAt: string;
  /** A new id at every rebase (initial replication, resync, completed failover, revert): the disks changed outside the logs. */
  base?: string;
  /** Extended: this is the replica of a replica (extended replication's third site). */
  relationship?: 'Extended';
}

/** What `replica.json` says, for the replica side's own view. */
export interface ReplicaFolderState {
  vmId: string;
  lastAppliedSequence: number;
  applying: number | null;
  /** When the last apply (or rebase) finished. */
  updatedAt: string;
  disks: string[];
  /** Each disk's id as the primary names it (undefined where not recorded yet). */
  diskIds: (string | undefined)[];
  /** Changes at every rebase (null before the first one that recorded it). */
  base: string | null;
  relationship: 'Simple' | 'Extended';
}

export interface ApplyProblem {
  reason: Extract<ResyncReason, 'ReplicaLogOutOfSequence' | 'ReplicaLogInvalid'>;
  evidence: string;
}

export interface ApplyResult {
  applied: number[];
  /** Bytes of the logs applied. */
  bytes: number;
  records: number;
  lastApplied: number;
  problem?: ApplyProblem;
}

export interface RebaseOptions {
  /** `--keep-pre-resync-point`: the resync left the replica's former bytes beside it; keep them as a protected point of this time. */
  preResyncPointTime?: string;
  /** The replica of a replica (extended replication): recorded, so the site's own view says ExtendedReplica. */
  extended?: boolean;
}

/**
 * What the replication layer asks of a replica site, wherever it is: a directory on this machine
 * (LocalReplicaSite) or a directory under a replica server's root (RemoteReplicaSite, the same
 * operations carried over mutual TLS and run there by a LocalReplicaSite).
 */
export interface ReplicaSite extends FailoverSite {
  /** Where the site is, for messages: a directory or tls://HOST:PORT/NAME. */
  readonly where: string;
  /** Initial replication: an empty replica of the same format and size for every disk that has none. */
  createEmptyDisks(): Promise<void>;
  /**
   * Before a resync: the folder and every disk must be there. A resync never re-seeds a missing replica
   * (an unmounted volume would hide the outage behind a full copy); only an explicit initial replication does.
   */
  requireReplica(): Promise<void>;
  /** The replica disks already there (a seed placed by hand is used only when asked: --use-existing-replica). */
  existingDisks(): Promise<string[]>;
  /** Ship one sealed log (the file `from` on this machine). */
  receive(sequence: number, diskIndex: number, from: string): Promise<void>;
  lastApplied(): Promise<number>;
  /** After an initial replication or a resync: the replica equals the primary as of `lastApplied`. */
  rebase(lastApplied: number, opts?: RebaseOptions): Promise<void>;
  /** Apply every shipped cycle that follows the last applied one, in order. */
  apply(opts?: ApplyOptions): Promise<ApplyResult>;
  /** Drop an unfinished resync of one disk (its overlay and checkpoint); refused once its merge started. */
  cancelResync(diskIndex: number): Promise<{ cancelled: boolean }>;
}



export const FAILOVER_PHASES = ['waiting', 'completing', 'stopping'] as const;
export type FailoverPhase = (typeof FAILOVER_PHASES)[number];

/** What failover is in effect on a replica site (`<site>/failover.json`; failover.ts). */
export interface FailoverRecord {
  version: 1;
  kind: 'test' | 'planned' | 'unplanned';
  sequence: number;
  time: string;
  /** Set while the replica is being reverted in place (done again after a crash). Records of vhdsync before the failover lifecycle only. */
  reverting?: boolean;
  /**
   * A planned or unplanned failover not yet completed: `waiting` (Hyper-V's FailedOverWaitingCompletion:
   * the running copy is a view over each replica disk, `<replica disk>.failover.vhd`, the replica itself
   * is as it was); `completing` (complete-failover merges the views into the replica: the point of no
   * return, done again after a crash); `stopping` (stop-failover removes the views, done again after a
   * crash). Absent: completed, or a test failover.
   */
  phase?: FailoverPhase;
  /** The primary's state to go back to when the failover is stopped. */
  resumeState?: string;
  startedAt: string;
}

/**
 * What failover needs of a replica site (failover.ts decides; the site acts on its own files). A
 * test failover's views are `<replica disk>.test-failover.vhd`, named by the site, never by a caller.
 */
export interface FailoverSite {
  /** Where disk `index`'s replica is, for the user: a path, or tls://HOST:PORT/NAME/<file>. */
  diskLocation(index: number): string;
  /** The points every disk has, newest first; the latest is `latestTime` (the last replication time). */
  points(latestTime: string | null): Promise<RecoveryPoint[]>;
  failoverRecord(): Promise<FailoverRecord | undefined>;
  setFailoverRecord(record: FailoverRecord | null): Promise<void>;
  /** Writable views of every disk at `sequence`; returns their locations. */
  createTestViews(sequence: number): Promise<string[]>;
  /** Remove the views (those that exist); returns the locations removed. */
  removeTestViews(): Promise<string[]>;
  /** The replica disks themselves go back to `sequence` (undo logs written in place), then rebase there. */
  revertTo(sequence: number): Promise<void>;
  /** The phase of an unfinished resync of disk `index` ('comparing', 'compared', 'merging'), or null. */
  resyncPhase(index: number): Promise<string | null>;
  /** A planned or unplanned failover: writable views of every disk at `sequence` (`<disk>.failover.vhd`); returns their locations. */
  createFailoverViews(sequence: number): Promise<string[]>;
  /** Stop-VMFailover: remove the failover views (those that exist); the replica disks were never touched. Returns the locations removed. */
  removeFailoverViews(): Promise<string[]>;
  /**
   * Complete-VMFailover: merge each failover view into its replica disk (journalled, resumed after a
   * crash), delete every recovery point, drop unapplied logs and rebase at `sequence`.
   */
  commitFailover(sequence: number): Promise<void>;
}

export interface ApplyOptions {
  now?: Date;
  recoveryHistory?: number;
}

/** Receives one log: bytes in order, then commit (fsync, rename into place) or abort (nothing left). */
export interface LogWriter {
  write(bytes: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export class LocalReplicaSite implements ReplicaSite {
  readonly vmDir: string;
  readonly logsDir: string;
  private readonly statePath: string;

  constructor(
    readonly root: string,
    readonly vmName: string,
    readonly vmId: string,
    readonly disks: readonly ReplicaDiskSpec[],
    /** The VM's name for the commands messages suggest (vmName is its folder; vm-name.ts). */
    private readonly label = vmName,
  ) {
    this.vmDir = join(root, vmName);
    this.logsDir = join(this.vmDir, 'logs');
    this.statePath = join(this.vmDir, 'replica.json');
  }

  get where(): string {
    return this.vmDir;
  }

  /**
   * The replica as its own folder describes it, without the primary's record (the replica side's view,
   * view.ts): its disks are named in `replica.json`. Undefined when there is none.
   */
  static async fromFolder(root: string, vmName: string): Promise<{ site: LocalReplicaSite; state: ReplicaFolderState } | undefined> {
    const path = join(root, vmName, 'replica.json');
    let s: ReplicaState;
    try {
      s = JSON.parse(await readFile(path, 'utf8')) as ReplicaState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new VhdsyncError('STATE', `${path}: the replica state is damaged`);
    }
    if (s?.version !== 1 || !Number.isSafeInteger(s.lastAppliedSequence) || !Array.isArray(s.disks) || typeof s.vmId !== 'string') {
      throw new VhdsyncError('STATE', `${path}: the replica state is damaged`);
    }
    // Only plain file names: a damaged or foreign state never leads out of the folder.
    const disks = s.disks.filter((d) => typeof d?.name === 'string' && /^[A-Za-z0-9][A-Za-z0-9._ -]{0,254}$/.test(d.name));
    const specs: ReplicaDiskSpec[] = disks.map((d, index) => ({ index, name: d.name, diskId: '', virtualSize: 0, format: 'raw', sectorSize: 512 }));
    return {
      site: new LocalReplicaSite(root, vmName, s.vmId, specs),
      state: {
        vmId: s.vmId, lastAppliedSequence: s.lastAppliedSequence, applying: s.applying ?? null, updatedAt: s.updatedAt, disks: disks.map((d) => d.name),
        diskIds: disks.map((d) => (typeof d.diskId === 'string' && d.diskId ? d.diskId : undefined)),
        base: typeof s.base === 'string' ? s.base : null,
        relationship: s.relationship === 'Extended' ? 'Extended' : 'Simple',
      },
    };
  }

  diskPath(index: number): string {
    return this.disks[index].path ?? join(this.vmDir, this.disks[index].name);
  }

  static diskPathFor(root: string, vmName: string, primaryPath: string): string {
    return join(root, vmName, basename(primaryPath));
  }

  /** Initial replication: an empty replica of the same format and size for every disk that has none. */
  async createEmptyDisks(): Promise<void> {
    await mkdir(this.vmDir, { recursive: true }).catch((e) => {
      throw ioError(this.vmDir, e);
    });
    for (const d of this.disks) {
      const path = this.diskPath(d.index);
      const exists = await fileIdentity(path).then(() => true, () => false);
      if (exists) continue;
      if (d.format === 'vhd') await createVhd(path, { size: d.virtualSize, type: 'dynamic' });
      else if (d.format === 'vhdx') await createVhdx(path, { size: d.virtualSize, type: 'dynamic', logicalSectorSize: d.sectorSize });
      else {
        await writeFile(path, new Uint8Array(0));
        await truncate(path, d.virtualSize);
      }
    }
  }

  async existingDisks(): Promise<string[]> {
    const out: string[] = [];
    for (const d of this.disks) if (await pathExists(this.diskPath(d.index))) out.push(this.diskPath(d.index));
    return out;
  }

  async requireReplica(): Promise<void> {
    const missing = (what: string) => new VhdsyncError('NOT_FOUND', `${what}: the replica is missing (unmounted or deleted?); restore it, or run the initial replication again: vhdsync start-initial-replication ${shellWord(this.label)} --again`);
    let folder = await stat(this.vmDir).then((st) => st.isDirectory(), () => false);
    if (!folder && this.disks.every((d) => d.path)) {
      // Every disk is kept elsewhere (reverse replication: the old primary): the folder holds only bookkeeping.
      await mkdir(this.vmDir, { recursive: true }).catch((e) => {
        throw ioError(this.vmDir, e);
      });
      folder = true;
    }
    for (const d of this.disks) {
      const path = this.diskPath(d.index);
      // A disk kept elsewhere (reverse replication: the old primary) needs only itself.
      if (!d.path && !folder) throw missing(this.vmDir);
      if (!(await fileIdentity(path).then(() => true, () => false))) throw missing(path);
    }
  }

  /** Ship one sealed log: copied in whole under a temporary name, then renamed into place. */
  async receive(sequence: number, diskIndex: number, from: string): Promise<void> {
    const writer = await this.logWriter(sequence, diskIndex);
    try {
      const fh = await open(from, 'r').catch((e) => {
        throw ioError(from, e);
      });
      try {
        const buf = new Uint8Array(RECEIVE_CHUNK);
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.byteLength, null);
          if (bytesRead === 0) break;
          await writer.write(buf.subarray(0, bytesRead));
        }
      } finally {
        await fh.close();
      }
      await writer.commit();
    } catch (e) {
      await writer.abort();
      throw e;
    }
  }

  /** A log arriving in pieces (from a file, or from the network): it appears under its name only when whole. */
  async logWriter(sequence: number, diskIndex: number): Promise<LogWriter> {
    if (!Number.isSafeInteger(sequence) || sequence < 1) throw new VhdsyncError('USAGE', `log sequence ${sequence} is not a positive whole number`);
    if (!Number.isInteger(diskIndex) || diskIndex < 0 || diskIndex >= this.disks.length) throw new VhdsyncError('USAGE', `disk ${diskIndex} is not a disk of this VM (it has ${this.disks.length})`);
    // Not recursive: a replica folder that vanished (an unmounted volume) is a failure to retry, not
    // something to quietly recreate empty.
    await mkdir(this.logsDir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'EEXIST') {
        return stat(this.logsDir).then((st) => {
          if (!st.isDirectory()) throw new VhdsyncError('IO', `${this.logsDir}: the replica's log folder is not a folder`);
        });
      }
      if (e.code === 'ENOENT') throw missingFolder(this.vmDir, this.label);
      throw ioError(this.logsDir, e);
    });
    const target = join(this.logsDir, logName(sequence, diskIndex));
    const tmp = tempPathFor(target);
    const fh = await open(tmp, 'wx').catch((e) => {
      throw ioError(target, e);
    });
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await fh.close();
    };
    return {
      write: async (bytes) => {
        await fh.write(bytes).catch((e) => {
          throw ioError(target, e);
        });
      },
      commit: async () => {
        await fh.sync();
        await close();
        await rename(tmp, target);
        await syncDir(this.logsDir);
      },
      abort: async () => {
        await close().catch(() => undefined);
        await removeIfExists(tmp);
      },
    };
  }

  async lastApplied(): Promise<number> {
    return (await this.readState())?.lastAppliedSequence ?? 0;
  }

  /** After an initial replication or a resync: the replica equals the primary as of `lastApplied`. */
  rebase(lastApplied: number, opts: RebaseOptions = {}): Promise<void> {
    return this.exclusive(() => this.rebaseLocked(lastApplied, opts));
  }

  private async rebaseLocked(lastApplied: number, opts: RebaseOptions): Promise<void> {
    if (opts.preResyncPointTime !== undefined) {
      for (const d of this.disks) await adoptPreResyncPoint(this.diskPath(d.index), lastApplied, opts.preResyncPointTime);
    }
    await rm(this.logsDir, { recursive: true, force: true });
    await this.writeState({ lastAppliedSequence: lastApplied, applying: null, disks: await this.identities(), base: randomUUID(), ...(opts.extended ? { relationship: 'Extended' as const } : {}) });
  }

  /**
   * Extended replication's cut: with no apply running, start keeping applied logs for the extended
   * replica (extended-logs.ts) and say where the replica is — every later change to its disks is in a
   * kept log after `cut`. `base` tells a rebase since.
   */
  takeExtendedCut(): Promise<{ cut: number; base: string | null }> {
    return this.exclusive(async () => {
      await startKeeping(this.vmDir);
      const s = await this.readState();
      if (!s) throw new VhdsyncError('STATE', `${this.statePath}: the replica has no state; run the initial replication first`);
      return { cut: s.lastAppliedSequence, base: s.base ?? null };
    });
  }

  cancelResync(diskIndex: number): Promise<{ cancelled: boolean }> {
    return cancelResync(this.diskPath(diskIndex));
  }

  // ---- Failover (FailoverSite) ----

  diskLocation(index: number): string {
    return this.diskPath(index);
  }

  async points(latestTime: string | null): Promise<RecoveryPoint[]> {
    const latest = { sequence: await this.lastApplied(), time: latestTime };
    let out: RecoveryPoint[] | undefined;
    for (const d of this.disks) {
      const pts = await listPoints(this.diskPath(d.index), latest);
      // Points are recorded for every disk in the same apply; only those every disk has are usable.
      out = out ? out.filter((p) => pts.some((q) => q.sequence === p.sequence)).map((p) => ({ ...p, sizeOnDisk: p.sizeOnDisk + pts.find((q) => q.sequence === p.sequence)!.sizeOnDisk })) : pts;
    }
    return out ?? [];
  }

  async failoverRecord(): Promise<FailoverRecord | undefined> {
    const path = join(this.vmDir, 'failover.json');
    try {
      return JSON.parse(await readFile(path, 'utf8')) as FailoverRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new VhdsyncError('STATE', `${path}: the failover record is damaged`);
    }
  }

  async setFailoverRecord(record: FailoverRecord | null): Promise<void> {
    const path = join(this.vmDir, 'failover.json');
    if (record) await writeFileAtomic(path, JSON.stringify(record, null, 2) + '\n');
    else await removeIfExists(path);
  }

  createTestViews(sequence: number): Promise<string[]> {
    return this.exclusive(() => this.createTestViewsLocked(sequence));
  }

  private async createTestViewsLocked(sequence: number): Promise<string[]> {
    const latest = await this.lastApplied();
    const views: string[] = [];
    for (const d of this.disks) {
      const view = testViewPathFor(this.diskPath(d.index));
      await createPointView(this.diskPath(d.index), view, sequence, latest);
      views.push(view);
    }
    return views;
  }

  async removeTestViews(): Promise<string[]> {
    const removed: string[] = [];
    for (const d of this.disks) {
      const view = testViewPathFor(this.diskPath(d.index));
      if (await removeIfExists(view)) removed.push(view);
    }
    return removed;
  }

  revertTo(sequence: number): Promise<void> {
    return this.exclusive(async () => {
      const latest = await this.lastApplied();
      for (const d of this.disks) await revertReplicaTo(this.diskPath(d.index), sequence, latest);
      // Shipped logs not applied are the data an unplanned failover loses.
      await this.rebaseLocked(sequence, {});
    });
  }

  createFailoverViews(sequence: number): Promise<string[]> {
    return this.exclusive(async () => {
      const latest = await this.lastApplied();
      const views: string[] = [];
      for (const d of this.disks) {
        const view = failoverViewPathFor(this.diskPath(d.index));
        // overwrite: a view left half-made by a crash is made again from the start.
        await createPointView(this.diskPath(d.index), view, sequence, latest);
        views.push(view);
      }
      return views;
    });
  }

  removeFailoverViews(): Promise<string[]> {
    return this.exclusive(async () => {
      const views = this.disks.map((d) => failoverViewPathFor(this.diskPath(d.index)));
      for (const view of views) {
        if (await pathExists(mergeJournalPath(view))) {
          throw new VhdsyncError('STATE', `${view}: complete-failover has started merging it into the replica (the point of no return); run complete-failover ${this.vmName} again to finish`);
        }
      }
      // Every view's lock first: a failed-over VM still running from one refuses before anything is removed.
      return withViewLocks(views, async () => {
        const removed: string[] = [];
        for (const view of views) if (await removeIfExists(view)) removed.push(view);
        return removed;
      });
    });
  }

  commitFailover(sequence: number): Promise<void> {
    return this.exclusive(async () => {
      // Every view's lock first: a failed-over VM still running from one refuses the whole commit before anything is merged.
      const views = this.disks.map((d) => failoverViewPathFor(this.diskPath(d.index)));
      await withViewLocks(views, async () => {
        for (const view of views) {
          // Gone with no journal: merged and deleted by an earlier run that stopped before the rebase.
          if ((await pathExists(view)) || (await pathExists(mergeJournalPath(view)))) await mergeOverlay(view);
        }
      });
      // Complete-VMFailover deletes the other recovery points: they describe the replica before the failover.
      for (const d of this.disks) await deleteRecoveryPoints(this.diskPath(d.index));
      await this.rebaseLocked(sequence, {});
    });
  }

  /**
   * Reverse replication from this side: the folder's disks are a primary now, not a replica. What made
   * them a replica goes — `replica.json`, shipped logs, the failover record, views, recovery points —
   * and the disks stay. Running it again is harmless.
   */
  retire(): Promise<void> {
    return this.exclusive(async () => {
      for (const d of this.disks) {
        const path = this.diskPath(d.index);
        await deleteRecoveryPoints(path);
        await removeIfExists(testViewPathFor(path));
        await removeIfExists(failoverViewPathFor(path));
      }
      await rm(this.logsDir, { recursive: true, force: true });
      await removeIfExists(join(this.vmDir, 'failover.json'));
      await removeIfExists(this.statePath);
    });
  }

  async resyncPhase(index: number): Promise<string | null> {
    const cp = await readCheckpoint(checkpointPathFor(this.diskPath(index))).catch(() => undefined);
    return cp?.phase ?? null;
  }

  /** Apply every shipped cycle that follows the last applied one, in order. */
  apply(opts: ApplyOptions = {}): Promise<ApplyResult> {
    return this.exclusive(() => this.applyLocked(opts));
  }

  /**
   * What reads or writes the replica disks as a whole — apply, rebase, a test failover's views, an
   * unplanned failover's revert — runs one at a time across processes (the service applying while
   * `start-failover --test` builds its views must not let either see the other half-done).
   */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await stat(this.vmDir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') throw missingFolder(this.vmDir, this.label);
      throw ioError(this.vmDir, e);
    });
    return withLock(join(this.vmDir, 'site.lock'), () => this.withDiskLocks(fn), { what: `the replica site ${this.vmDir}`, timeoutMs: 10 * 60_000 });
  }

  /**
   * One writer per replica disk (DESIGN.md), keyed by its identity: a resync of a disk (local, served,
   * or by another name) and an apply or a failover view of it never run at once. Taken after the site
   * lock, always in the VM's disk order; a resync holds only its own disk, so none of them can deadlock.
   */
  private async withDiskLocks<T>(fn: () => Promise<T>): Promise<T> {
    const held: HeldLock[] = [];
    try {
      for (const d of this.disks) {
        const path = this.diskPath(d.index);
        if (!(await pathExists(path))) continue; // not created yet (before the initial replication)
        held.push(await lockFile(path, { what: `replica disk ${path}`, wait: 10 * 60_000 }));
      }
      return await fn();
    } finally {
      for (const l of held.reverse()) await l.release();
    }
  }

  private async applyLocked(opts: ApplyOptions): Promise<ApplyResult> {
    const history = opts.recoveryHistory ?? 0;
    const state = await this.readState();
    if (!state) throw new VhdsyncError('STATE', `${this.statePath}: the replica has no state; run the initial replication first`);
    const cycles = await this.shipped();
    const result: ApplyResult = { applied: [], bytes: 0, records: 0, lastApplied: state.lastAppliedSequence };
    let last = state.lastAppliedSequence;
    let resuming = state.applying;

    if (resuming !== null && !cycles.has(resuming)) {
      // The apply finished and its logs were removed, but the process stopped before saying so.
      last = resuming;
      resuming = null;
      await this.writeState({ lastAppliedSequence: last, applying: null, disks: await this.identities() });
      result.lastApplied = last;
    } else if (resuming === null) {
      // The replica disks must be exactly as the last applied log left them.
      for (const [i, d] of this.disks.entries()) {
        const was = state.disks.find((x) => x.name === d.name)?.identity;
        const now = await fileIdentity(this.diskPath(i));
        if (!was || !sameIdentity(was, now)) {
          return {
            ...result,
            problem: {
              reason: 'ReplicaLogOutOfSequence',
              evidence: `${this.diskPath(i)}: the replica disk changed since log ${last} was applied (${identityChange(was, now)}); it was restored from a backup or modified, so the next log would apply out of sequence`,
            },
          };
        }
      }
    }
    for (const [seq, files] of cycles) {
      const again = resuming !== null && seq === resuming;
      if (!again && seq <= last) {
        return { ...result, problem: { reason: 'ReplicaLogOutOfSequence', evidence: `log ${seq} arrived but the replica has already applied up to log ${last}` } };
      }
      if (!again && seq !== last + 1) {
        return { ...result, problem: { reason: 'ReplicaLogOutOfSequence', evidence: `log ${seq} arrived but the replica expects log ${last + 1} next (it has applied up to log ${last})` } };
      }
      const invalid = await this.validate(seq, files);
      if (invalid) return { ...result, problem: { reason: 'ReplicaLogInvalid', evidence: invalid } };
      // An extended replica gets what is applied here: kept before the first write lands.
      await keepForExtended(this.vmDir, files);
      // A resumed apply would capture before-images that are already overwritten: drop the history.
      if (again) for (const d of this.disks) await dropHistory(this.diskPath(d.index));
      await this.writeState({ ...state, lastAppliedSequence: last, applying: seq });
      for (const d of this.disks) {
        const path = this.diskPath(d.index);
        const disk = await openDisk(path);
        const undo = UndoCapture.begin(path, seq, history);
        // A test failover's view reads through to the replica: copy what is about to change into it.
        const view = await openDisk(testViewPathFor(path)).catch(() => undefined);
        try {
          const scan = await scanTrackingLog(files[d.index]!, async (r) => {
            if (undo) await undo.before(disk, r.offset, r.data.byteLength);
            if (view) {
              const keep = new Uint8Array(r.data.byteLength);
              await view.read(r.offset, keep);
              await view.write(r.offset, keep);
            }
            await disk.write(r.offset, r.data);
          });
          result.bytes += scan.size;
          result.records += scan.records;
          if (view) await view.flush();
          await disk.flush();
          await undo?.commit();
        } finally {
          await view?.close();
          await disk.close();
        }
      }
      for (const d of this.disks) await recordApplied(this.diskPath(d.index), seq, opts.now ?? new Date(), history);
      last = seq;
      resuming = null;
      for (const f of files) if (f) await removeIfExists(f);
      await this.writeState({ lastAppliedSequence: seq, applying: null, disks: await this.identities() });
      result.applied.push(seq);
      result.lastApplied = seq;
    }
    return result;
  }

  /** Check a whole cycle before any of it is applied. Returns the problem, or undefined. */
  private async validate(seq: number, files: (string | undefined)[]): Promise<string | undefined> {
    for (const d of this.disks) {
      const f = files[d.index];
      if (!f) return `log ${seq} has no log for disk ${d.index} (${d.name})`;
      let bad: string | undefined;
      const scan = await scanTrackingLog(f, (r) => {
        if (!bad && r.offset + r.data.byteLength > d.virtualSize) bad = `${f}: a write at offset ${r.offset} (${r.data.byteLength} bytes) is past the end of ${d.name} (${d.virtualSize} bytes)`;
      }).catch((e: Error) => {
        bad = `${f}: ${e.message.replace(`${f}: `, '')}`;
        return undefined;
      });
      if (bad) return bad;
      if (!scan) return `${f}: unreadable`;
      const h = scan.header;
      if (h.endOfLog === 0) return `${f}: end-of-log is 0: the log was never closed, it must not be applied`;
      if (scan.torn || scan.end !== h.endOfLog) return `${f}: a record is damaged (CRC-32C mismatch or cut short at byte ${scan.end} of ${h.endOfLog})`;
      if (h.sequence !== seq) return `${f}: its header says sequence ${h.sequence}, not ${seq}`;
      if (!sameId(h.vmId, idFromHex(this.vmId)) || !sameId(h.diskId, idFromHex(d.diskId)) || h.diskIndex !== d.index) {
        return `${f}: it belongs to another VM or disk (VM ${idHex(h.vmId)}, disk ${h.diskIndex})`;
      }
    }
    return undefined;
  }

  private shipped(): Promise<Map<number, (string | undefined)[]>> {
    return cycleLogs(this.logsDir, this.disks.length);
  }

  private async identities(): Promise<ReplicaState['disks']> {
    const out: ReplicaState['disks'] = [];
    for (const d of this.disks) out.push({ name: d.name, identity: await fileIdentity(this.diskPath(d.index)), ...(d.diskId ? { diskId: d.diskId } : {}) });
    return out;
  }

  private async readState(): Promise<ReplicaState | undefined> {
    try {
      const s = JSON.parse(await readFile(this.statePath, 'utf8')) as ReplicaState;
      if (s.version !== 1 || !Number.isSafeInteger(s.lastAppliedSequence)) throw new Error('shape');
      if (s.vmId !== this.vmId) {
        throw new VhdsyncError('STATE', `${this.statePath}: this replica belongs to another VM (id ${s.vmId}); choose another replica directory (for a replica server, another NAME in tls://HOST:PORT/NAME)`);
      }
      return s;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      if (e instanceof VhdsyncError) throw e;
      throw new VhdsyncError('STATE', `${this.statePath}: the replica state is damaged`);
    }
  }

  private async writeState(s: Pick<ReplicaState, 'lastAppliedSequence' | 'applying' | 'disks' | 'base' | 'relationship'>): Promise<void> {
    // The base and the relationship stay until a rebase sets them; disk ids stay when this site's caller lacks them.
    const prev = s.base === undefined || s.relationship === undefined || s.disks.some((d) => !d.diskId) ? await this.readState().catch(() => undefined) : undefined;
    const disks = s.disks.map((d) => (d.diskId ? d : { ...d, ...(prev?.disks.find((p) => p.name === d.name)?.diskId ? { diskId: prev.disks.find((p) => p.name === d.name)!.diskId } : {}) }));
    const base = s.base ?? prev?.base;
    const relationship = s.relationship ?? prev?.relationship;
    const state: ReplicaState = { version: 1, vmId: this.vmId, ...s, disks, ...(base ? { base } : {}), ...(relationship ? { relationship } : {}), updatedAt: new Date().toISOString() };
    await writeFileAtomic(this.statePath, JSON.stringify(state, null, 2) + '\n');
  }
}

/** A failover view is written by the failed-over VM (`run --failover-view`) while it runs: never removed or merged under it. */
async function withViewLocks<T>(views: string[], fn: () => Promise<T>): Promise<T> {
  const held: HeldLock[] = [];
  try {
    for (const view of views) {
      if (!(await pathExists(view))) continue;
      held.push(
        await lockFile(view, { what: `failed-over disk ${view}` }).catch((e: unknown) => {
          if (e instanceof VhdsyncError && e.code === 'BUSY') throw new VhdsyncError('BUSY', `${e.message.replace(/; wait for it.*$/, '')}; stop the failed-over VM first`);
          throw e;
        }),
      );
    }
    return await fn();
  } finally {
    for (const l of held.reverse()) await l.release();
  }
}

function missingFolder(dir: string, vm: string): VhdsyncError {
  return new VhdsyncError('NOT_FOUND', `${dir}: the replica folder is missing (unmounted or deleted?); restore it, or run the initial replication again (vhdsync start-initial-replication ${shellWord(vm)} --again)`);
}

/** Logs are copied in pieces of this size. */
const RECEIVE_CHUNK = 1024 * 1024;


function identityChange(was: FileIdentity | undefined, now: FileIdentity): string {
  if (!was) return 'no identity was recorded';
  if (was.ino !== now.ino) return 'the file was replaced';
  if (was.size !== now.size) return `size ${was.size} → ${now.size} bytes`;
  return `modification time ${was.mtimeNs} → ${now.mtimeNs} ns`;
}
