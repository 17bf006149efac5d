/**
 * What finding a differencing disk's parent means in both formats, once: the places the child names,
 * best first and without duplicates, each turned into a local path (Windows paths as far as a POSIX
 * system can use them), and the first that is a file. Each format says only which locators it has and
 * in what order (vhd/parent.ts, vhdx/parent.ts); the parent is then verified by the format (VHD: unique
 * id, VHDX: linkage).
 */
import { stat } from 'node:fs/promises';
import { VhdsyncError } from '../errors.js';

export interface ParentCandidate {
  path: string;
  /** Where the candidate came from: a locator (`W2ru`, `relative_path`), with ` name` when only its file name was usable. */
  source: string;
}

/** Candidates in the order added, a path already listed kept at its first (better) place. */
export class ParentCandidates {
  readonly list: ParentCandidate[] = [];

  add(path: string, source: string): void {
    if (path && !this.list.some((c) => c.path === path)) this.list.push({ path, source });
  }
}

/**
 * Of a child's parent candidates (in resolution order), the first that is a file. PARENT_MISSING
 * naming them all when none is, or with `namesNone` when the child names no parent at all.
 */
export async function firstExisting(childPath: string, candidates: ParentCandidate[], namesNone: string): Promise<ParentCandidate> {
  if (candidates.length === 0) throw new VhdsyncError('PARENT_MISSING', `${childPath}: ${namesNone}`);
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
