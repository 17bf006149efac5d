import { link, mkdir, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ioError } from '../errors.js';
import { pathExists, removeIfExists, syncDir } from '../fsutil.js';
import { cycleLogs } from './log-folder.js';
import { SITE_FILES } from './site-files.js';

/**
 * Extended replication (Hyper-V's third site): the logs a replica applied, kept for its extended
 * replica. `<replica>/<vm>/extended-logs/` exists only while the replica is extended; every cycle the
 * replica applies is hard-linked in there — before its first write lands on a replica disk, and fsynced
 * — so a log applied at this site is always also waiting to go onward: a crash between the apply and
 * the extended cycle loses nothing, and an apply resumed after a crash links the same file again.
 * The extended cycle (replication/extended.ts) ships them to the third site in sequence and deletes
 * those the third site has applied. One that is missing is evidence that the onward tracking was lost.
 */

export function extendedLogsDir(vmDir: string): string {
  return join(vmDir, SITE_FILES.extendedLogs);
}

/** Start keeping applied logs (enable --extended, and before each extended resync takes its cut). */
export async function startKeeping(vmDir: string): Promise<void> {
  const dir = extendedLogsDir(vmDir);
  await mkdir(dir, { recursive: true }).catch((e) => {
    throw ioError(dir, e);
  });
  await syncDir(vmDir);
}

/**
 * Called by the apply, with the cycle's validated logs, before any of them is applied. Nothing when the
 * replica is not extended. A link that fails (disk full, the folder lost) leaves a gap the extended
 * cycle finds and reports (a resynchronization of the extended replica), never a silent loss; the
 * apply itself goes on, as the primary's replication does not depend on the extended one.
 */
export async function keepForExtended(vmDir: string, files: readonly (string | undefined)[]): Promise<void> {
  const dir = extendedLogsDir(vmDir);
  if (!(await pathExists(dir))) return;
  try {
    for (const f of files) {
      if (!f) continue;
      const to = join(dir, basename(f));
      await link(f, to).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
    }
    await syncDir(dir);
  } catch {
    // Reported by the extended cycle as the missing log it is.
  }
}

/** The kept logs by sequence: one path per disk index (undefined where that disk's log is missing). */
export function keptLogs(vmDir: string, disks: number): Promise<Map<number, (string | undefined)[]>> {
  return cycleLogs(extendedLogsDir(vmDir), disks);
}

/** Bytes the kept logs take (for the 50 % rule). */
export async function keptBytes(vmDir: string, disks: number): Promise<number> {
  let total = 0;
  for (const row of (await keptLogs(vmDir, disks)).values()) {
    for (const f of row) if (f) total += await stat(f).then((s) => s.size, () => 0);
  }
  return total;
}

/** Delete the kept logs up to `sequence` (the extended replica has applied them). */
export async function dropKept(vmDir: string, disks: number, upTo = Number.MAX_SAFE_INTEGER): Promise<void> {
  for (const [seq, row] of await keptLogs(vmDir, disks)) {
    if (seq > upTo) break;
    for (const f of row) if (f) await removeIfExists(f);
  }
}

/** Extended replication removed: stop keeping. */
export async function stopKeeping(vmDir: string, disks: number): Promise<void> {
  await dropKept(vmDir, disks);
  await rm(extendedLogsDir(vmDir), { recursive: true, force: true });
}
