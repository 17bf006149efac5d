import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createOverlay, openDisk, type Disk } from '../disk/index.js';
import { undoInto, undoRecord, writeUndoLog } from '../disk/undo-log.js';
import { VhdsyncError, ioError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { jsonText } from '../json-text.js';
import { Fields, readStateFile, type StateFile } from '../state-file.js';
import { preResyncUndoPathFor, recoveryPointsDirFor } from '../resync/paths.js';

/**
 * Recovery points as undo logs of before-images (Hyper-V WS2012 R2's `.HRU` design, reference §2.2):
 * the replica disk always holds the latest point; when a cycle's log is applied, the bytes each record
 * is about to overwrite are read first and appended to `<replica>.recovery-points/<seq>.undo`.
 * A point "after cycle k" is reached from the latest state n by writing the undo logs n, n-1, …, k+1
 * (each one's records in reverse order, so the oldest before-image of a byte wins).
 *
 * Cost, per replica disk:
 * - time: one extra read of the same size before every applied write, plus an append to the undo log
 *   (about 2–3× the I/O of a plain apply, as Hyper-V quotes); nothing when `RecoveryHistory` is 0.
 * - space: the bytes written by every cycle applied since the oldest kept point (≈ the shipped log
 *   volume of up to 24 hours), never a copy of the disk.
 * - failover to a point: reading and writing the undo logs newer than it (into a differencing view for a
 *   test failover, in place for an unplanned one); in memory: one undo log at a time.
 *
 * Layout: `index.json` { points: [{ sequence, time }] } (the hourly points, oldest first) and one
 * `<seq>.undo` per applied cycle newer than the oldest point, in the undo-log format of
 * host/disk/undo-log.ts.
 */
export interface HourlyPoint {
  /** The point is the replica as it was right after this cycle was applied. */
  sequence: number;
  time: string;
  /** `--keep-pre-resync-point`: the replica before a resync, kept until the first new hourly point. */
  protected?: boolean;
}

interface PointIndex {
  version: 1;
  points: HourlyPoint[];
}

export interface RecoveryPoint {
  sequence: number;
  time: string;
  /** `Latest` is the replica itself; `Standard` an hourly point (crash-consistent). */
  kind: 'Latest' | 'Standard';
  /** Bytes of undo logs this point adds on disk (0 for the latest). */
  sizeOnDisk: number;
  /** The replica as it was before a resync (`--keep-pre-resync-point`). */
  protected?: boolean;
}

export const POINT_INTERVAL_MS = 3600_000;
export const MAX_RECOVERY_HISTORY = 24;

const indexPath = (replica: string) => join(recoveryPointsDirFor(replica), 'index.json');
const undoPath = (replica: string, seq: number) => join(recoveryPointsDirFor(replica), `${String(seq).padStart(8, '0')}.undo`);

const POINT_INDEX: StateFile<PointIndex> = {
  what: 'the recovery point index',
  version: 1,
  fix: 'a resync rebuilds the history',
  read: (f) => ({
    version: 1,
    points: f.array('points', (p, at) => {
      const x = Fields.of(p, at);
      const point: HourlyPoint = { sequence: x.int('sequence'), time: x.time('time') };
      if (x.optional('protected', (k) => x.boolean(k))) point.protected = true;
      return point;
    }),
  }),
};

export async function readPoints(replica: string): Promise<HourlyPoint[]> {
  return (await readStateFile(indexPath(replica), POINT_INDEX))?.points ?? [];
}

async function writePoints(replica: string, points: HourlyPoint[]): Promise<void> {
  await mkdir(recoveryPointsDirFor(replica), { recursive: true });
  await writeFileAtomic(indexPath(replica), jsonText({ version: 1, points } satisfies PointIndex));
}

/** The undo logs present, by sequence, ascending. */
async function undoLogs(replica: string): Promise<Map<number, { path: string; size: number }>> {
  const dir = recoveryPointsDirFor(replica);
  let names: string[] = [];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(dir, e);
  }
  const out: [number, { path: string; size: number }][] = [];
  for (const n of names) {
    const m = /^(\d+)\.undo$/.exec(n);
    if (!m) continue;
    const path = join(dir, n);
    out.push([Number(m[1]), { path, size: (await stat(path)).size }]);
  }
  return new Map(out.sort((a, b) => a[0] - b[0]));
}

