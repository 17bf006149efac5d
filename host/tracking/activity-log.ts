import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { getCore } from '../core/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';

/**
 * The activity log: the at most N "hot" extents of a primary disk that writes may be landing in, kept
 * crash-safe beside the disk (`<disk>.vhdsync-al`) as DRBD keeps its AL (reference/nbd-and-activity-log.md).
 * Rule (tracked-disk.ts): an extent is in a durable transaction before the first write into it is
 * issued; an extent leaves (least recently used first) only while no write is in flight and its writes
 * are in a durable tracking log. After a crash, these extents plus those of the unshipped logs are the
 * resync's scope (scope.ts).
 *
 * Layout: two slots of `slotBytes` (a multiple of 4 KiB), written alternately (transaction % 2), each a whole
 * transaction — the full active set — so a torn slot leaves the other, older set (which still holds every
 * extent a write was issued into: the new extent's write waits for this one's fdatasync).
 *   slot (little-endian): magic "VHDSAL01", version u32 = 1, slot bytes u32, transaction u64,
 *     extent size u32 at 24, count u32 at 28, capacity u32 at 32, the disk file's inode u64 at 40 and
 *     device u64 at 48 (0: not recorded), extents u32[count] at 64,
 *     CRC-32C u32 in the slot's last 4 bytes (over the slot with that field zero).
 * The inode and device bind the log to the file it describes: an activity log beside another file (the
 * disk replaced, or the log copied from another disk) says nothing of where that file was written.
 */
export const AL_MAGIC = 'VHDSAL01';
const AL_VERSION = 1;
const SLOT_HEAD = 64;
const SLOTS = 2;

export function activityLogPathFor(primaryPath: string): string {
  return `${primaryPath}.vhdsync-al`;
}

export function slotBytesFor(capacity: number): number {
  return Math.ceil((SLOT_HEAD + 4 * capacity + 4) / 4096) * 4096;
}

export interface AlTransaction {
  transaction: number;
  extentSize: number;
  capacity: number;
  /** Least recently used first. */
  extents: number[];
  /** The disk file the log was kept for (absent: not recorded, a log from before it was). */
  disk?: DiskFileId;
}

/** Which file a disk is: inode and device, as decimal strings (64-bit). */
export interface DiskFileId {
  ino: string;
  dev: string;
}

export async function diskFileId(path: string): Promise<DiskFileId> {
  const s = await stat(path, { bigint: true }).catch((e) => {
    throw ioError(path, e);
  });
  return { ino: String(s.ino), dev: String(s.dev) };
}

export function sameFile(a: DiskFileId, b: DiskFileId): boolean {
  return a.ino === b.ino && a.dev === b.dev;
}

/** Pure: one slot's bytes. */
export function encodeSlot(t: AlTransaction): Uint8Array {
  if (t.extents.length > t.capacity) throw new VhdsyncError('USAGE', `activity log: ${t.extents.length} extents exceed its capacity of ${t.capacity}`);
  const size = slotBytesFor(t.capacity);
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode(AL_MAGIC), 0);
  v.setUint32(8, AL_VERSION, true);
  v.setUint32(12, size, true);
  v.setUint32(16, t.transaction % 2 ** 32, true);
  v.setUint32(20, Math.floor(t.transaction / 2 ** 32), true);
  v.setUint32(24, t.extentSize, true);
  v.setUint32(28, t.extents.length, true);
  v.setUint32(32, t.capacity, true);
  if (t.disk) {
    v.setBigUint64(40, BigInt(t.disk.ino), true);
    v.setBigUint64(48, BigInt(t.disk.dev), true);
  }
  for (let i = 0; i < t.extents.length; i++) v.setUint32(SLOT_HEAD + 4 * i, t.extents[i], true);
  v.setUint32(size - 4, getCore().crc32c(b), true);
  return b;
}

/** Pure: a slot, or undefined when it is empty, torn or not a slot at all. */
export function decodeSlot(b: Uint8Array): AlTransaction | undefined {
  if (b.byteLength < 4096 || new TextDecoder().decode(b.subarray(0, 8)) !== AL_MAGIC) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const size = v.getUint32(12, true);
  if (v.getUint32(8, true) !== AL_VERSION || size > b.byteLength || size % 4096 !== 0) return undefined;
  const copy = new Uint8Array(b.subarray(0, size)); // a copy (b may be a Buffer, whose slice is a view)
  const crc = v.getUint32(size - 4, true);
  copy.fill(0, size - 4, size);
  if (getCore().crc32c(copy) !== crc) return undefined;
  const count = v.getUint32(28, true);
  const capacity = v.getUint32(32, true);
  const extentSize = v.getUint32(24, true);
  if (count > capacity || SLOT_HEAD + 4 * count > size - 4 || extentSize === 0) return undefined;
  const extents: number[] = [];
  for (let i = 0; i < count; i++) extents.push(v.getUint32(SLOT_HEAD + 4 * i, true));
  const ino = v.getBigUint64(40, true);
  const dev = v.getBigUint64(48, true);
  const disk = ino === 0n && dev === 0n ? undefined : { ino: String(ino), dev: String(dev) };
  return { transaction: v.getUint32(16, true) + v.getUint32(20, true) * 2 ** 32, extentSize, capacity, extents, ...(disk ? { disk } : {}) };
}

