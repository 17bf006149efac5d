import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Disk } from '../disk/disk.js';
import { openDisk, openDiskLayer } from '../disk/index.js';
import { appendUndoRecord, undoRecord, writeUndoLog } from '../disk/undo-log.js';
import { preResyncUndoPathFor } from './paths.js';

/**
 * Before the overlay is merged: the base's bytes under exactly the ranges the overlay owns, so that
 * writing them back gives the replica as it was before the resync. Written whole (temp + rename) before
 * the merge touches the base; never written again once the merge started (the base would be wrong).
 */
export async function capturePreResyncPoint(replicaPath: string, overlayPath: string): Promise<void> {
  const path = preResyncUndoPathFor(replicaPath);
  await mkdir(dirname(path), { recursive: true });
  const overlay = await openDiskLayer(overlayPath, { readOnly: true });
  const base = await openDisk(replicaPath, { readOnly: true });
  try {
    await writeUndoLog(path, async (add) => {
      for (let b = 0; b < overlay.blockCount; b++) {
        if (!overlay.isAllocated(b)) continue;
        for (const r of await overlay.ownedRanges(b)) await add(await undoRecord(base, r.offset, r.length));
      }
    });
  } finally {
    await base.close();
    await overlay.close();
  }
}

/** Before a tracked write goes into the base after the merge: its before-image joins the point. */
export async function capturePreResyncWrite(replicaPath: string, base: Disk, offset: number, length: number): Promise<void> {
  await appendUndoRecord(preResyncUndoPathFor(replicaPath), await undoRecord(base, offset, length));
}

/** The point cannot be trusted (the run resumed past the merge): drop it rather than offer a wrong one. */
export async function dropPreResyncPoint(replicaPath: string): Promise<void> {
  await rm(preResyncUndoPathFor(replicaPath), { force: true });
}
