import { readFile } from 'node:fs/promises';
import { VhdsyncError } from '../errors.js';
import { removeIfExists, writeFileAtomic } from '../fsutil.js';

/**
 * The replica side's record of a resync in progress, written atomically beside the replica after the
 * overlay has been flushed: every region below `nextRegion` is durably in the overlay (or was equal).
 * `phase` moves comparing → compared → merging → merged, never back. `merging` is written once the
 * merge journal exists, just before the base is first written (a merge that fails before that, on a
 * read-only replica, can still be cancelled); `merged` once every block is in the base, before the
 * overlay is deleted — the one proof that a missing overlay was merged and not lost.
 */
export interface Checkpoint {
  version: 1;
  primary: string;
  virtualSize: number;
  leafSize: number;
  regionSize: number;
  fanout: number;
  nextRegion: number;
  phase: 'comparing' | 'compared' | 'merging' | 'merged';
  bytesReceived: number;
  leavesReceived: number;
  startedAt: string;
  updatedAt: string;
  /** The primary file when its last session started: a resumed resync tells another or a changed file by it. */
  primaryFile?: PrimaryStamp;
  /** Why the compare must run once more from the start when this resync completes (sticky across sessions). */
  compareAgain?: string;
}

export interface PrimaryStamp {
  dev: string;
  ino: string;
  ctimeNs: string;
}

/** A stamp from the wire or a file, or undefined when it is not one (an older peer sends none). */
export function asPrimaryStamp(v: unknown): PrimaryStamp | undefined {
  const o = v as Partial<PrimaryStamp> | null;
  if (typeof o !== 'object' || o === null) return undefined;
  const digits = (x: unknown) => typeof x === 'string' && /^\d{1,40}$/.test(x);
  return digits(o.dev) && digits(o.ino) && digits(o.ctimeNs) ? { dev: o.dev!, ino: o.ino!, ctimeNs: o.ctimeNs! } : undefined;
}

export async function readCheckpoint(path: string): Promise<Checkpoint | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let c: Partial<Checkpoint>;
  try {
    c = JSON.parse(text);
  } catch {
    throw new VhdsyncError('CHECKPOINT', `${path}: the resync checkpoint is not valid JSON; run with --restart (or --cancel) to start over`);
  }
  const intOk = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  const valid =
    c.version === 1 &&
    typeof c.primary === 'string' &&
    intOk(c.virtualSize) &&
    intOk(c.leafSize) &&
    intOk(c.regionSize) &&
    intOk(c.fanout) &&
    intOk(c.nextRegion) &&
    (c.phase === 'comparing' || c.phase === 'compared' || c.phase === 'merging' || c.phase === 'merged') &&
    intOk(c.bytesReceived) &&
    intOk(c.leavesReceived) &&
    (c.primaryFile === undefined || asPrimaryStamp(c.primaryFile) !== undefined) &&
    (c.compareAgain === undefined || typeof c.compareAgain === 'string');
  if (!valid) throw new VhdsyncError('CHECKPOINT', `${path}: the resync checkpoint is damaged; run with --restart (or --cancel) to start over`);
  return c as Checkpoint;
}

export async function writeCheckpoint(path: string, c: Checkpoint): Promise<void> {
  await writeFileAtomic(path, JSON.stringify({ ...c, updatedAt: new Date().toISOString() }, null, 2) + '\n');
}

export async function deleteCheckpoint(path: string): Promise<void> {
  await removeIfExists(path);
}