/** Pure: the newest intact transaction of a whole activity-log file (two slots of half its length each). */
export function parseActivityLog(file: Uint8Array): AlTransaction | undefined {
  const half = file.byteLength / SLOTS;
  if (!Number.isInteger(half) || half < 4096 || half % 4096 !== 0) return undefined;
  let best: AlTransaction | undefined;
  for (let s = 0; s < SLOTS; s++) {
    const t = decodeSlot(file.subarray(s * half, (s + 1) * half));
    if (t && (!best || t.transaction > best.transaction)) best = t;
  }
  return best;
}

/** The extents the activity log of this disk holds now (empty when there is none). */
export async function readActivityLog(primaryPath: string): Promise<AlTransaction | undefined> {
  const path = activityLogPathFor(primaryPath);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(path, e);
  }
  return parseActivityLog(bytes);
}

/**
 * The writer's side: the active set in memory (in LRU order) over the open file. `admit` makes every
 * given extent durable in the log before it returns; it is called under the tracking log's lock, with
 * no write in flight, so any extent may be evicted then (every earlier write is already in the durable
 * tracking log: appends are synced before the disk is written).
 */
export class ActivityLog {
  private readonly active = new Map<number, true>();
  private transaction: number;
  /** Transactions written by this process (a measure of the activity log's cost). */
  transactions = 0;

  private constructor(
    private readonly fh: FileHandle | undefined,
    readonly extentSize: number,
    readonly capacity: number,
    last: AlTransaction | undefined,
    private readonly disk?: DiskFileId,
  ) {
    this.transaction = last?.transaction ?? 0;
    // A log kept with another extent size: its extents stay until rewritten with ours — translate them.
    for (const e of last?.extents ?? []) {
      const from = Math.floor((e * last!.extentSize) / extentSize);
      const to = Math.floor(((e + 1) * last!.extentSize - 1) / extentSize);
      for (let x = from; x <= to; x++) this.active.set(x, true);
    }
    while (this.active.size > capacity) this.active.delete(this.active.keys().next().value!);
  }

  static async open(primaryPath: string, opts: { extentSize: number; capacity: number }): Promise<ActivityLog> {
    const path = activityLogPathFor(primaryPath);
    // Not recorded for a disk that is not a file yet (a log opened on its own, as tests do).
    const disk = await diskFileId(primaryPath).catch(() => undefined);
    const last = await readActivityLog(primaryPath);
    const otherFile = disk !== undefined && (!last?.disk || !sameFile(last.disk, disk));
    if (!last || last.extentSize !== opts.extentSize || last.capacity !== opts.capacity || otherFile) {
      // A new log, or one of another shape or file: written whole (both slots) and put in place
      // atomically, for this file (the extents it held stay: more scope, never less).
      const t = { transaction: (last?.transaction ?? 0) + 1, extentSize: opts.extentSize, capacity: opts.capacity, extents: [] as number[], disk };
      const carried = new ActivityLog(undefined, opts.extentSize, opts.capacity, last);
      t.extents = carried.extents;
      const slot = encodeSlot(t);
      const file = new Uint8Array(slot.byteLength * SLOTS);
      file.set(slot, (t.transaction % SLOTS) * slot.byteLength);
      await writeFileAtomic(path, file);
    }
    const fh = await open(path, 'r+').catch((e) => {
      throw ioError(path, e);
    });
    return new ActivityLog(fh, opts.extentSize, opts.capacity, await readActivityLog(primaryPath), disk);
  }

  has(extent: number): boolean {
    return this.active.has(extent);
  }

  get extents(): number[] {
    return [...this.active.keys()];
  }

  /** Make these extents active (durably) before writes into them are issued. */
  async admit(extents: readonly number[]): Promise<void> {
    let added = false;
    for (const e of extents) {
      if (this.active.delete(e)) this.active.set(e, true); // most recently used
      else {
        this.active.set(e, true);
        added = true;
      }
    }
    if (!added) return;
    if (extents.length > this.capacity) throw new VhdsyncError('USAGE', `activity log: one write batch touches ${extents.length} extents, more than its ${this.capacity}`);
    const keep = new Set(extents);
    for (const e of this.active.keys()) {
      if (this.active.size <= this.capacity) break;
      if (!keep.has(e)) this.active.delete(e);
    }
    await this.commit();
  }

  private async commit(): Promise<void> {
    this.transaction++;
    const slot = encodeSlot({ transaction: this.transaction, extentSize: this.extentSize, capacity: this.capacity, extents: this.extents, disk: this.disk });
    const at = (this.transaction % SLOTS) * slot.byteLength;
    let done = 0;
    const fh = this.fh!;
    while (done < slot.byteLength) done += (await fh.write(slot, done, slot.byteLength - done, at + done)).bytesWritten;
    await fh.datasync();
    this.transactions++;
  }

  async close(): Promise<void> {
    await this.fh?.close();
  }
}