/** Collects the before-images of one cycle's writes to one replica disk. */
export class UndoCapture {
  private chunks: Uint8Array[] = [];
  private constructor(readonly replica: string, readonly sequence: number) {}

  /** Undefined when no history is kept (RecoveryHistory 0): the apply costs nothing extra. */
  static begin(replica: string, sequence: number, history: number): UndoCapture | undefined {
    return history > 0 ? new UndoCapture(replica, sequence) : undefined;
  }

  /** Call before `disk.write(offset, length)`. */
  async before(disk: Disk, offset: number, length: number): Promise<void> {
    this.chunks.push(await undoRecord(disk, offset, length));
  }

  /** Written under a temporary name and renamed: an undo log is whole or absent. */
  async commit(): Promise<void> {
    const path = undoPath(this.replica, this.sequence);
    await mkdir(recoveryPointsDirFor(this.replica), { recursive: true });
    await writeUndoLog(path, async (add) => {
      for (const c of this.chunks) await add(c);
    });
  }
}

/**
 * After cycle `sequence` was applied at `now`: it becomes an hourly point if the newest one is at
 * least an hour old; points beyond `history` and the undo logs no point needs any more are deleted.
 */
export async function recordApplied(replica: string, sequence: number, now: Date, history: number): Promise<void> {
  let points = await readPoints(replica);
  if (history > 0) {
    const newest = points.at(-1);
    if (!newest || now.getTime() - Date.parse(newest.time) >= POINT_INTERVAL_MS) {
      // The first new hourly point replaces a pre-resync point.
      points = [...points.filter((p) => !p.protected), { sequence, time: now.toISOString() }];
    }
  } else {
    // Nothing was captured for this cycle: the chain back to a pre-resync point is broken.
    points = points.filter((p) => !p.protected);
  }
  // `history` points besides the latest: the one just recorded (if any) is the latest for now.
  const older = points.filter((p) => p.sequence < sequence);
  points = [...older.slice(Math.max(0, older.length - history)), ...points.filter((p) => p.sequence >= sequence)];
  await prune(replica, points);
}

async function prune(replica: string, points: HourlyPoint[]): Promise<void> {
  const oldest = points[0]?.sequence ?? Infinity;
  for (const [seq, u] of await undoLogs(replica)) if (seq <= oldest) await rm(u.path, { force: true });
  if (points.length === 0 && (await undoLogs(replica)).size === 0) {
    await rm(recoveryPointsDirFor(replica), { recursive: true, force: true });
    return;
  }
  await writePoints(replica, points);
}

/** The points of one replica disk, newest first: the latest (the replica itself), then the hourly ones. */
export async function listPoints(replica: string, latest: { sequence: number; time: string | null }): Promise<RecoveryPoint[]> {
  const undo = await undoLogs(replica);
  const out: RecoveryPoint[] = [{ sequence: latest.sequence, time: latest.time ?? new Date(0).toISOString(), kind: 'Latest', sizeOnDisk: 0 }];
  const points = await readPoints(replica);
  for (let i = points.length - 1; i >= 0; i--) {
    const p = points[i];
    if (p.sequence >= latest.sequence) continue;
    // The undo logs between this point and the next newer one are what this point costs.
    const upTo = i + 1 < points.length ? Math.min(points[i + 1].sequence, latest.sequence) : latest.sequence;
    let size = 0;
    for (const [seq, u] of undo) if (seq > p.sequence && seq <= upTo) size += u.size;
    out.push({ ...p, kind: 'Standard', sizeOnDisk: size, ...(p.protected ? { protected: true } : {}) });
  }
  return out;
}

