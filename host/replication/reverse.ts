import { dirname, join } from 'node:path';
import { VhdsyncError } from '../errors.js';
import { completeFailover } from './failover.js';
import { deleteRecoveryPoints } from './recovery-points.js';
import type { Replication } from './replication.js';
import type { VmRecord } from './store.js';

/**
 * Set-VMReplication -Reverse after a planned or unplanned failover (reference §1.2; one not yet completed is completed first): the failed-over replica becomes
 * the primary and the old primary its replica. The old primary may have diverged (written to after the
 * failover, or the new primary written to since), so the new baseline is always made by our resync —
 * it compares both and ships only the differences, never a full copy. The caller runs it
 * (`Replication.runResync`), as for `resume-replication --resynchronize`.
 *
 * The reversed site keeps its logs and `replica.json` under `<replica>/<vm>/` (default: a
 * `.vhdsync-replica` folder beside the old primary's first disk); the replica disks stay where the old
 * primary disks are.
 */
export async function reverseReplication(rep: Replication, name: string, opts: { replica?: string } = {}): Promise<VmRecord> {
  let vm = await rep.get(name);
  const oldSite = rep.localSite(vm, 'reverse replication');
  let failover = await oldSite.failoverRecord();
  // Set-VMReplication -Reverse after a failover that is not completed yet commits it first (as
  // complete-failover: the failed-over disks become the replica disks, the other points go).
  if (vm.state === 'FailedOverWaitingCompletion' || failover?.phase === 'completing') {
    if ((await rep.runningPid(name)) === undefined) {
      await completeFailover(rep, name);
      vm = await rep.get(name);
      failover = await oldSite.failoverRecord();
    }
  }
  // After a planned failover the old primary equals the replica; after an unplanned one it may hold
  // writes that never reached the replica (the loss the failover accepted): either way the resync
  // that follows makes it the replica of the failed-over disks.
  if (vm.state !== 'FailedOver' || (failover?.kind !== 'planned' && failover?.kind !== 'unplanned') || failover.reverting) {
    throw new VhdsyncError(
      'STATE',
      `reverse-replication needs '${name}' failed over with start-failover ${name} --planned or --unplanned; it is ${vm.state}${failover ? ` with a ${failover.kind} failover${failover.reverting ? ` still reverting (run start-failover ${name} --unplanned again to finish it)` : ''}` : ''}`,
    );
  }
  const pid = await rep.runningPid(name);
  if (pid !== undefined) throw new VhdsyncError('STATE', `reverse-replication: process ${pid} is running '${name}'; stop it first`);
  const root = opts.replica ?? join(dirname(vm.disks[0].path), '.vhdsync-replica');
  const now = rep.clock.now();
  const { vm: after } = await rep.store.update(name, async (v, ctx) => {
    if (v.state !== 'FailedOver') throw new VhdsyncError('STATE', `reverse-replication: '${name}' is ${v.state} now; nothing changed`);
    v.disks = v.disks.map((d) => ({ ...d, path: d.replicaPath, replicaPath: d.path, fingerprint: undefined }));
    v.replica = root;
    await rep.refreshFingerprints(v, now);
    const evidence = `replication reversed after ${failover.kind === "unplanned" ? "an" : "a"} ${failover.kind} failover: ${v.disks.map((d) => d.replicaPath).join(', ')} becomes the replica of ${v.disks.map((d) => d.path).join(', ')}`;
    v.state = 'WaitingForStartResynchronize';
    v.resync = { reason: 'Requested', evidence, requiredAt: now.toISOString(), disksDone: [], restart: true };
    v.resynchronizeStartTime = null;
    v.control = null;
    v.retry = null;
    v.lastError = null;
    ctx.emit({ id: 90002, level: 'Error', vm: v.name, reason: 'Requested', evidence });
  });
  // The old replica's history and failover record describe a disk that is now the primary.
  for (const d of after.disks) await deleteRecoveryPoints(d.path);
  await oldSite.setFailoverRecord(null);
  return after;
}
