import type { Disk } from '../disk/disk.js';
import { openDisk } from '../disk/index.js';
import { ActivityLog } from './activity-log.js';
import { markDirty } from './dirty-map.js';
import { DEFAULT_AL_EXTENTS, DEFAULT_EXTENT_SIZE, extentsOf } from './extents.js';
import { LogAppender, appendRecords, syncTrackingLog, type AppendOptions, type TrackRecord } from './log.js';
import type { LogFs } from './log-fs.js';
import { releaseCurrentLog, trackingLogPathFor, withLogLock } from './log-files.js';

export { trackingLogPathFor } from './log-files.js';

export interface TrackedDiskOptions {
  /** File layer for the log appends (tests inject failures here). */
  fs?: LogFs;
  /** The writing session's data-write id, stamped into each log this disk appends to. */
  dataWriteId?: Uint8Array;
  /**
   * A log append failed. The write still goes to the disk (the guest must not notice), but the log no
   * longer holds every write: the caller decides what that means (replication: resync required).
   */
  onLogError?: (error: Error) => void;
  /** After each append, the size of the log it went to. */
  onAppended?: (logSize: number, bytes: number) => void;
  /** A write went to the disk with no log beside it (tracking off — or the log is gone). */
  onUntracked?: () => void;
  /** The activity log's extent size and capacity (defaults: extents.ts). */
  extentSize?: number;
  activityLogExtents?: number;
  /**
   * Keep the activity log (default). Off only to measure its cost (bench/extents.mjs; the environment
   * variable VHDSYNC_ACTIVITY_LOG=off does the same for a `vhdsync run` being measured): without it a
   * crash's scope rests on the logs alone.
   */
  activityLog?: boolean;
  /**
   * Appends are not fsynced one by one; `flush()` makes the log durable, then the disk (an NBD
   * client's FLUSH or FUA). A write is still in the log before the disk sees it, and a crash before
   * the flush leaves the log open, which requires a resync: the replica cannot miss the write.
   */
  logSyncOnFlush?: boolean;
}

export interface TrackedDisk extends Disk {
  /** Several writes under one lock and one log sync (a workload's burst). */
  writeMany(writes: readonly TrackRecord[]): Promise<void>;
  /**
   * Run `fn` holding the log's lock, so that the writeMany/flush calls it makes do not take it again
   * each (an NBD client's stream of batches). Keep it short: a seal or a switch waits meanwhile.
   */
  holdLog<T>(fn: () => Promise<T>): Promise<T>;
}

/**
 * Open a primary disk for writing through the tracker: while a tracking log exists beside the disk
 * (replication or a resync is tracking it), every write is appended to the log — durably, before the
 * disk sees it — so it can be replayed on the replica afterwards. Append and disk write happen under
 * the log's lock, so a seal or a switch never separates them. A tracker with `onLogError` (a running
 * VM) writes the disk beside the log's append instead of after it: a crash between the two is covered
 * by the activity log (below) and the open log it leaves, a failed append by the resync it requires.
 *
 * Beside the log, the activity log (activity-log.ts) records a write's extents durably before the first
 * write into them; with no log but a dirty map (dirty-map.ts: bitmap mode), the write's extents are
 * marked there durably instead. So a crash never leaves a difference outside what scope.ts collects.
 */
export async function openTrackedDisk(path: string, opts: TrackedDiskOptions = {}): Promise<TrackedDisk> {
  return new TrackedDiskImpl(await openDisk(path), trackingLogPathFor(path), opts);
}

class TrackedDiskImpl implements TrackedDisk {
  private readonly dataWriteId: Uint8Array;
  private wrote = false;
  private logBroken = false;
  private al: ActivityLog | undefined;
  private readonly extentSize: number;
  private readonly alCapacity: number;
  private held = false;
  /** The log kept open while its lock is held (holdLog): closed before the lock goes. */
  private appender: LogAppender | undefined;

  constructor(
    private readonly inner: Disk,
    private readonly log: string,
    private readonly opts: TrackedDiskOptions,
  ) {
    this.dataWriteId = opts.dataWriteId ?? crypto.getRandomValues(new Uint8Array(16));
    this.extentSize = opts.extentSize ?? DEFAULT_EXTENT_SIZE;
    this.alCapacity = opts.activityLogExtents ?? DEFAULT_AL_EXTENTS;
    this.activityLogOn = !(opts.activityLog === false || (opts.activityLog === undefined && process.env.VHDSYNC_ACTIVITY_LOG === 'off'));
  }

