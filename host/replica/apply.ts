import { openDisk } from '../disk/index.js';
import { VhdsyncError } from '../errors.js';
import { fileIdentity, sameIdentity, type FileIdentity } from '../file-identity.js';
import { removeIfExists } from '../fsutil.js';
import { scanTrackingLog } from '../tracking/log.js';
import type { LocalReplicaSite } from './local-site.js';
import { dropHistory, recordApplied, UndoCapture } from './recovery-points.js';
import { keepForExtended } from './extended-logs.js';
import { cycleLogs } from './log-folder.js';
import { testViewPathFor } from './site-files.js';
import type { ReplicaState } from './site-state.js';
import type { ApplyOptions, ApplyResult } from './site.js';
import { idFromHex, toHex, bytesEqual } from '../bytes.js';

/**
 * The apply engine of a replica site and its log validation. Logs are applied strictly in sequence, a
 * whole cycle (all disks) at a time, only after every log of the cycle has been checked end to end.
 * What the replica sees decides the sixth trigger: a log that is out of sequence, or invalid, or a
 * replica disk that is not the one the last log was applied to (a backup of the replica restored) —
 * each is reported, never applied. Runs under the site's locks (LocalReplicaSite.apply).
 */
export async function applyCycles(site: LocalReplicaSite, opts: ApplyOptions): Promise<ApplyResult> {
  const history = opts.recoveryHistory ?? 0;
  const state = await site.readState();
  if (!state) throw new VhdsyncError('STATE', `${site.statePath}: the replica has no state; run the initial replication first`);
  const cycles = await cycleLogs(site.logsDir, site.disks.length);
  const result: ApplyResult = { applied: [], bytes: 0, records: 0, lastApplied: state.lastAppliedSequence };
  let last = state.lastAppliedSequence;
  let resuming = state.applying;

  if (resuming !== null && !cycles.has(resuming)) {
    // The apply finished and its logs were removed, but the process stopped before saying so.
    last = resuming;
    resuming = null;
    await site.writeState({ lastAppliedSequence: last, applying: null, disks: await diskIdentities(site) });
    result.lastApplied = last;
  } else if (resuming === null) {
    // The replica disks must be exactly as the last applied log left them.
    for (const [i, d] of site.disks.entries()) {
      const was = state.disks.find((x) => x.name === d.name)?.identity;
      const now = await fileIdentity(site.diskPath(i));
      if (!was || !sameIdentity(was, now)) {
        return {
          ...result,
          problem: {
            reason: 'ReplicaLogOutOfSequence',
            evidence: `${site.diskPath(i)}: the replica disk changed since log ${last} was applied (${identityChange(was, now)}); it was restored from a backup or modified, so the next log would apply out of sequence`,
          },
        };
      }
    }
  }
  for (const [seq, files] of cycles) {
    const again = resuming !== null && seq === resuming;
    if (!again && seq <= last) {
      return { ...result, problem: { reason: 'ReplicaLogOutOfSequence', evidence: `log ${seq} arrived but the replica has already applied up to log ${last}` } };
    }
    if (!again && seq !== last + 1) {
      return { ...result, problem: { reason: 'ReplicaLogOutOfSequence', evidence: `log ${seq} arrived but the replica expects log ${last + 1} next (it has applied up to log ${last})` } };
    }
    const invalid = await validateCycle(site, seq, files);
    if (invalid) return { ...result, problem: { reason: 'ReplicaLogInvalid', evidence: invalid } };
    // An extended replica gets what is applied here: kept before the first write lands.
    await keepForExtended(site.vmDir, files);
    // A resumed apply would capture before-images that are already overwritten: drop the history.
    if (again) for (const d of site.disks) await dropHistory(site.diskPath(d.index));
    await site.writeState({ ...state, lastAppliedSequence: last, applying: seq });
    for (const d of site.disks) {
      const path = site.diskPath(d.index);
      const disk = await openDisk(path);
      const undo = UndoCapture.begin(path, seq, history);
      // A test failover's view reads through to the replica: copy what is about to change into it.
      const view = await openDisk(testViewPathFor(path)).catch(() => undefined);
      try {
        const scan = await scanTrackingLog(files[d.index]!, async (r) => {
          if (undo) await undo.before(disk, r.offset, r.data.byteLength);
          if (view) {
            const keep = new Uint8Array(r.data.byteLength);
            await view.read(r.offset, keep);
            await view.write(r.offset, keep);
          }
          await disk.write(r.offset, r.data);
        });
        result.bytes += scan.size;
        result.records += scan.records;
        if (view) await view.flush();
        await disk.flush();
        await undo?.commit();
      } finally {
        await view?.close();
        await disk.close();
      }
    }
    for (const d of site.disks) await recordApplied(site.diskPath(d.index), seq, opts.now ?? new Date(), history);
    last = seq;
    resuming = null;
    for (const f of files) if (f) await removeIfExists(f);
    await site.writeState({ lastAppliedSequence: seq, applying: null, disks: await diskIdentities(site) });
    result.applied.push(seq);
    result.lastApplied = seq;
  }
  return result;
}

/** Check a whole cycle before any of it is applied. Returns the problem, or undefined. */
export async function validateCycle(site: LocalReplicaSite, seq: number, files: (string | undefined)[]): Promise<string | undefined> {
  for (const d of site.disks) {
    const f = files[d.index];
    if (!f) return `log ${seq} has no log for disk ${d.index} (${d.name})`;
    let bad: string | undefined;
    const scan = await scanTrackingLog(f, (r) => {
      if (!bad && r.offset + r.data.byteLength > d.virtualSize) bad = `${f}: a write at offset ${r.offset} (${r.data.byteLength} bytes) is past the end of ${d.name} (${d.virtualSize} bytes)`;
    }).catch((e: Error) => {
      bad = `${f}: ${e.message.replace(`${f}: `, '')}`;
      return undefined;
    });
    if (bad) return bad;
    if (!scan) return `${f}: unreadable`;
    const h = scan.header;
    if (h.endOfLog === 0) return `${f}: end-of-log is 0: the log was never closed, it must not be applied`;
    if (scan.torn || scan.end !== h.endOfLog) return `${f}: a record is damaged (CRC-32C mismatch or cut short at byte ${scan.end} of ${h.endOfLog})`;
    if (h.sequence !== seq) return `${f}: its header says sequence ${h.sequence}, not ${seq}`;
    if (!bytesEqual(h.vmId, idFromHex(site.vmId)) || !bytesEqual(h.diskId, idFromHex(d.diskId)) || h.diskIndex !== d.index) {
      return `${f}: it belongs to another VM or disk (VM ${toHex(h.vmId)}, disk ${h.diskIndex})`;
    }
  }
  return undefined;
}

export async function diskIdentities(site: LocalReplicaSite): Promise<ReplicaState['disks']> {
  const out: ReplicaState['disks'] = [];
  for (const d of site.disks) out.push({ name: d.name, identity: await fileIdentity(site.diskPath(d.index)), ...(d.diskId ? { diskId: d.diskId } : {}) });
  return out;
}

function identityChange(was: FileIdentity | undefined, now: FileIdentity): string {
  if (!was) return 'no identity was recorded';
  if (was.ino !== now.ino) return 'the file was replaced';
  if (was.size !== now.size) return `size ${was.size} → ${now.size} bytes`;
  return `modification time ${was.mtimeNs} → ${now.mtimeNs} ns`;
}