/** Write the undo logs newer than `sequence`, newest first, into `disk`. */
async function rollBack(replica: string, disk: Disk, sequence: number, latest: number): Promise<void> {
  const undo = await undoLogs(replica);
  for (let seq = latest; seq > sequence; seq--) {
    const u = undo.get(seq);
    if (!u) throw new VhdsyncError('NOT_FOUND', `${replica}: the undo log of cycle ${seq} is missing; the recovery point after cycle ${sequence} cannot be rebuilt`);
    await undoInto(u.path, disk);
  }
}

/** A writable differencing view over the replica, as it was after cycle `sequence` (a test failover). */
export async function createPointView(replica: string, view: string, sequence: number, latest: number): Promise<void> {
  if ((await viewOf(view, replica)) === 'foreign') {
    throw new VhdsyncError('EXISTS', `${view}: a file of that name is already there and is not a view of ${replica}; move it away, then run the failover again`);
  }
  await createOverlay(replica, view, { overwrite: true });
  const disk = await openDisk(view);
  try {
    await rollBack(replica, disk, sequence, latest);
  } finally {
    await disk.close();
  }
}

/**
 * Make the replica itself the point after cycle `sequence` (an unplanned failover). Each undo record
 * holds absolute bytes, so running this again after a crash gives the same result. Older points stay
 * valid; newer ones are gone.
 */
export async function revertReplicaTo(replica: string, sequence: number, latest: number): Promise<void> {
  if (sequence < latest) {
    const disk = await openDisk(replica);
    try {
      await rollBack(replica, disk, sequence, latest);
    } finally {
      await disk.close();
    }
  }
  const points = (await readPoints(replica)).filter((p) => p.sequence <= sequence);
  for (const [seq, u] of await undoLogs(replica)) if (seq > sequence) await rm(u.path, { force: true });
  await prune(replica, points);
}

/**
 * After a resync merged new data into the replica, every point is built on the old baseline: delete
 * them (Hyper-V behaviour; the history is built again over time). Returns whether any existed.
 */
export async function deleteRecoveryPoints(replica: string): Promise<boolean> {
  const dir = recoveryPointsDirFor(replica);
  const had = await stat(dir).then(() => true, () => false);
  await rm(dir, { recursive: true, force: true });
  return had;
}

/**
 * A resync with `--keep-pre-resync-point` completed and the replica is rebased to `latest`: its
 * pre-resync undo log becomes the undo log of cycle `latest`, so the replica before the resync is the
 * point after `latest - 1`, protected until the first new hourly point (`recordApplied`). `time` is
 * when that replica was last replicated. Returns whether the point exists.
 */
export async function adoptPreResyncPoint(replica: string, latest: number, time: string): Promise<boolean> {
  const from = preResyncUndoPathFor(replica);
  const had = await stat(from).then(() => true, () => false);
  if (!had) return false;
  await rename(from, undoPath(replica, latest));
  await writePoints(replica, [{ sequence: latest - 1, time, protected: true }]);
  return true;
}

/** Before an apply resumed after a crash: the before-images it would capture are already overwritten. */
export async function dropHistory(replica: string): Promise<void> {
  await deleteRecoveryPoints(replica);
}

/**
 * Whether `view` is a view of `replica` (a differencing disk whose parent is that file), absent, or a
 * file of someone else's that must be neither replaced nor deleted.
 */
export async function viewOf(view: string, replica: string): Promise<'ours' | 'absent' | 'foreign'> {
  const id = await stat(view).catch(() => undefined);
  if (!id) return 'absent';
  const disk = await openDisk(view, { readOnly: true }).catch(() => undefined);
  if (!disk) return 'foreign';
  try {
    const parent = disk.parent ? await stat(disk.parent.path).catch(() => undefined) : undefined;
    const base = await stat(replica).catch(() => undefined);
    return parent && base && parent.ino === base.ino && parent.dev === base.dev ? 'ours' : 'foreign';
  } finally {
    await disk.close();
  }
}
