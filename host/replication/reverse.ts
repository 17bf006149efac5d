import { dirname, join, resolve } from 'node:path';
import { realpath } from 'node:fs/promises';
import { VhdsyncError, ioError } from '../errors.js';
import { completeFailover } from './failover.js';
import { deleteRecoveryPoints } from '../replica/recovery-points.js';
import type { Replication } from './replication.js';
import { LocalReplicaSite } from '../replica/local-site.js';
import type { FailoverRecord } from '../replica/site.js';
import { SITE_FILES } from '../replica/site-files.js';
import { isReplicaAddress } from '../transport/replica-address.js';
import type { NetworkSettings } from '../transport/network-settings.js';
import type { VmRecord } from './store.js';
import { enableReplication } from './enable.js';
import { refreshFingerprints } from './resync-required.js';

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
  if (isReplicaAddress(vm.replica)) {
    if (vm.state !== 'FailedOver' && vm.state !== 'FailedOverWaitingCompletion') {
      throw new VhdsyncError('STATE', `reverse-replication needs '${name}' failed over with start-failover ${name} --planned or --unplanned; it is ${vm.state}`);
    }
    throw new VhdsyncError(
      'UNSUPPORTED',
      `virtual machine '${name}' failed over to the replica server ${vm.replica}: reverse it on that server's machine (vhdsync reverse-replication ${name} --replica-path <its --root> --replica tls://<this host>:PORT/${name}), with vhdsync replica serve here serving these disks as ${name}/<file>`,
    );
  }
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
    await refreshFingerprints(v, now);
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

export interface ReverseFromReplicaInput {
  /** The replica directory (a replica server's --root, or a local replica directory) holding `<vm>/`. */
  replicaPath: string;
  /** The old primary's side, now the replica: tls://HOST:PORT/NAME (its server serves the old primary disks as NAME/<file>) or a directory. */
  replica: string;
  network?: NetworkSettings;
}

/**
 * Set-VMReplication -Reverse run where the failed-over replica is (`reverse-replication <vm>
 * --replica-path DIR --replica tls://OLD-PRIMARY:PORT/NAME`): a VM that failed over to a replica server
 * is reversed on that server's machine, whose home has no record of it. A planned or unplanned
 * failover recorded in `DIR/<vm>/` (one still waiting is completed here: its views merged, the other
 * points deleted) makes the folder's disks the primary of a new VM record in this home, replicating to
 * the old primary's side — a replica server there serves the old primary disks as `NAME/<file>` (they
 * are never re-created: the baseline is our resync, only differences travel). The folder stops being
 * a replica (`retire`). The VM record is made first, so a run killed half-way is finished by running it
 * again. The old primary's own record (on its machine) stays FailedOver: remove it there.
 */
export async function reverseFromReplica(rep: Replication, name: string, input: ReverseFromReplicaInput): Promise<VmRecord> {
  const root = await realpath(resolve(input.replicaPath)).catch((e) => {
    throw ioError(input.replicaPath, e);
  });
  const existing = await rep.store.load(name).catch((e: VhdsyncError) => {
    if (e.code === 'NOT_FOUND') return undefined;
    throw e;
  });
  const underFolder = existing?.disks.every((d) => dirname(d.path) === join(root, name));
  if (existing && !(underFolder && (existing.state === 'ReadyForInitialReplication' || (existing.state === 'WaitingForStartResynchronize' && existing.resync?.evidence.startsWith(REVERSED))))) {
    throw new VhdsyncError('STATE', `reverse-replication --replica-path: a virtual machine '${name}' is already enabled in this home (${existing.state}); remove it first, or use another --home`);
  }
  // The failover is completed first (here, if it still waits: its running copy becomes the disks), so
  // that nothing below can drop what the failed-over VM wrote.
  const found = await LocalReplicaSite.fromFolder(root, name);
  let kind: FailoverRecord['kind'] = 'planned';
  // Reversed already (killed while the folder was being retired): only the retiring is left to do.
  const reversed = existing?.state === 'WaitingForStartResynchronize';
  if (found && !reversed) {
    const { site } = found;
    const failover = await site.failoverRecord();
    if (!failover || failover.kind === 'test' || failover.reverting || failover.phase === 'stopping') {
      throw new VhdsyncError(
        'STATE',
        `reverse-replication needs the replica of '${name}' in ${site.vmDir} failed over (start-failover ${name} --planned or --unplanned); it is ${failover ? `under a ${failover.kind} failover${failover.phase ? ` (${failover.phase})` : ''}` : 'not failed over'}`,
      );
    }
    kind = failover.kind;
    if (failover.phase === 'waiting' || failover.phase === 'completing') {
      // Complete-VMFailover, from this side.
      if (failover.phase === 'waiting') await site.setFailoverRecord({ ...failover, phase: 'completing' });
      await site.commitFailover(failover.sequence);
      const { phase: _p, resumeState: _r, ...done } = failover;
      await site.setFailoverRecord(done);
    }
    if (!existing) await enableReplication(rep, { name, disks: site.disks.map((d) => site.diskPath(d.index)), replica: input.replica, network: input.network });
  } else if (!existing) {
    throw new VhdsyncError('NOT_FOUND', `${join(root, name)}: no replica of '${name}' here (no ${SITE_FILES.state})`);
  }
  // Killed between enabling and saying why, the VM is still ReadyForInitialReplication.
  if ((await rep.get(name)).state === 'ReadyForInitialReplication') await markReversed(rep, name, kind);
  // The folder's disks are this VM's primary disks now: nothing of the replica may remain beside them.
  if (found) await found.site.retire();
  return rep.get(name);
}

async function markReversed(rep: Replication, name: string, kind: FailoverRecord['kind']): Promise<void> {
    const now = rep.clock.now();
    await rep.store.update(name, async (v, ctx) => {
      const evidence = `${REVERSED} ${kind === 'unplanned' ? 'an' : 'a'} ${kind} failover: ${v.disks.map((d) => d.replicaPath).join(', ')} becomes the replica of ${v.disks.map((d) => d.path).join(', ')}`;
      v.state = 'WaitingForStartResynchronize';
      v.resync = { reason: 'Requested', evidence, requiredAt: now.toISOString(), disksDone: [], restart: true };
      ctx.emit({ id: 90002, level: 'Error', vm: v.name, reason: 'Requested', evidence });
    });
}

const REVERSED = 'replication reversed after';
