import { realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { VhdsyncError, ioError } from '../errors.js';

/**
 * A replica server writes only under its `--root` (ARCHITECTURE.md "Network"). A client names a disk as
 * `NAME/disk.vhd`; this turns that into a real path under the root, or refuses it: absolute paths,
 * `..` (and `.`, empty or backslashed segments) are refused before touching the file system, and a
 * symbolic link anywhere on the way that leads out of the root is refused once resolved. The disk
 * must exist (a resync rebuilds a replica; it does not create one).
 */
export async function confineTarget(root: string, target: unknown): Promise<string> {
  const refuse = (why: string) => new VhdsyncError('USAGE', `'${String(target).slice(0, 200)}' is refused: ${why}; name a disk under the server's root as NAME/disk.vhd`);
  if (typeof target !== 'string' || target.length === 0) throw refuse('no replica disk named');
  if (target.length > 1024) throw refuse('the path is too long');
  if (/[\0\\]/.test(target)) throw refuse('the path contains a NUL or a backslash');
  if (target.startsWith('/') || /^[a-z]:/i.test(target)) throw refuse('absolute paths are not allowed');
  const parts = target.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) throw refuse("'..', '.' and empty path segments are not allowed");

  const realRoot = await realpath(root).catch((e) => {
    throw ioError(root, e);
  });
  let real: string;
  try {
    real = await realpath(join(realRoot, ...parts));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new VhdsyncError('NOT_FOUND', `${target}: no such replica disk under the server's root`);
    throw refuse('it cannot be resolved');
  }
  if (!real.startsWith(realRoot + sep)) throw refuse("a link on the way leads out of the server's root");
  if (!(await stat(real)).isFile()) throw refuse('not a disk image file');
  return real;
}
