import { currentLog, listSealedLogs, openPrimary, trackingLogPathFor } from '../tracking/log-files.js';
import { checkDirtyMap } from '../tracking/scope.js';
import { isProcessAlive } from '../pid-lock.js';
import { formatSize } from '../units.js';
import { fileIdentity, type FileIdentity } from '../file-identity.js';
import { checkFingerprint } from './fingerprint.js';
import { LOG_SIZE_LIMIT_RATIO } from './names.js';
import { type ResyncReason } from '../replica/states.js';
import type { VmRecord } from './store.js';
import { pendingBytes } from './vm-logs.js';

/**
 * The primary side's resync triggers (reference/hyperv-replica.md §2.3), each read from evidence on
 * disk — never from a flag someone set:
 * - not closed gracefully: an open log (end-of-log 0) whose writer process is gone;
 * - reverted: a log whose sequence was already shipped (the volume went back), or the last tracked
 *   writes missing from the disk (an older copy put back);
 * - modified while off: the disk file changed since the clean close, with every tracked write intact;
 * - too large: all tracking logs together above 50 % of the VM's virtual disk size.
 * The write failure is seen by the tracker as it happens (running-vm.ts), and the replica's triggers
 * by the replica as it applies (host/replica/local-site.ts).
 */
export interface Trigger {
  reason: ResyncReason;
  evidence: string;
}

export async function detectPrimaryTriggers(vm: VmRecord, opts: { running: boolean }): Promise<Trigger | undefined> {
  for (const d of vm.disks) {
    let cur;
    try {
      cur = await currentLog(d.path);
    } catch (e) {
      return { reason: 'TrackingLogNotClosed', evidence: `${trackingLogPathFor(d.path)}: the open tracking log cannot be read (${(e as Error).message})` };
    }
    const h = cur?.header;
    if (h && h.endOfLog === 0 && h.writerPid !== 0 && h.writerPid !== process.pid && !isProcessAlive(h.writerPid)) {
      // A crash's writes change the file's content, never which file it is: a disk replaced since is
      // not what the activity log and the logs describe.
      const replaced = !opts.running && d.fingerprint ? await replacedSince(d.path, d.fingerprint) : undefined;
      if (replaced) return { reason: 'ModifiedWhileOff', evidence: replaced };
      return {
        reason: 'TrackingLogNotClosed',
        evidence: `${trackingLogPathFor(d.path)}: end-of-log is 0 and its writer (process ${h.writerPid}) is gone: the log was not closed gracefully`,
      };
    }
  }
  for (const d of vm.disks) {
    const cur = await currentLog(d.path);
    const seqs = (await listSealedLogs(d.path)).map((s) => s.sequence);
    if (cur && cur.header.sequence > 0) seqs.push(cur.header.sequence);
    const old = seqs.find((s) => s <= vm.lastShippedSequence);
    if (old !== undefined) return shippedSequenceBack(vm, old, trackingLogPathFor(d.path));
  }
  if (!opts.running) {
    for (const d of vm.disks) {
      if (!d.fingerprint) continue;
      const v = await checkFingerprint(d.path, d.fingerprint);
      if (v.kind === 'modified') return { reason: 'ModifiedWhileOff', evidence: v.evidence };
      if (v.kind === 'reverted') return { reason: 'RevertedToOlderPoint', evidence: v.evidence };
    }
  }
  return checkLogSize(vm);
}

/**
 * A DirtyExtents scope (a crash or a log overflow) holds only while every change to the disks since the
 * extents were collected is in their dirty maps. Evidence that one is not, read now — the scope must
 * then be Full:
 * - the disk file changed while the VM was off (fingerprint.ts: modified, replaced, or put back);
 * - its virtual size is not the one recorded (resized by another tool);
 * - its dirty map is gone, damaged, or kept for another replica or size (extents lost).
 * Checked when a resync starts or continues, when the VM starts, and by the service's passes — not
 * only when the requirement was entered, since the disk can change at any time after.
 */
export async function detectScopeBreach(vm: VmRecord, opts: { running: boolean }): Promise<Trigger | undefined> {
  if (vm.resync?.scope !== 'DirtyExtents') return undefined;
  for (const d of vm.disks) {
    if (!opts.running && d.fingerprint) {
      const v = await checkFingerprint(d.path, d.fingerprint);
      if (v.kind === 'modified') return { reason: 'ModifiedWhileOff', evidence: v.evidence };
      if (v.kind === 'reverted') return { reason: 'RevertedToOlderPoint', evidence: v.evidence };
    }
    const disk = await openPrimary(d.path) // the VM may be running: between two of its batches;
    const size = disk.virtualSize;
    await disk.close();
    if (size !== d.virtualSize) {
      return { reason: 'ModifiedWhileOff', evidence: `${d.path}: its virtual size went from ${d.virtualSize} to ${size} bytes behind the tracker` };
    }
    if (vm.resync.mapsKept) {
      try {
        await checkDirtyMap(d.path, { virtualSize: d.virtualSize, replica: d.replicaPath });
      } catch (e) {
        // The map is the bitmap mode's log: losing it is losing writes from the log.
        return { reason: 'TrackingLogWriteFailure', evidence: (e as Error).message };
      }
    }
  }
  return undefined;
}

/** The disk's file is another one than when the fingerprint was taken (another inode or device). */
async function replacedSince(path: string, was: FileIdentity): Promise<string | undefined> {
  const now = await fileIdentity(path);
  if (now.ino === was.ino && now.dev === was.dev) return undefined;
  return `${path}: the file was replaced (inode ${was.ino} became ${now.ino}) after the VM's writer stopped without closing its log; the crash's extents describe the old file`;
}

/** Hyper-V's 50 % rule: the logs of the VM, together, against the VM's total virtual size. */
export async function checkLogSize(vm: VmRecord, pending?: number): Promise<Trigger | undefined> {
  const total = vm.disks.reduce((n, d) => n + d.virtualSize, 0);
  const bytes = pending ?? (await pendingBytes(vm));
  if (bytes > total * LOG_SIZE_LIMIT_RATIO) {
    return {
      reason: 'TrackingLogTooLarge',
      evidence: `the tracking logs hold ${formatSize(bytes)} (${bytes} bytes), more than ${LOG_SIZE_LIMIT_RATIO * 100} % of the VM's ${formatSize(total)} of virtual disks`,
    };
  }
  return undefined;
}

/**
 * Hyper-V's "reverted to an older point in time", seen in the logs: a tracking log whose sequence was
 * already shipped is back (a volume snapshot or backup of the primary put back). The one rule, for the
 * triggers and for a replication cycle about to ship. `log`: where it was seen.
 */
export function shippedSequenceBack(vm: VmRecord, sequence: number, log: string): Trigger | undefined {
  if (sequence > vm.lastShippedSequence) return undefined;
  return {
    reason: 'RevertedToOlderPoint',
    evidence: `${log}: a tracking log with sequence ${sequence} is back although log ${vm.lastShippedSequence} was already shipped: the volume was reverted to an older point in time`,
  };
}
