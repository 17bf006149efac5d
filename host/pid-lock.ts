import { basename, dirname } from 'node:path';
import { VhdsyncError } from './errors.js';
import { lockFile, lockHolderOf, tryLockFile, type HeldLock } from './writer-lock.js';

/**
 * Named locks (`<dir>/site.lock`, a VM's state, the running VM, the service of a home) on top of the one
 * lock of writer-lock.ts: keyed by the identity of the directory plus the name, so two paths to one
 * folder collide, released by the kernel when the holder dies. No file is created at the path itself.
 * (The historical name stays for the call sites; there are no pid files any more.)
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

export type Release = () => Promise<void>;

async function at<T>(path: string, fn: (dir: string, name: string) => Promise<T>): Promise<T> {
  try {
    return await fn(dirname(path), basename(path));
  } catch (e) {
    if (e instanceof VhdsyncError && e.code === 'NOT_FOUND') {
      throw new VhdsyncError('NOT_FOUND', `${path}: the directory for this lock does not exist`, { cause: e });
    }
    throw e;
  }
}

/** The live pid holding `path`, or undefined when the lock is free. */
export async function lockHolder(path: string): Promise<number | undefined> {
  const h = await at(path, (dir, name) => lockHolderOf(dir, name)).catch(() => 'free' as const);
  return h === 'free' ? undefined : (h?.pid ?? 0);
}

/** Try to take the lock once: a release function, or `{ holder }` (its pid; 0 when it did not say). */
export async function tryLock(path: string): Promise<{ release: Release; lock: HeldLock } | { holder: number }> {
  const r = await at(path, (dir, name) => tryLockFile(dir, { sub: name, what: path }));
  if ('release' in r) return { release: () => r.release(), lock: r };
  return { holder: r.holder?.pid ?? 0 };
}

export interface AcquireOptions {
  /** Give up after this long (default 30 s) with a BUSY error. */
  timeoutMs?: number;
  /** What the lock protects, for the error message. */
  what?: string;
}

/** Take the lock, waiting while a live process holds it. */
export async function acquireLock(path: string, opts: AcquireOptions = {}): Promise<Release> {
  const what = opts.what ?? path;
  try {
    const lock = await at(path, (dir, name) => lockFile(dir, { sub: name, what, wait: opts.timeoutMs ?? 30_000 }));
    return () => lock.release();
  } catch (e) {
    if (e instanceof VhdsyncError && e.code === 'BUSY') throw new VhdsyncError('BUSY', e.message.replace(/; wait for it.*$/, '; try again when it is done'));
    throw e;
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

