import { randomUUID } from 'node:crypto';
import { mkdir, open, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createVhd, createVhdx } from '../disk/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { pathExists, removeIfExists, syncDir, tempPathFor, writeFileAtomic } from '../fsutil.js';
import { jsonText } from '../json-text.js';
import { lockFile, type HeldLock } from '../writer-lock.js';
import { fileIdentity } from '../file-identity.js';
import { shellWord } from './vm-name.js';
import { startKeeping } from './extended-logs.js';
import { logName } from './log-folder.js';
import { cancelResync } from '../resync/resync.js';
import { withLock } from '../pid-lock.js';
import { readCheckpoint } from '../resync/checkpoint.js';
import { checkpointPathFor } from '../resync/paths.js';
import { mergeJournalPath, mergeOverlay } from '../disk/merge.js';
import { adoptPreResyncPoint, createPointView, viewOf, deleteRecoveryPoints, listPoints, revertReplicaTo, type RecoveryPoint } from './recovery-points.js';
import { applyCycles, diskIdentities } from './apply.js';
import { failoverViewPathFor, replicaDiskPathFor, SITE_FILES, testViewPathFor } from './site-files.js';
import { readFailoverRecord, readReplicaState, writeReplicaState, type ReplicaFolderState, type ReplicaState } from './site-state.js';
import type { ApplyOptions, ApplyResult, FailoverRecord, LogWriter, RebaseOptions, ReplicaDiskSpec, ReplicaSite } from './site.js';
import { MiB } from '../units.js';

/**
 * The replica site of one VM in a local directory (site-files.ts names its files; the replica of each
 * disk can be checked with `vhdsync checksum` or qemu-img). Logs are applied by apply.ts; failover
 * acts on the site's own files (failover.ts in the replication layer decides).
 */
export class LocalReplicaSite implements ReplicaSite {
  readonly vmDir: string;
  readonly logsDir: string;
  readonly statePath: string;

  constructor(
    readonly root: string,
    readonly vmName: string,
    readonly vmId: string,
    readonly disks: readonly ReplicaDiskSpec[],
    /** The VM's name for the commands messages suggest (vmName is its folder; vm-name.ts). */
    label = vmName,
    /** The command messages suggest to copy the replica again (the extended replica's needs --extended). */
    private readonly again = `vhdsync start-initial-replication ${shellWord(label)} --again`,
  ) {
    this.vmDir = join(root, vmName);
    this.logsDir = join(this.vmDir, SITE_FILES.logs);
    this.statePath = join(this.vmDir, SITE_FILES.state);
  }

  get where(): string {
    return this.vmDir;
  }

  /**
   * The replica as its own folder describes it, without the primary's record (the replica side's view,
   * view.ts): its disks are named in `replica.json`. Undefined when there is none.
   */
  static async fromFolder(root: string, vmName: string): Promise<{ site: LocalReplicaSite; state: ReplicaFolderState } | undefined> {
    const s = await readReplicaState(join(root, vmName, SITE_FILES.state));
    if (!s) return undefined;
    // Only plain file names: a damaged or foreign state never leads out of the folder.
    const disks = s.disks.filter((d) => /^[A-Za-z0-9][A-Za-z0-9._ -]{0,254}$/.test(d.name));
    const specs: ReplicaDiskSpec[] = disks.map((d, index) => ({ index, name: d.name, diskId: '', virtualSize: 0, format: 'raw', sectorSize: 512 }));
    return {
      site: new LocalReplicaSite(root, vmName, s.vmId, specs),
      state: {
        vmId: s.vmId, lastAppliedSequence: s.lastAppliedSequence, applying: s.applying, updatedAt: s.updatedAt, disks: disks.map((d) => d.name),
        diskIds: disks.map((d) => d.diskId || undefined),
        base: s.base ?? null,
        relationship: s.relationship === 'Extended' ? 'Extended' : 'Simple',
      },
    };
  }

  diskPath(index: number): string {
    return this.disks[index].path ?? join(this.vmDir, this.disks[index].name);
  }

