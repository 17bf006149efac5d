import type { Disk } from '../disk/disk.js';
import { openDisk } from '../disk/index.js';
import { appendRecords, type TrackRecord } from './log.js';
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
}

export interface TrackedDisk extends Disk {
  /** Several writes under one lock and one log sync (a workload's burst). */
  writeMany(writes: readonly TrackRecord[]): Promise<void>;
}

/**
 * Open a primary disk for writing through the tracker: while a tracking log exists beside the disk
 * (replication or a resync is tracking it), every write is appended to the log — durably, before the
 * disk sees it — so it can be replayed on the replica afterwards. Append and disk write happen under
 * the log's lock, so a seal or a switch never separates them.
 */
export async function openTrackedDisk(path: string, opts: TrackedDiskOptions = {}): Promise<TrackedDisk> {
  return new TrackedDiskImpl(await openDisk(path), trackingLogPathFor(path), opts);
}

class TrackedDiskImpl implements TrackedDisk {
  private readonly dataWriteId: Uint8Array;
  private wrote = false;
  private logBroken = false;

  constructor(
    private readonly inner: Disk,
    private readonly log: string,
    private readonly opts: TrackedDiskOptions,
  ) {
    this.dataWriteId = opts.dataWriteId ?? crypto.getRandomValues(new Uint8Array(16));
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
    if (writes.length === 0) return;
    let failure: Error | undefined;
    let appended: { size: number; bytes: number } | undefined;
    let untracked = false;
    await withLogLock(this.inner.path, async () => {
      try {
        const size = await appendRecords(this.log, writes, { fs: this.opts.fs, adopt: { pid: process.pid, dataWriteId: this.dataWriteId } });
        appended = { size, bytes: writes.reduce((n, w) => n + w.data.byteLength, 0) };
        this.wrote = true;
        this.logBroken = false;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        // No log: tracking is off. Anything else: the log could not take the write.
        if (err.code !== 'ENOENT') failure = err;
        else untracked = true;
        // Without someone to decide, keep log and disk in agreement: the write does not happen.
        if (failure && !this.opts.onLogError) throw failure;
      }
      for (const w of writes) await this.inner.write(w.offset, w.data);
    });
    if (appended) this.opts.onAppended?.(appended.size, appended.bytes);
    if (untracked) this.opts.onUntracked?.();
    if (failure) {
      if (!this.logBroken) this.opts.onLogError?.(failure);
      this.logBroken = true;
    }
  }

  flush() { return this.inner.flush(); }

  async close(): Promise<void> {
    await this.inner.close();
    // A graceful close: the log stays open for whoever tracks next, but no longer names us as its writer.
    if (this.wrote) await withLogLock(this.inner.path, () => releaseCurrentLog(this.inner.path, process.pid)).catch(() => undefined);
  }
}
