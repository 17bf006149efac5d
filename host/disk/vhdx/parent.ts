/**
 * Finding a differencing VHDX's parent from its parent locator ([MS-VHDX] 2.6.2.6.3): `relative_path`,
 * then `volume_path`, then `absolute_win32_path`, then each one's file name next to the child. The
 * parent is verified afterwards by linkage (its DataWriteGuid must equal `parent_linkage`).
 */
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { ParentCandidates, firstExisting, toLocalPath, type ParentCandidate } from '../parent-path.js';
import type { ParentLocator } from './metadata.js';

const KEYS = ['relative_path', 'volume_path', 'absolute_win32_path'] as const;

export function vhdxParentCandidates(childPath: string, locator: ParentLocator): ParentCandidate[] {
  const childDir = dirname(resolve(childPath));
  const out = new ParentCandidates();
  const names: Array<[string, string]> = [];
  for (const key of KEYS) {
    const text = locator.entries.get(key);
    if (!text) continue;
    // volume_path is `\\?\Volume{guid}\dir\x.vhdx`: only its file name means anything off Windows.
    const local = key === 'volume_path' ? toLocalPath(text.replace(/^\\\\\?\\Volume\{[^}]*\}/i, 'C:')) : toLocalPath(text.replace(/^\\\\\?\\/, ''));
    if (key === 'relative_path' && !isAbsolute(local)) out.add(resolve(childDir, local), key);
    else if (isAbsolute(local)) out.add(local, key);
    names.push([basename(local), key]);
  }
  for (const [name, key] of names) out.add(join(childDir, name), `${key} name`);
  return out.list;
}

/** The first candidate that exists, or PARENT_MISSING naming what was tried. */
export async function resolveVhdxParent(childPath: string, locator: ParentLocator): Promise<ParentCandidate> {
  return firstExisting(childPath, vhdxParentCandidates(childPath, locator), 'differencing VHDX names no parent path (no relative_path, volume_path or absolute_win32_path)');
}
