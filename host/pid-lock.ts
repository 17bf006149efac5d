import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { VhdsyncError } from './errors.js';

/**
 * A lock between processes: a file created with O_EXCL that holds the owner's pid. A lock whose owner
 * is no longer alive (SIGKILL, crash) is stale and is taken over. Used for the tracking log of a disk
 * (writers, sealing, resync), a VM's persisted state, the running VM and the process running a resync.
 */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A lock file that exists but holds no pid yet is given this long to get one before it counts as stale. */
const EMPTY_GRACE_MS = 5_000;

export type Release = () => Promise<void>;

/** The live pid holding `path`, or undefined when the lock is free or stale. */
export async function lockHolder(path: string): Promise<number | undefined> {
  const owner = await readOwner(path);
  if (owner === undefined || owner === 'empty') return undefined;
  return isProcessAlive(owner) ? owner : undefined;
}

/** The pid written in `path` whether alive or not (undefined when there is no lock file). */
export async function lockOwner(path: string): Promise<number | undefined> {
  const owner = await readOwner(path);
  return typeof owner === 'number' ? owner : undefined;
}

async function readOwner(path: string): Promise<number | 'empty' | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (Number.isSafeInteger(pid) && pid > 0) return pid;
  return 'empty';
}

/**
 * Try to take the lock once. Returns a release function, or `{ holder }` when a live process has it.
 * A stale lock (dead owner) is taken over; `stale` then carries the dead owner's pid.
 */
export async function tryLock(path: string): Promise<{ release: Release; stale?: number } | { holder: number }> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fh = await open(path, 'wx');
      try {
        await fh.write(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return { release: () => releaseLock(path) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw lockError(path, e);
    }
    const owner = await readOwner(path);
    if (owner === undefined) continue; // released meanwhile
    if (owner === 'empty') {
      const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age < EMPTY_GRACE_MS) return { holder: 0 };
    } else if (isProcessAlive(owner)) {
      return { holder: owner };
    }
    // Stale: move it aside under a unique name, and make sure what we moved is what we judged stale.
    const aside = `${path}.stale-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      await rename(path, aside);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw lockError(path, e);
    }
    const moved = await readOwner(aside);
    if (moved !== owner) {
      // Someone took the lock between our read and our rename: give it back if the name is still free.
      await link(aside, path).catch(() => undefined);
      await unlink(aside).catch(() => undefined);
      continue;
    }
    await unlink(aside).catch(() => undefined);
    const again = await tryLock(path);
    if ('release' in again && typeof owner === 'number') return { release: again.release, stale: owner };
    return again;
  }
  return { holder: 0 };
}

export interface AcquireOptions {
  /** Give up after this long (default 30 s) with a BUSY error. */
  timeoutMs?: number;
  /** What the lock protects, for the error message. */
  what?: string;
}

/** Take the lock, waiting while a live process holds it. */
export async function acquireLock(path: string, opts: AcquireOptions = {}): Promise<Release> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let wait = 1;
  for (;;) {
    const r = await tryLock(path);
    if ('release' in r) return r.release;
    if (Date.now() >= deadline) {
      const who = r.holder > 0 ? ` (held by process ${r.holder})` : '';
      throw new VhdsyncError('BUSY', `${opts.what ?? path} is locked${who}; try again when it is done`);
    }
    await new Promise((res) => setTimeout(res, wait));
    wait = Math.min(wait * 2, 20);
  }
}

export async function withLock<T>(path: string, fn: () => Promise<T>, opts: AcquireOptions = {}): Promise<T> {
  const release = await acquireLock(path, opts);
  try {
    return await fn();
  } finally {
    await release();
  }
}

async function releaseLock(path: string): Promise<void> {
  // Only remove our own lock: after a takeover the file may belong to someone else.
  const owner = await readOwner(path).catch(() => undefined);
  if (owner === process.pid) await unlink(path).catch(() => undefined);
}

function lockError(path: string, e: unknown): VhdsyncError {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return new VhdsyncError('NOT_FOUND', `${path}: the directory for this lock does not exist`, { cause: e });
  return new VhdsyncError('IO', `${path}: could not take the lock (${err.message})`, { cause: e });
}
