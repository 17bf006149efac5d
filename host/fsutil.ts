import { readlinkSync } from 'node:fs';
import { copyFile, open, rename, mkdir, unlink, stat, link, lstat, realpath, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { VhdsyncError, ioError } from './errors.js';

/** A temp name beside `path`, unique per write (pid + random): two writers never share one. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Write a small file so that readers see either the old or the new content, never a mix: a unique temp
 * file, fsync, rename, fsync of the directory. A failed write removes its temp file. The one way state
 * is written (checkpoints, journals, VM records, counters, recovery points).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  // Node leaves a failed write on a handle unnamed (`ENOSPC: no space left on device, write`).
  await writeAtomic(path, data).catch((e) => {
    throw ioError(path, e);
  });
}

async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  await replaceAtomic(path, async (fh) => {
    await fh.writeFile(data);
  });
}

/** As writeFileAtomic, with the content written by `fill` into the open temp file (for streamed content). */
export async function replaceAtomic(path: string, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
  await viaTemp(path, async (tmp) => {
    const fh = await open(tmp, 'wx');
    try {
      await fill(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
}

/** Copy a whole file so that `dst` is either absent or the complete, durable copy: temp, fsync, rename, fsync of the directory. */
export async function copyFileAtomic(src: string, dst: string): Promise<void> {
  await viaTemp(dst, async (tmp) => {
    await copyFile(src, tmp);
    const fh = await open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
}

/** `make` writes a durable temp file; it then replaces `path` by rename. A failure removes the temp file. */
async function viaTemp(path: string, make: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    await make(tmp);
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await syncDir(dirname(path));
}

export async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic there.
  }
}

export async function removeIfExists(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Create a new file under a temporary name, fill and fsync it, then give it its name — never clobbering
 * an existing file unless `overwrite` (a hard link refuses to replace; a rename where links don't exist).
 * `overwrite` replaces only a regular file (a symlink's target, not the link), held by its writer lock
 * meanwhile and never the disk a running resync reads: a device, FIFO, socket or folder is refused.
 */
export async function writeNewFile(path: string, overwrite: boolean, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
  const refuse = () => new VhdsyncError('EXISTS', `${path}: already exists; remove it first or overwrite it explicitly (--force)`);
  const existing = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw ioError(path, e);
  });
  if (!existing) {
    const folder = dirname(resolve(path));
    if (!(await pathExists(folder))) throw new VhdsyncError('NOT_FOUND', `${folder}: no such folder; create it first (mkdir -p)`);
  } else if (!overwrite) {
    throw refuse();
  }
  let target = path;
  if (existing?.isSymbolicLink()) target = await realpath(path).catch(() => resolve(dirname(path), readlinkSync(path)));
  const kind = existing ? await stat(target).catch(() => undefined) : undefined;
  if (kind && !kind.isFile()) {
    const what = kind.isDirectory() ? 'a folder' : kind.isCharacterDevice() ? 'a character device' : kind.isBlockDevice() ? 'a block device' : kind.isFIFO() ? 'a FIFO (named pipe)' : kind.isSocket() ? 'a socket' : 'not a regular file';
    throw new VhdsyncError('UNSUPPORTED', `${path}: is ${what}, not a disk image file; --force replaces only a regular file`);
  }
  if (!kind) return writeNewFileAt(target, path, overwrite, refuse, fill);
  const { lockFile } = await import('./writer-lock.js');
  const { refuseResyncSource } = await import('./resync-source.js');
  const lock = await lockFile(target, { what: target });
  try {
    await refuseResyncSource(target, 'replacing it');
    await writeNewFileAt(target, path, overwrite, refuse, fill);
  } finally {
    await lock.release();
  }
}

async function writeNewFileAt(target: string, path: string, overwrite: boolean, refuse: () => VhdsyncError, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
  const dir = dirname(resolve(target));
  const tmp = tempPathFor(resolve(target));
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fill(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (overwrite) {
      await rename(tmp, target);
    } else {
      try {
        await link(tmp, target);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') throw refuse();
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EXDEV') throw e;
        await rename(tmp, target); // file systems without hard links
      }
      await unlink(tmp).catch(() => undefined);
    }
    await syncDir(dir);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw ioError(path, e);
  }
}
