/**
 * Merging a differencing child (VHD or VHDX) into its parent, and discarding a child.
 *
 * Merge copies into the parent exactly the sectors whose bitmap bit is set in the child (sector
 * accurate, unlike whole-block merges), block by block in file order. A journal beside the child
 * (`.<child>.merge.json`, written atomically) records the first block not yet known to be durable in
 * the parent. Re-copying a block is idempotent, so after a crash the merge resumes from the journal; the
 * child is deleted only after everything is in the parent, and the journal after the child.
 *
 * A VHDX parent gets a new DataWriteGuid on the merge's first write, after which its child's
 * `parent_linkage` no longer matches: a resumed VHDX merge trusts the journal (same child, same parent
 * path) instead of the linkage.
 */
import { open, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { VhdsyncError, ioError } from '../errors.js';
import { pathExists, removeIfExists, syncDir, writeFileAtomic } from '../fsutil.js';
import { MiB } from '../units.js';
import type { Disk, DiskLayer } from './disk.js';
import { DiskFile } from './file-io.js';
import { isVhdxFile, openDisk, openDiskAlone, openDiskLayer, type OpenOptions } from './open.js';
import { uuidText } from './vhd/be.js';
import { VhdDynamicDisk } from './vhd/dynamic.js';
import { DISK_TYPE_DIFFERENCING, footerDiskType, hasRawParent } from './vhd/footer.js';
import { readFooterCandidates } from './vhd/image.js';
import { VhdxDisk } from './vhdx/disk.js';
import { FILE_ID_SIZE, madeByVhdsync } from './vhdx/header.js';
import { resolveVhdxParent } from './vhdx/parent.js';

export interface MergeOptions {
  /** Called after each allocated child block: (blocks done, allocated blocks in the child). */
  onProgress?: (done: number, total: number) => void;
  /** Flush the parent and record progress in the journal after at most this many copied bytes (default 256 MiB). */
  checkpointBytes?: number;
  /** Called once the journal exists, before the parent is first written (also when resuming). */
  onJournal?: () => Promise<void>;
  /** Called once every block is durable in the parent, before the child is deleted (also when resuming that step). */
  onCopied?: () => Promise<void>;
}

export interface MergeResult {
  parentPath: string;
  /** Bytes copied into the parent in this run. */
  copiedBytes: number;
  /** Allocated child blocks merged in this run. */
  mergedBlocks: number;
  /** True when this run continued an interrupted merge. */
  resumed: boolean;
}

interface MergeJournal {
  version: 1;
  step: 'copy' | 'delete-child';
  child: string;
  childId: string;
  parent: string;
  virtualSize: number;
  blockCount: number;
  /** Every allocated child block below this index is durable in the parent. */
  nextBlock: number;
}

/** Make the parent durable and record progress at least this often. */
const CHECKPOINT_BYTES = 256 * MiB;
const CHECKPOINT_MS = 2000;
const COPY_CHUNK = 4 * MiB;

export function mergeJournalPath(childPath: string): string {
  return join(dirname(resolve(childPath)), `.${basename(childPath)}.merge.json`);
}

/**
 * Merge the differencing VHD at `childPath` into its parent and delete it. Resumes an interrupted merge
 * of the same child; calling it again after success is an error (NOT_FOUND: the child is gone).
 */
export async function mergeOverlay(childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  const journalPath = mergeJournalPath(childPath);
  let journal = await readJournal(journalPath);
  const childExists = await pathExists(childPath);

  if (journal?.step === 'delete-child' || (journal && !childExists)) {
    if (journal.step === 'delete-child' && childExists) {
      // Delete only the child this journal merged, never a newer disk that took its name.
      const id = await childIdentity(childPath);
      if (id !== journal.childId) {
        throw new VhdsyncError('STATE', `${childPath}: ${journalPath} is left from merging another disk (${journal.childId}); remove it first`);
      }
    }
    if (journal.step !== 'delete-child') {
      throw new VhdsyncError(
        'STATE',
        `${childPath}: the differencing disk is gone but ${journalPath} says its merge was still copying; the parent ${journal.parent} is partly merged`,
      );
    }
    await options.onCopied?.();
    await finish(childPath, journalPath);
    return { parentPath: journal.parent, copiedBytes: 0, mergedBlocks: 0, resumed: true };
  }
  if (!childExists) throw new VhdsyncError('NOT_FOUND', `${childPath}: no such file`);

  // Open the whole chain once: proves the parent is found, is the right one, and has the same size.
  const vhdx = await isVhdxFile(childPath);
  let parentPath: string;
  let childId: string;
  let parentFormat: OpenOptions['format'];
  if (vhdx && journal) {
    ({ parentPath, childId } = await vhdxResumeIdentity(childPath));
    parentFormat = 'vhdx';
  } else {
    const chain = await openDisk(childPath, { readOnly: true });
    try {
      if (chain instanceof VhdxDisk && chain.type === 'differencing' && chain.parent) {
        childId = chain.dataWriteGuid;
        parentFormat = 'vhdx';
      } else if (chain instanceof VhdDynamicDisk && chain.type === 'differencing' && chain.parent) {
        childId = uuidText(chain.footer.uniqueId);
        parentFormat = hasRawParent(chain.footer, chain.header.parentUniqueId) ? 'raw' : 'vhd';
      } else {
        throw new VhdsyncError('UNSUPPORTED', `${childPath}: not a differencing VHD or VHDX; only a differencing disk can be merged into its parent`);
      }
      parentPath = resolve(chain.parent.path);
    } finally {
      await chain.close();
    }
  }

  const resumed = journal !== null;
  if (journal && (journal.childId !== childId || journal.parent !== parentPath)) {
    throw new VhdsyncError(
      'STATE',
      `${childPath}: ${journalPath} belongs to another merge (child ${journal.childId} into ${journal.parent}); finish or remove it first`,
    );
  }

  const child: DiskLayer = await openDiskLayer(childPath, { readOnly: true });
  let parent: Disk | undefined;
  try {
    if (!journal && !anyAllocated(child)) {
      // Nothing to copy (a resync of identical disks): the parent is not opened for writing, so no
      // journal and no flush. The child alone goes, as at the end of a merge.
      options.onProgress?.(0, 0);
      await child.close();
      await options.onCopied?.();
      await finish(childPath, journalPath);
      return { parentPath, copiedBytes: 0, mergedBlocks: 0, resumed: false };
    }
    parent = await openDisk(parentPath, { readOnly: false, format: parentFormat });
    if (!journal) {
      journal = {
        version: 1,
        step: 'copy',
        child: resolve(childPath),
        childId,
        parent: parentPath,
        virtualSize: child.virtualSize,
        blockCount: child.blockCount,
        nextBlock: 0,
      };
      await writeJournal(journalPath, journal);
    }
    if (journal.blockCount !== child.blockCount || journal.virtualSize !== child.virtualSize) {
      throw new VhdsyncError('STATE', `${childPath}: ${journalPath} does not match the disk (different size); remove it to restart the merge`);
    }
    await options.onJournal?.();

    let total = 0;
    let done = 0;
    for (let b = 0; b < child.blockCount; b++) {
      if (child.isAllocated(b)) {
        total++;
        if (b < journal.nextBlock) done++;
      }
    }
    options.onProgress?.(done, total);

    const buf = new Uint8Array(Math.min(COPY_CHUNK, child.blockSize));
    let copiedBytes = 0;
    let mergedBlocks = 0;
    let sinceCheckpoint = 0;
    let lastCheckpoint = Date.now();
    const checkpointBytes = Math.max(1, options.checkpointBytes ?? CHECKPOINT_BYTES);
    for (let b = journal.nextBlock; b < child.blockCount; b++) {
      if (!child.isAllocated(b)) continue;
      const ranges = await child.ownedRanges(b);
      const span = ranges.length > 0 ? ranges[ranges.length - 1].offset + ranges[ranges.length - 1].length - ranges[0].offset : 0;
      if (ranges.length > 1 && span <= buf.length) {
        // Scattered sectors (a resync overlay): one read of the block's owned span, then a write per run.
        const base = ranges[0].offset;
        await child.readOwn(base, buf.subarray(0, span));
        for (const r of ranges) {
          await parent.write(r.offset, buf.subarray(r.offset - base, r.offset - base + r.length));
          copiedBytes += r.length;
          sinceCheckpoint += r.length;
        }
      } else {
        for (const r of ranges) {
          for (let off = 0; off < r.length; off += buf.length) {
            const piece = buf.subarray(0, Math.min(buf.length, r.length - off));
            await child.readOwn(r.offset + off, piece);
            await parent.write(r.offset + off, piece);
            copiedBytes += piece.length;
            sinceCheckpoint += piece.length;
          }
        }
      }
      mergedBlocks++;
      done++;
      if (sinceCheckpoint >= checkpointBytes || Date.now() - lastCheckpoint >= CHECKPOINT_MS) {
        await parent.flush();
        journal.nextBlock = b + 1;
        await writeJournal(journalPath, journal);
        sinceCheckpoint = 0;
        lastCheckpoint = Date.now();
      }
      options.onProgress?.(done, total);
    }
    await parent.flush();
    journal.nextBlock = child.blockCount;
    journal.step = 'delete-child';
    await writeJournal(journalPath, journal);
    await child.close();
    await parent.close();
    parent = undefined;
    await options.onCopied?.();
    await finish(childPath, journalPath);
    return { parentPath, copiedBytes, mergedBlocks, resumed };
  } finally {
    await child.close().catch(() => undefined);
    await parent?.close().catch(() => undefined);
  }
}

/**
 * Delete a differencing child without touching its parent (the parent stays byte-identical). Refuses a
 * file that is not a differencing VHD, and a child whose merge has started (finish it with merge).
 */
export async function discardOverlay(childPath: string): Promise<void> {
  const journalPath = mergeJournalPath(childPath);
  if (await pathExists(journalPath)) {
    throw new VhdsyncError('STATE', `${childPath}: a merge into the parent has started (${journalPath}); run the merge again to finish it`);
  }
  if (!(await pathExists(childPath))) throw new VhdsyncError('NOT_FOUND', `${childPath}: no such file`);
  let isDifferencing: boolean;
  const vhdx = await isVhdxFile(childPath);
  try {
    const disk = await openDiskAlone(childPath, { readOnly: true });
    isDifferencing = disk.type === 'differencing';
    await disk.close();
  } catch (e) {
    if (!(e instanceof VhdsyncError) || e.code === 'NOT_FOUND' || e.code === 'IO') throw e;
    // A damaged overlay must still be discardable: accept it when either footer says "differencing",
    // or, for a VHDX, when vhdsync made it (its creator string).
    isDifferencing = vhdx ? await vhdxMadeByUs(childPath) : await footerSaysDifferencing(childPath);
    if (!isDifferencing) throw e;
  }
  if (!isDifferencing) {
    throw new VhdsyncError('UNSUPPORTED', `${childPath}: not a differencing ${vhdx ? 'VHDX' : 'VHD'}; refusing to delete it as an overlay`);
  }
  try {
    await unlink(childPath);
  } catch (e) {
    throw ioError(childPath, e);
  }
  await syncDir(dirname(resolve(childPath)));
}

function anyAllocated(child: DiskLayer): boolean {
  for (let b = 0; b < child.blockCount; b++) if (child.isAllocated(b)) return true;
  return false;
}

async function finish(childPath: string, journalPath: string): Promise<void> {
  try {
    await removeIfExists(childPath);
  } catch (e) {
    throw ioError(childPath, e);
  }
  await syncDir(dirname(resolve(childPath)));
  if (await removeIfExists(journalPath)) await syncDir(dirname(journalPath));
}

/** The id a journal records for a child: a VHD's unique id, a VHDX's DataWriteGuid (a merge never writes the child). */
async function childIdentity(childPath: string): Promise<string> {
  const alone = await openDiskAlone(childPath, { readOnly: true });
  try {
    return alone instanceof VhdxDisk ? alone.dataWriteGuid : uuidText(alone.footer.uniqueId);
  } finally {
    await alone.close();
  }
}

/** A resumed VHDX merge: the child alone, and where its locator says the parent is. */
async function vhdxResumeIdentity(childPath: string): Promise<{ parentPath: string; childId: string }> {
  const alone = await openDiskAlone(childPath, { readOnly: true });
  try {
    if (!(alone instanceof VhdxDisk) || !alone.parentLocator) {
      throw new VhdsyncError('UNSUPPORTED', `${childPath}: not a differencing VHDX; only a differencing disk can be merged into its parent`);
    }
    const found = await resolveVhdxParent(childPath, alone.parentLocator);
    return { parentPath: resolve(found.path), childId: alone.dataWriteGuid };
  } finally {
    await alone.close();
  }
}

async function vhdxMadeByUs(path: string): Promise<boolean> {
  const file = await DiskFile.open(path, true);
  try {
    const id = new Uint8Array(FILE_ID_SIZE);
    return (await file.readUpTo(id, 0)) === id.length && madeByVhdsync(id);
  } catch {
    return false;
  } finally {
    await file.close();
  }
}

async function footerSaysDifferencing(path: string): Promise<boolean> {
  const file = await DiskFile.open(path, true);
  try {
    const { head, tail } = await readFooterCandidates(file, await file.size());
    return footerDiskType(head) === DISK_TYPE_DIFFERENCING || footerDiskType(tail) === DISK_TYPE_DIFFERENCING;
  } finally {
    await file.close();
  }
}

async function writeJournal(path: string, journal: MergeJournal): Promise<void> {
  try {
    await writeFileAtomic(path, JSON.stringify(journal, null, 2) + '\n');
  } catch (e) {
    throw ioError(path, e);
  }
}

/**
 * Load and check a journal. A journal we cannot trust is treated as "start over" (copies are
 * idempotent), never as a position to jump to: every field is validated, nothing is clamped silently.
 */
async function readJournal(path: string): Promise<MergeJournal | null> {
  let text: string;
  try {
    const fh = await open(path, 'r');
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(path, e);
  }
  let j: Partial<MergeJournal>;
  try {
    j = JSON.parse(text) as Partial<MergeJournal>;
  } catch {
    throw new VhdsyncError('STATE', `${path}: merge journal is not valid JSON; remove it to restart the merge from the beginning`);
  }
  const ok =
    j !== null &&
    typeof j === 'object' &&
    j.version === 1 &&
    (j.step === 'copy' || j.step === 'delete-child') &&
    typeof j.child === 'string' &&
    typeof j.childId === 'string' &&
    typeof j.parent === 'string' &&
    Number.isSafeInteger(j.virtualSize) &&
    Number.isSafeInteger(j.blockCount) &&
    Number.isSafeInteger(j.nextBlock) &&
    (j.nextBlock as number) >= 0 &&
    (j.nextBlock as number) <= (j.blockCount as number);
  if (!ok) {
    throw new VhdsyncError('STATE', `${path}: merge journal is damaged; remove it to restart the merge from the beginning`);
  }
  return j as MergeJournal;
}
