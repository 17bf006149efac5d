/**
 * Finding a differencing disk's parent: the W2ru (relative) locator first, then W2ku (absolute), then the
 * deprecated ANSI and Mac locators, then the header's unicode parent name next to the child
 * (vhd-formats §1.6: absolute paths break when files move).
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { VhdsyncError } from '../../errors.js';
import type { DiskFile } from '../file-io.js';
import {
  LOCATOR_MACX, LOCATOR_W2KU, LOCATOR_W2RU, LOCATOR_WI2K, LOCATOR_WI2R, MAX_LOCATOR_BYTES, decodeLocatorData,
  type DynamicHeader,
} from './header.js';

export interface ParentCandidate {
  path: string;
  /** Where the candidate came from: a locator code (`W2ru`) or `name` (the header's unicode name). */
  source: string;
}

const ORDER = [LOCATOR_W2RU, LOCATOR_W2KU, LOCATOR_WI2R, LOCATOR_WI2K, LOCATOR_MACX];
const RELATIVE = new Set([LOCATOR_W2RU, LOCATOR_WI2R]);

/** Every place the header says the parent may be, best first, without duplicates. */
export async function parentCandidates(file: DiskFile, fileSize: number, header: DynamicHeader): Promise<ParentCandidate[]> {
  const childDir = dirname(resolve(file.path));
  const out: ParentCandidate[] = [];
  const add = (path: string, source: string) => {
    if (path && !out.some((c) => c.path === path)) out.push({ path, source });
  };
  for (const code of ORDER) {
    for (const l of header.locators) {
      if (l.code !== code) continue;
      // A locator is a path: bound it, and ignore one that points outside the file.
      if (l.dataLength === 0 || l.dataLength > MAX_LOCATOR_BYTES || l.dataOffset + l.dataLength > fileSize) continue;
      const data = new Uint8Array(l.dataLength);
      await file.readAt(data, l.dataOffset, `the ${l.codeName} parent locator`);
      const text = decodeLocatorData(code, data);
      if (!text) continue;
      const local = toLocalPath(text);
      if (RELATIVE.has(code)) add(resolve(childDir, local), l.codeName);
      else if (isAbsolute(local)) add(local, l.codeName);
      else add(join(childDir, basename(local)), `${l.codeName} name`);
    }
  }
  if (header.parentUnicodeName) add(join(childDir, basename(toLocalPath(header.parentUnicodeName))), 'name');
  return out;
}

/** The first candidate that exists, or PARENT_MISSING naming what was tried. */
export async function resolveParent(file: DiskFile, fileSize: number, header: DynamicHeader): Promise<ParentCandidate> {
  const candidates = await parentCandidates(file, fileSize, header);
  if (candidates.length === 0) {
    throw new VhdsyncError('PARENT_MISSING', `${file.path}: differencing VHD names no parent (no usable parent locator or parent name)`);
  }
  return firstExisting(file.path, candidates);
}

/** Of a child's parent candidates (in resolution order), the first that is a file, or PARENT_MISSING naming them all. */
export async function firstExisting<C extends { path: string }>(childPath: string, candidates: C[]): Promise<C> {
  for (const c of candidates) {
    try {
      if ((await stat(c.path)).isFile()) return c;
    } catch {
      // try the next one
    }
  }
  const [first, ...rest] = candidates;
  const also = rest.length ? ` (also tried ${rest.map((c) => c.path).join(', ')})` : '';
  throw new VhdsyncError(
    'PARENT_MISSING',
    `${childPath}: parent disk ${first.path} not found${also}; restore the parent next to the child or recreate the differencing disk`,
  );
}

/**
 * Windows locators use backslashes and sometimes a drive letter. Relative `.\x\y.vhd` maps to `./x/y.vhd`;
 * `C:\dir\y.vhd` keeps only what a POSIX system can use (the name, tried next to the child).
 */
export function toLocalPath(text: string): string {
  let p = text.replace(/\0+$/, '');
  if (process.platform !== 'win32') {
    if (/^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\\\')) p = p.replace(/\\/g, '/').replace(/^.*\//, '');
    else p = p.replace(/\\/g, '/');
  }
  return p;
}
