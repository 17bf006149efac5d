/**
 * Finding a differencing VHDX's parent from its parent locator ([MS-VHDX] 2.6.2.6.3): `relative_path`,
 * then `volume_path`, then `absolute_win32_path`, then each one's file name next to the child. The
 * parent is verified afterwards by linkage (its DataWriteGuid must equal `parent_linkage`).
 */
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { VhdsyncError } from '../../errors.js';
import type { ParentLocator } from './metadata.js';
import { firstExisting, toLocalPath } from '../vhd/parent.js';

export interface VhdxParentCandidate {
  path: string;
  /** The locator key it came from (`relative_path` ...), with ` name` when only the file name was usable. */
  source: string;
}

const KEYS = ['relative_path', 'volume_path', 'absolute_win32_path'] as const;

export function vhdxParentCandidates(childPath: string, locator: ParentLocator): VhdxParentCandidate[] {
  const childDir = dirname(resolve(childPath));
  const out: VhdxParentCandidate[] = [];
  const add = (path: string, source: string) => {
    if (path && !out.some((c) => c.path === path)) out.push({ path, source });
  };
  const names: Array<[string, string]> = [];
  for (const key of KEYS) {
    const text = locator.entries.get(key);
    if (!text) continue;
    // volume_path is `\\?\Volume{guid}\dir\x.vhdx`: only its file name means anything off Windows.
    const local = key === 'volume_path' ? toLocalPath(text.replace(/^\\\\\?\\Volume\{[^}]*\}/i, 'C:')) : toLocalPath(text.replace(/^\\\\\?\\/, ''));
    if (key === 'relative_path' && !isAbsolute(local)) add(resolve(childDir, local), key);
    else if (isAbsolute(local)) add(local, key);
    names.push([basename(local), key]);
  }
  for (const [name, key] of names) add(join(childDir, name), `${key} name`);
  return out;
}

/** The first candidate that exists, or PARENT_MISSING naming what was tried. */
export async function resolveVhdxParent(childPath: string, locator: ParentLocator): Promise<VhdxParentCandidate> {
  const candidates = vhdxParentCandidates(childPath, locator);
  if (candidates.length === 0) {
    throw new VhdsyncError('PARENT_MISSING', `${childPath}: differencing VHDX names no parent path (no relative_path, volume_path or absolute_win32_path)`);
  }
  return firstExisting(childPath, candidates);
}
