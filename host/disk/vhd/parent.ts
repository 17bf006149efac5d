/**
 * Finding a differencing disk's parent: the W2ru (relative) locator first, then W2ku (absolute), then the
 * deprecated ANSI and Mac locators, then the header's unicode parent name next to the child
 * (vhd-formats §1.6: absolute paths break when files move).
 */
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import type { DiskFile } from '../file-io.js';
import { ParentCandidates, firstExisting, toLocalPath, type ParentCandidate } from '../parent-path.js';
import {
  LOCATOR_MACX, LOCATOR_W2KU, LOCATOR_W2RU, LOCATOR_WI2K, LOCATOR_WI2R, MAX_LOCATOR_BYTES, decodeLocatorData,
  type DynamicHeader,
} from './header.js';

const ORDER = [LOCATOR_W2RU, LOCATOR_W2KU, LOCATOR_WI2R, LOCATOR_WI2K, LOCATOR_MACX];
const RELATIVE = new Set([LOCATOR_W2RU, LOCATOR_WI2R]);

/** Every place the header says the parent may be, best first, without duplicates. */
export async function parentCandidates(file: DiskFile, fileSize: number, header: DynamicHeader): Promise<ParentCandidate[]> {
  const childDir = dirname(resolve(file.path));
  const out = new ParentCandidates();
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
      if (RELATIVE.has(code)) out.add(resolve(childDir, local), l.codeName);
      else if (isAbsolute(local)) out.add(local, l.codeName);
      else out.add(join(childDir, basename(local)), `${l.codeName} name`);
    }
  }
  if (header.parentUnicodeName) out.add(join(childDir, basename(toLocalPath(header.parentUnicodeName))), 'name');
  return out.list;
}

/** The first candidate that exists, or PARENT_MISSING naming what was tried. */
export async function resolveParent(file: DiskFile, fileSize: number, header: DynamicHeader): Promise<ParentCandidate> {
  return firstExisting(file.path, await parentCandidates(file, fileSize, header), 'differencing VHD names no parent (no usable parent locator or parent name)');
}
