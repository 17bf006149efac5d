import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { VhdsyncError, ioError } from '../errors.js';
import { SITE_NAME } from '../transport/replica-address.js';
import type { ReplicationHealth, ReplicationState } from './states.js';
import type { RecoveryPoint } from './recovery-points.js';
import { LocalReplicaSite } from './local-site.js';
import type { FailoverRecord } from './site.js';
import type { ReplicaFolderState } from './site-state.js';

/**
 * Get-VMReplication on the replica side (reference §1.2, §1.5): what a replica folder says of itself —
 * `replica.json`, `failover.json`, a resync's checkpoint, the recovery points — without the primary's
 * record. Run on a local replica directory, or by a replica server on its root (the 'describe' call).
 */
export interface ReplicaView {
  VMName: string;
  VMId: string;
  Mode: 'Replica' | 'ExtendedReplica';
  Relationship: 'Simple' | 'Extended';
  State: ReplicationState;
  Health: ReplicationHealth;
  HealthDetails: string[];
  /** When the last log was applied (or the replica rebased by an initial replication or resync). */
  LastAppliedLogTime: string | null;
  LastAppliedSequence: number;
  ReplicatedDisks: string[];
  RecoveryPoints: { Time: string; Kind: RecoveryPoint['kind']; Sequence: number; SizeOnDisk: number; PreResync?: true }[];
  /** The failover in effect, if any (Hyper-V shows it only as the state; vhdsync says which and where it is). */
  Failover: { Kind: FailoverRecord['kind']; Phase: string; Sequence: number; Time: string } | null;
  /** The disk being resynchronized and its phase, if a resync is under way. */
  Resynchronizing: { Disk: string; Phase: string } | null;
}

/** Replica folders under `root` (or the one named), with what each says of itself. */
export async function describeReplicas(root: string, name?: string, now = new Date()): Promise<ReplicaView[]> {
  if (name !== undefined && !SITE_NAME.test(name)) throw new VhdsyncError('USAGE', `'${name}' is not a replica folder name (1-64 letters, digits, '.', '_' or '-')`);
  let names: string[];
  if (name !== undefined) names = [name];
  else {
    const entries = await readdir(root, { withFileTypes: true }).catch((e) => {
      throw ioError(root, e);
    });
    names = entries.filter((e) => e.isDirectory() && SITE_NAME.test(e.name)).map((e) => e.name).sort();
  }
  const out: ReplicaView[] = [];
  for (const n of names) {
    const st = await lstat(join(root, n)).catch(() => undefined);
    if (!st?.isDirectory()) {
      if (name !== undefined) throw new VhdsyncError('NOT_FOUND', `${join(root, n)}: no replica of that name here`);
      continue;
    }
    const found = await LocalReplicaSite.fromFolder(root, n);
    if (!found) {
      if (name !== undefined) out.push(waiting(n));
      continue;
    }
    out.push(await describe(n, found.site, found.state, now));
  }
  return out;
}

function waiting(name: string): ReplicaView {
  return {
    VMName: name, VMId: '', Mode: 'Replica', Relationship: 'Simple', State: 'WaitingForInitialReplication', Health: 'Warning',
    HealthDetails: [`Initial replication is not complete for virtual machine ${name}.`], LastAppliedLogTime: null, LastAppliedSequence: 0,
    ReplicatedDisks: [], RecoveryPoints: [], Failover: null, Resynchronizing: null,
  };
}

async function describe(name: string, site: LocalReplicaSite, state: ReplicaFolderState, now: Date): Promise<ReplicaView> {
  const failover = await site.failoverRecord();
  let resync: ReplicaView['Resynchronizing'] = null;
  for (const d of site.disks) {
    const phase = await site.resyncPhase(d.index);
    if (phase) {
      resync = { Disk: d.name, Phase: phase };
      break;
    }
  }
  const points = await site.points(state.updatedAt ?? null);
  let replicationState: ReplicationState = 'Replicating';
  if (failover && failover.kind !== 'test') replicationState = failover.phase || failover.reverting ? 'FailedOverWaitingCompletion' : 'FailedOver';
  else if (resync) replicationState = 'Resynchronizing';
  const details: string[] = [];
  let health: ReplicationHealth = 'Normal';
  if (replicationState === 'FailedOverWaitingCompletion') details.push(`Virtual machine ${name} is failed over, waiting for completion (${failover!.kind}).`);
  else if (replicationState === 'FailedOver') details.push(`Virtual machine ${name} is failed over and not reverse-replicated.`);
  else if (replicationState === 'Resynchronizing') details.push(`Resynchronization is in progress for virtual machine ${name}.`);
  else {
    // Hyper-V's rule for a replica: Warning when nothing was received for over an hour.
    const last = state.updatedAt ? Date.parse(state.updatedAt) : NaN;
    if (!Number.isNaN(last) && now.getTime() - last > 3600_000) details.push(`Virtual machine ${name} has received no replication for more than an hour.`);
  }
  if (details.length > 0) health = 'Warning';
  if (failover?.kind === 'test') details.push(`A test failover of virtual machine ${name} is in effect.`);
  return {
    VMName: name,
    VMId: state.vmId,
    // Get-VMReplication on the third site of an extended replication: Mode ExtendedReplica.
    Mode: state.relationship === 'Extended' ? 'ExtendedReplica' : 'Replica',
    Relationship: state.relationship,
    State: replicationState,
    Health: health,
    HealthDetails: details,
    LastAppliedLogTime: state.updatedAt ?? null,
    LastAppliedSequence: state.lastAppliedSequence,
    ReplicatedDisks: state.disks,
    RecoveryPoints: points.map((p) => ({ Time: p.time, Kind: p.kind, Sequence: p.sequence, SizeOnDisk: p.sizeOnDisk, ...(p.protected ? { PreResync: true as const } : {}) })),
    Failover: failover ? { Kind: failover.kind, Phase: failover.phase ?? (failover.kind === 'test' ? 'running' : 'completed'), Sequence: failover.sequence, Time: failover.time } : null,
    Resynchronizing: resync,
  };
}
