import { readdir, rename, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { VhdsyncError, ioError } from '../errors.js';
import { pathExists, removeIfExists, syncDir } from '../fsutil.js';
import {
  createTrackingLog, readTrackingHeader, sealTrackingLog, writeTrackingHeader,
  type LogInit, type TrackHeader,
} from './log.js';
import { openDisk, type Disk } from '../disk/index.js';
import { withLock } from '../pid-lock.js';
import { withFileLock } from '../writer-lock.js';

/**
 * The tracking-log files of one primary disk, all beside it (as Hyper-V keeps its .hrl files):
 *   <disk>.vhdsync-track          the open log that writes go to (absent = tracking is off)
 *   <disk>.vhdsync-track.<seq>    sealed logs waiting to be shipped, one per replication cycle
 *   <disk>.vhdsync-track.lock     the lock that orders appends, seals, switches and takes
 * A writer holds the lock for "append the record, then write the disk", so whoever seals or takes the
 * log under the lock sees a log and a disk that agree.
 */
export function trackingLogPathFor(primaryPath: string): string {
  return `${primaryPath}.vhdsync-track`;
}

export function sealedLogPathFor(primaryPath: string, sequence: number): string {
  return `${trackingLogPathFor(primaryPath)}.${String(sequence).padStart(8, '0')}`;
}

export function logLockPathFor(primaryPath: string): string {
  return `${trackingLogPathFor(primaryPath)}.lock`;
}

export interface SealedLog {
  sequence: number;
  path: string;
  size: number;
}

/**
 * The tracking log of a primary disk has one writer at a time (writers, sealing, a resync taking it),
 * keyed by the disk's identity (writer-lock.ts), so two names of one disk share one log lock.
 */
export async function withLogLock<T>(primaryPath: string, fn: () => Promise<T>): Promise<T> {
  const what = `the tracking log of ${primaryPath}`;
  // A disk that is gone (its logs may still be cleaned up) is locked by name beside it.
  if (!(await pathExists(primaryPath))) return withLock(logLockPathFor(primaryPath), fn, { what });
  return withFileLock(primaryPath, () => fn(), { sub: 'tracking-log', what, wait: 30_000 });
}

/** Hold the logs of several disks at once (always in the order given), for a cut consistent across disks. */
export async function withLogLocks<T>(primaryPaths: readonly string[], fn: () => Promise<T>): Promise<T> {
  if (primaryPaths.length === 0) return fn();
  const [first, ...rest] = primaryPaths;
  return withLogLock(first, () => withLogLocks(rest, fn));
}

// ---- Under the lock ----

/** The open log's header, or undefined when tracking is off for this disk. */
export async function currentLog(primaryPath: string): Promise<{ header: TrackHeader; size: number } | undefined> {
  try {
    return await readTrackingHeader(trackingLogPathFor(primaryPath));
  } catch (e) {
    if ((e as VhdsyncError).code === 'NOT_FOUND') return undefined;
    throw e;
  }
}

export async function createCurrentLog(primaryPath: string, init: LogInit): Promise<TrackHeader> {
  return createTrackingLog(trackingLogPathFor(primaryPath), init);
}

/** Seal the open log (end-of-log written) and move it to its sealed name. */
export async function sealCurrentLog(primaryPath: string): Promise<SealedLog | undefined> {
  const path = trackingLogPathFor(primaryPath);
  const cur = await currentLog(primaryPath);
  if (!cur) return undefined;
  const sealed = cur.header.endOfLog > 0 ? cur.header : await sealTrackingLog(path);
  const target = sealedLogPathFor(primaryPath, sealed.sequence);
  try {
    await stat(target);
    throw new VhdsyncError('EXISTS', `${target}: a sealed tracking log with sequence ${sealed.sequence} already exists`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await rename(path, target).catch((e) => {
    throw ioError(path, e);
  });
  await syncDir(dirname(primaryPath));
  return { sequence: sealed.sequence, path: target, size: sealed.endOfLog };
}

/** The writer `pid` is done with the open log: it stays open (end-of-log 0) but has no writer. */
export async function releaseCurrentLog(primaryPath: string, pid: number): Promise<void> {
  const cur = await currentLog(primaryPath);
  if (cur && cur.header.endOfLog === 0 && cur.header.writerPid === pid) {
    await writeTrackingHeader(trackingLogPathFor(primaryPath), { ...cur.header, writerPid: 0 });
  }
}

/** Stop tracking: the open log and (with `sealed`) every unshipped sealed log go. */
export async function removeLogs(primaryPath: string, opts: { sealed: boolean }): Promise<number> {
  let removed = (await removeIfExists(trackingLogPathFor(primaryPath))) ? 1 : 0;
  if (opts.sealed) for (const s of await listSealedLogs(primaryPath)) removed += (await removeIfExists(s.path)) ? 1 : 0;
  // A resync's taken logs: whatever resync comes next compares everything again.
  for (const p of await listTakenLogs(primaryPath)) removed += (await removeIfExists(p)) ? 1 : 0;
  return removed;
}

// ---- No lock needed ----

/** Sealed logs of this disk, oldest first. */
export async function listSealedLogs(primaryPath: string): Promise<SealedLog[]> {
  const dir = dirname(primaryPath);
  const prefix = `${basename(trackingLogPathFor(primaryPath))}.`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw ioError(dir, e);
  }
  const out: SealedLog[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const tail = name.slice(prefix.length);
    if (!/^\d+$/.test(tail)) continue;
    const path = join(dir, name);
    const size = await stat(path).then((s) => s.size, () => -1);
    if (size >= 0) out.push({ sequence: Number(tail), path, size });
  }
  return out.sort((a, b) => a.sequence - b.sequence);
}

/** Bytes held in this disk's tracking logs, open and sealed: what a failover now would lose. */
export async function logBytes(primaryPath: string): Promise<number> {
  let total = 0;
  for (const s of await listSealedLogs(primaryPath)) total += s.size;
  total += await stat(trackingLogPathFor(primaryPath)).then((s) => s.size, () => 0);
  return total;
}

// ---- Self-locking operations for a resync (host/resync) ----

/**
 * A resync starts tracking: with `fresh`, a log left by an earlier, abandoned run is dropped first; a
 * resumed run keeps appending to its log.
 */
export async function startTrackingLog(primaryPath: string, init: LogInit, opts: { fresh: boolean }): Promise<void> {
  await withLogLock(primaryPath, () => beginTracking(primaryPath, init, opts));
}

async function beginTracking(primaryPath: string, init: LogInit, opts: { fresh: boolean }): Promise<void> {
  if (opts.fresh) {
    await removeIfExists(trackingLogPathFor(primaryPath));
    await dropTakenLogs(primaryPath);
  }
  if (!(await currentLog(primaryPath))) await createCurrentLog(primaryPath, init);
}

/**
 * Open a primary disk read-only beside its running writer (a resync, a size check): under the log's
 * lock, when the writer (tracked-disk.ts) is between two batches and has published every write it
 * made, metadata included, so the file's size, its BAT and its data agree. With `tracking`, a resync's
 * log starts in the same hold: every write is then either in what this open sees, or in that log —
 * a block the guest allocates later reads as absent here, and its writes are replayed from the log.
 */
export async function openPrimary(primaryPath: string, tracking?: { init: LogInit; fresh: boolean }): Promise<Disk> {
  return withLogLock(primaryPath, async () => {
    if (tracking) await beginTracking(primaryPath, tracking.init, tracking);
    return openDisk(primaryPath, { readOnly: true });
  });
}

/**
 * A resync has merged: take every write tracked since it started, and in the same instant either stop
 * tracking or (for a replicating VM) open the log that normal replication continues with, so that no
 * write falls between the two. Returns every taken log not yet committed (see listTakenLogs); the
 * resync streams their records to the replica and drops them once it has committed.
 */
export async function takeTrackingLog(primaryPath: string, next?: LogInit): Promise<string[]> {
  return withLogLock(primaryPath, async () => {
    const path = trackingLogPathFor(primaryPath);
    const taken = await listTakenLogs(primaryPath);
    const last = taken.length > 0 ? Number(/(\d+)$/.exec(taken[taken.length - 1])![1]) : 0;
    const target = `${path}.taken-${last + 1}`;
    const moved = await rename(path, target).then(
      () => true,
      (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return false;
        throw ioError(path, e);
      },
    );
    if (moved) taken.push(target);
    if (next) await createCurrentLog(primaryPath, next);
    await syncDir(dirname(primaryPath));
    return taken;
  });
}

/**
 * Logs a resync took (`<log>.taken-N`), oldest first: kept until the replica has committed their
 * writes, so a link lost or a process killed between the take and the commit loses none of them —
 * the next attempt takes what was written since and sends every taken log again (in order; writes
 * are idempotent).
 */
export async function listTakenLogs(primaryPath: string): Promise<string[]> {
  const dir = dirname(primaryPath);
  const prefix = `${basename(trackingLogPathFor(primaryPath))}.taken-`;
  const names = await readdir(dir).catch((e) => {
    throw ioError(dir, e);
  });
  return names
    .filter((n) => n.startsWith(prefix) && /^\d+$/.test(n.slice(prefix.length)))
    .sort((a, b) => Number(a.slice(prefix.length)) - Number(b.slice(prefix.length)))
    .map((n) => join(dir, n));
}

/** The replica committed: the taken logs are done with. */
export async function dropTakenLogs(primaryPath: string): Promise<void> {
  for (const p of await listTakenLogs(primaryPath)) await removeIfExists(p);
}