  static diskPathFor(root: string, vmName: string, primaryPath: string): string {
    return replicaDiskPathFor(root, vmName, primaryPath);
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
    const missing = (what: string) => new VhdsyncError('NOT_FOUND', `${what}: the replica is missing (unmounted or deleted?); restore it, or run the initial replication again: ${this.again}`);
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
      if (e.code === 'ENOENT') throw missingFolder(this.vmDir, this.again);
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
    await this.writeState({ lastAppliedSequence: lastApplied, applying: null, disks: await diskIdentities(this), base: randomUUID(), ...(opts.extended ? { relationship: 'Extended' as const } : {}) });
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
    return readFailoverRecord(join(this.vmDir, SITE_FILES.failover));
  }

  async setFailoverRecord(record: FailoverRecord | null): Promise<void> {
    const path = join(this.vmDir, SITE_FILES.failover);
    if (record) await writeFileAtomic(path, jsonText(record));
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
      // Only a view of this replica: a file of that name that is someone else's stays.
      if ((await viewOf(view, this.diskPath(d.index))) === 'ours' && (await removeIfExists(view))) removed.push(view);
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
      await removeIfExists(join(this.vmDir, SITE_FILES.failover));
      await removeIfExists(this.statePath);
    });
  }

  async resyncPhase(index: number): Promise<string | null> {
    const cp = await readCheckpoint(checkpointPathFor(this.diskPath(index))).catch(() => undefined);
    return cp?.phase ?? null;
  }

  /** Apply every shipped cycle that follows the last applied one, in order. */
  apply(opts: ApplyOptions = {}): Promise<ApplyResult> {
    return this.exclusive(() => applyCycles(this, opts));
  }

  /**
   * What reads or writes the replica disks as a whole — apply, rebase, a test failover's views, an
   * unplanned failover's revert — runs one at a time across processes (the service applying while
   * `start-failover --test` builds its views must not let either see the other half-done).
   */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await stat(this.vmDir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') throw missingFolder(this.vmDir, this.again);
      throw ioError(this.vmDir, e);
    });
    return withLock(join(this.vmDir, SITE_FILES.lock), () => this.withDiskLocks(fn), { what: `the replica site ${this.vmDir}`, timeoutMs: 10 * 60_000 });
  }

  /**
   * One writer per replica disk (ARCHITECTURE.md), keyed by its identity: a resync of a disk (local, served,
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

  /** The site's `replica.json` (apply.ts reads and writes it too); a replica of another VM is refused. */
  async readState(): Promise<ReplicaState | undefined> {
    const s = await readReplicaState(this.statePath);
    if (s && s.vmId !== this.vmId) {
      throw new VhdsyncError('STATE', `${this.statePath}: this replica belongs to another VM (id ${s.vmId}); choose another replica directory (for a replica server, another NAME in tls://HOST:PORT/NAME)`);
    }
    return s;
  }

  async writeState(s: Pick<ReplicaState, 'lastAppliedSequence' | 'applying' | 'disks' | 'base' | 'relationship'>): Promise<void> {
    // The base and the relationship stay until a rebase sets them; disk ids stay when this site's caller lacks them.
    // Another VM's replica is never written over (readState refuses it); only damage is written over.
    const prev = s.base === undefined || s.relationship === undefined || s.disks.some((d) => !d.diskId) ? await this.readState().catch((e: unknown) => {
      if (e instanceof VhdsyncError && e.code === 'STATE' && e.message.includes('belongs to another VM')) throw e;
      return undefined;
    }) : undefined;
    const disks = s.disks.map((d) => (d.diskId ? d : { ...d, ...(prev?.disks.find((p) => p.name === d.name)?.diskId ? { diskId: prev.disks.find((p) => p.name === d.name)!.diskId } : {}) }));
    const base = s.base ?? prev?.base;
    const relationship = s.relationship ?? prev?.relationship;
    await writeReplicaState(this.statePath, this.vmId, { ...s, disks, ...(base ? { base } : {}), ...(relationship ? { relationship } : {}) });
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

function missingFolder(dir: string, again: string): VhdsyncError {
  return new VhdsyncError('NOT_FOUND', `${dir}: the replica folder is missing (unmounted or deleted?); restore it, or run the initial replication again (${again})`);
}

/** Logs are copied in pieces of this size. */
const RECEIVE_CHUNK = MiB;


