import type { Disk } from '../disk/disk.js';
import type { TrackRecord } from '../tracking/log.js';
import { STATE_HOLE, STATE_ZERO } from './protocol.js';
import { MiB } from '../units.js';

/** The largest payload one request may carry (2^25: what every client accepts [proto §Block size constraints]). */
export const MAX_PAYLOAD = 32 * MiB;
export const PREFERRED_BLOCK = 4096;
/** Writes gathered into one log append (one lock, one fsync) are bounded by this many bytes. */
const MAX_BATCH_BYTES = 32 * MiB;
/** Zeroes (TRIM, WRITE_ZEROES) are tracked as writes of zeros, cut into records of this size. */
const ZERO_RECORD = MiB;
const ZEROS = new Uint8Array(ZERO_RECORD);

/** Where an export's writes go: through the tracker (a running VM's disk) or nowhere (read-only). */
export interface ExportTarget {
  disk: Disk;
  /** Append the writes to the tracking log and write them to the disk (several at once). */
  writeMany?: (writes: readonly TrackRecord[]) => Promise<void>;
  /** Hold the log's lock around a run of batches (TrackedDisk.holdLog). */
  holdLog?: <T>(fn: () => Promise<T>) => Promise<T>;
}

/** Batches written under one hold of the log's lock stop after this long, so a seal never waits long. */
const HOLD_MS = 50;
/**
 * A hold outlives an empty queue by this long: a queue-depth client sends its next writes as soon as
 * the replies reach it, and taking the lock again for each batch costs more than the wait.
 */
const LINGER_MS = 3;

export interface Extent {
  length: number;
  flags: number;
}

interface Pending {
  write?: TrackRecord;
  flush: boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * One disk served over NBD. Writes arriving while a batch is being written are gathered into the next
 * batch: one tracking-log append (durable: it is fsynced before the disk sees the data) and one lock
 * for many client requests, so a queue-depth client pays the log's fsync once per batch, not per
 * write. A write is acknowledged only after its batch is in the log and on the disk. FLUSH (and FUA)
 * then make the disk's data durable too. Reads wait while a batch changes the disk (a VHD's BAT may be
 * growing), then run side by side.
 */
export class DiskExport {
  readonly names: string[];
  readonly size: number;
  readonly minBlock: number;
  readonly readOnly: boolean;
  private queue: Pending[] = [];
  private running = false;
  private reads = 0;
  private readsDrained?: () => void;
  private writeGate?: Promise<void>;
  private arrived?: () => void;

  constructor(
    names: string[],
    readonly description: string,
    private readonly target: ExportTarget,
    readOnly: boolean,
  ) {
    this.names = names;
    this.size = target.disk.virtualSize;
    this.readOnly = readOnly || !target.writeMany;
    const sector = target.disk.sectorSize;
    this.minBlock = this.size % sector === 0 ? sector : 1;
  }

  get preferredBlock(): number {
    return Math.max(PREFERRED_BLOCK, this.minBlock);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    while (this.writeGate) await this.writeGate;
    this.reads++;
    try {
      await this.target.disk.read(offset, into);
    } finally {
      if (--this.reads === 0) this.readsDrained?.();
    }
  }

  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    return this.enqueue({ offset, data }, fua);
  }

  /** TRIM and WRITE_ZEROES: the guest's view is zeros there, so the replica must see zeros written. */
  async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += ZERO_RECORD) {
      const n = Math.min(ZERO_RECORD, length - at);
      parts.push(this.enqueue({ offset: offset + at, data: ZEROS.subarray(0, n) }, fua && at + n >= length));
    }
    await Promise.all(parts);
  }

  flush(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ flush: true, resolve, reject });
      this.kick();
    });
  }

  private enqueue(write: TrackRecord, fua: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ write, flush: fua, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    this.arrived?.();
    if (this.running) return;
    this.running = true;
    void this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const hold = this.target.holdLog ?? ((fn) => fn());
        await hold(async () => {
          const until = performance.now() + HOLD_MS;
          while (performance.now() < until) {
            if (this.queue.length === 0 && !(await this.nextRequest(Math.min(LINGER_MS, until - performance.now())))) break;
            await this.writeBatch();
          }
        });
      }
    } catch (e) {
      // The log's lock could not be taken: every waiting request fails with the reason.
      for (const p of this.queue.splice(0)) p.reject(e);
    } finally {
      this.running = false;
      if (this.queue.length > 0) this.kick();
    }
  }

  /** True once a write or flush is queued, false when `ms` pass first. */
  private nextRequest(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(false), Math.max(0, ms));
      const settle = (queued: boolean) => {
        clearTimeout(timer);
        this.arrived = undefined;
        resolve(queued);
      };
      // Woken by the first request of a read from the socket: the rest of that read joins it.
      this.arrived = () => {
        this.arrived = undefined;
        setImmediate(() => settle(true));
      };
    });
  }

  /** The writes (and flushes) waiting now, up to MAX_BATCH_BYTES: one log append, one disk pass. */
  private async writeBatch(): Promise<void> {
    let bytes = 0;
    let take = 0;
    for (const p of this.queue) {
      const n = p.write?.data.byteLength ?? 0;
      if (take > 0 && bytes + n > MAX_BATCH_BYTES) break;
      bytes += n;
      take++;
    }
    const batch = this.queue.splice(0, take);
    let open!: () => void;
    this.writeGate = new Promise((r) => (open = r));
    try {
      if (this.reads > 0) await new Promise<void>((r) => (this.readsDrained = r));
      this.readsDrained = undefined;
      const writes = batch.flatMap((p) => (p.write ? [p.write] : []));
      if (writes.length > 0) await this.target.writeMany!(writes);
      if (batch.some((p) => p.flush)) await this.target.disk.flush();
      for (const p of batch) p.resolve();
    } catch (e) {
      for (const p of batch) p.reject(e);
    } finally {
      this.writeGate = undefined;
      open();
    }
  }

  /** base:allocation extents from `offset` covering at most `length` bytes (one with `one`). */
  allocation(offset: number, length: number, one: boolean): Extent[] {
    const disk = this.target.disk;
    const out: Extent[] = [];
    const end = Math.min(this.size, offset + length);
    let at = offset;
    while (at < end) {
      const i = Math.floor(at / disk.blockSize);
      const blockEnd = Math.min(end, (i + 1) * disk.blockSize);
      const s = disk.blockStatus(i);
      const flags = s === 'absent' ? STATE_HOLE | STATE_ZERO : s === 'zero' ? STATE_ZERO : 0;
      const last = out[out.length - 1];
      if (last && last.flags === flags) last.length += blockEnd - at;
      else {
        if (one && out.length === 1) break;
        out.push({ length: blockEnd - at, flags });
      }
      at = blockEnd;
    }
    return out;
  }
}
