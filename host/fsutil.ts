import { open, rename, mkdir, unlink, stat, link, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join, resolve } from 'node:path';
import { VhdsyncError, ioError } from './errors.js';

/** Write a small file so that readers see either the old or the new content, never a mix (temp, fsync, rename, fsync dir). */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDir(dir);
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
 */
export async function writeNewFile(path: string, overwrite: boolean, fill: (fh: FileHandle) => Promise<void>): Promise<void> {
  const refuse = () => new VhdsyncError('EXISTS', `${path}: already exists; remove it first or overwrite it explicitly (--force)`);
  if (!overwrite && (await pathExists(path))) throw refuse();
  const dir = dirname(resolve(path));
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fill(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (overwrite) {
      await rename(tmp, path);
    } else {
      try {
        await link(tmp, path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EEXIST') throw refuse();
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EXDEV') throw e;
        await rename(tmp, path); // file systems without hard links
      }
      await unlink(tmp).catch(() => undefined);
    }
    await syncDir(dir);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw ioError(path, e);
  }
}