  /** Activity-log transactions this tracker wrote (its cost in the write path). */
  get activityLogTransactions(): number {
    return this.al?.transactions ?? 0;
  }
  get path() { return this.inner.path; }
  get format() { return this.inner.format; }
  get type() { return this.inner.type; }
  get virtualSize() { return this.inner.virtualSize; }
  get blockSize() { return this.inner.blockSize; }
  get sectorSize() { return this.inner.sectorSize; }
  get blockCount() { return this.inner.blockCount; }
  get readOnly() { return this.inner.readOnly; }
  get parent() { return this.inner.parent; }
  blockStatus(index: number) { return this.inner.blockStatus(index); }
  read(offset: number, into: Uint8Array) { return this.inner.read(offset, into); }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.writeMany([{ offset, data }]);
  }

  async writeMany(writes: readonly TrackRecord[]): Promise<void> {
    // A burst over more extents than the activity log holds goes in parts (each part's extents fit).
    let part: TrackRecord[] = [];
    const extents = new Set<number>();
    for (const w of this.pieces(writes)) {
      const mine = extentsOf(w.offset, w.data.byteLength, this.extentSize);
      if (part.length > 0 && extents.size + mine.length > this.alCapacity) {
        await this.writePart(part);
        part = [];
        extents.clear();
      }
      part.push(w);
      for (const e of mine) extents.add(e);
    }
    await this.writePart(part);
  }

  /** A single write over more extents than the activity log holds is cut at extent boundaries. */
  private *pieces(writes: readonly TrackRecord[]): Generator<TrackRecord> {
    for (const w of writes) {
      if (extentsOf(w.offset, w.data.byteLength, this.extentSize).length <= this.alCapacity) {
        yield w;
        continue;
      }
      let at = 0;
      while (at < w.data.byteLength) {
        const offset = w.offset + at;
        const end = Math.min(w.offset + w.data.byteLength, (Math.floor(offset / this.extentSize) + this.alCapacity) * this.extentSize);
        yield { offset, data: w.data.subarray(at, end - w.offset) };
        at = end - w.offset;
      }
    }
  }

  /** Read once: process.env is a slow lookup to make per batch. */
  private readonly activityLogOn: boolean;

  private async admitExtents(writes: readonly TrackRecord[]): Promise<void> {
    if (!this.activityLogOn) return;
    const extents = new Set<number>();
    for (const w of writes) for (const e of extentsOf(w.offset, w.data.byteLength, this.extentSize)) extents.add(e);
    this.al ??= await ActivityLog.open(this.inner.path, { extentSize: this.extentSize, capacity: this.alCapacity });
    await this.al.admit([...extents]);
  }

  private async writePart(writes: readonly TrackRecord[]): Promise<void> {
    if (writes.length === 0) return;
    let failure: Error | undefined;
    let appended: { size: number; bytes: number } | undefined;
    let untracked = false;
    await this.locked(async () => {
      const toDisk = () => writeInOrder(this.inner, writes);
      let diskDone = false;
      let diskFailure: { error: unknown } | undefined;
      // The disk's write may run beside the log's (on two cores) only where a crash between the two is
      // covered: the activity log holds the extents durably first, a log left open by a dead writer
      // requires a resync (of those extents), and a failed log append has someone to decide
      // (onLogError: the VM then requires a resync). Otherwise the log's append comes first.
      const beside = this.activityLogOn && this.opts.onLogError !== undefined;
      try {
        const size = await this.append(writes, {
          fs: this.opts.fs,
          adopt: { pid: process.pid, dataWriteId: this.dataWriteId },
          beforeAppend: () => this.admitExtents(writes),
          alongside: beside
            ? async () => {
                await toDisk().catch((error: unknown) => (diskFailure = { error }));
                diskDone = true;
              }
            : undefined,
          sync: !this.opts.logSyncOnFlush,
        });
        appended = { size, bytes: writes.reduce((n, w) => n + w.data.byteLength, 0) };
        this.wrote = true;
        this.logBroken = false;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // No log: bitmap mode (a dirty map takes the extents), or tracking is off. Anything else: the
        // log could not take the write.
        if (err.code !== 'ENOENT') failure = err;
        else {
          try {
            untracked = !(await markDirty(this.inner.path, writes.map((w) => ({ offset: w.offset, length: w.data.byteLength }))));
          } catch (m) {
            failure = m as Error;
          }
        }
        // Without someone to decide, keep log and disk in agreement: the write does not happen.
        if (failure && !this.opts.onLogError) throw failure;
      }
      if (!diskDone) await toDisk();
      if (diskFailure) throw diskFailure.error;
    });
    if (appended) this.opts.onAppended?.(appended.size, appended.bytes);
    if (untracked) this.opts.onUntracked?.();
    if (failure) {
      if (!this.logBroken) this.opts.onLogError?.(failure);
      this.logBroken = true;
    }
  }

  /**
   * One append: under a hold of the log's lock through the log kept open for the hold (no open, stat
   * and header check per batch: nothing else touches the log while we hold its lock), else on its own.
   */
  private async append(writes: readonly TrackRecord[], opts: AppendOptions): Promise<number> {
    if (!this.held) return appendRecords(this.log, writes, opts);
    this.appender ??= await LogAppender.open(this.log, this.opts.fs);
    try {
      return await this.appender.append(writes, opts);
    } finally {
      if (this.appender.broken) await this.dropAppender();
    }
  }

  private async dropAppender(): Promise<void> {
    const a = this.appender;
    this.appender = undefined;
    await a?.close();
  }

  async flush(): Promise<void> {
    // Under the log's lock, as every change of the file (its metadata is written now).
    await this.locked(async () => {
      // The log first: a disk write made durable is never missing from a durable log.
      if (this.opts.logSyncOnFlush && this.wrote) await this.syncLog();
      await this.inner.flush();
    });
  }

  private async syncLog(): Promise<void> {
    if (this.held && this.appender) await this.appender.sync();
    else await syncTrackingLog(this.log, this.opts.fs);
  }

  async holdLog<T>(fn: () => Promise<T>): Promise<T> {
    return withLogLock(this.inner.path, async () => {
      this.held = true;
      try {
        return await fn();
      } finally {
        try {
          await this.publishInner();
        } finally {
          this.held = false;
          // The lock goes next: a seal or a switch may replace the log, so the next hold opens it again.
          await this.dropAppender();
        }
      }
    });
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held) return fn();
    return withLogLock(this.inner.path, async () => {
      try {
        return await fn();
      } finally {
        await this.publishInner();
      }
    });
  }

  /**
   * Before the log's lock goes: whoever takes it next (a resync starting its log and opening the disk,
   * log-files.ts openPrimary) finds every write made so far in the file itself, metadata included —
   * not only in this process's memory. The log first (a disk write made durable is never missing from
   * a durable log); costs a datasync only after a write that allocated a block or changed a bitmap.
   */
  private async publishInner(): Promise<void> {
    if (!this.inner.unpublished) return;
    if (this.opts.logSyncOnFlush && this.wrote) await this.syncLog();
    await this.inner.publish?.();
  }

  async close(): Promise<void> {
    await this.al?.close().catch(() => undefined);
    // Under the log's lock, as every write: a resync opening the disk meanwhile sees it whole.
    // (A failure here is the close's own flush's to report.)
    if (!this.inner.readOnly) await withLogLock(this.inner.path, () => this.inner.flush()).catch(() => undefined);
    await this.inner.close();
    // A graceful close: the log stays open for whoever tracks next, but no longer names us as its writer.
    if (this.wrote) await withLogLock(this.inner.path, () => releaseCurrentLog(this.inner.path, process.pid)).catch(() => undefined);
  }
}

/**
 * The writes to the disk in order; each run of contiguous ones (a guest writing sequentially) in one
 * writeRun where the disk has it: one system call instead of one per write.
 */
async function writeInOrder(disk: Disk, writes: readonly TrackRecord[]): Promise<void> {
  for (let i = 0; i < writes.length; ) {
    let j = i + 1;
    let end = writes[i].offset + writes[i].data.byteLength;
    while (disk.writeRun && j < writes.length && writes[j].offset === end) end += writes[j++].data.byteLength;
    if (j - i === 1) await disk.write(writes[i].offset, writes[i].data);
    else await disk.writeRun!(writes[i].offset, writes.slice(i, j).map((w) => w.data));
    i = j;
  }
}
