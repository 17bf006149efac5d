import { hostname } from 'node:os';
import { replicationHealth } from './health.js';
import { RESYNC_STATES } from './names.js';
import { type ReplicationHealth, type ReplicationState } from '../replica/states.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { averageLatencyMs, averageSize } from './statistics.js';
import { vmFolderName } from '../replica/vm-name.js';
import { TaskProgress } from './task-progress.js';
import type { VmRecord } from './store.js';
import { pendingBytes, scopeBytesNow } from './vm-logs.js';
import type { Replication } from './replication.js';

/** The Hyper-V-shaped outputs: Get-VMReplication's object, health now, Measure-VMReplication and its CurrentTask. */

export function healthNow(rep: Replication, vm: VmRecord): { health: ReplicationHealth; details: string[] } {
  return replicationHealth(vm, rep.clock.now());
}

/** ResynchronizationScope (Full | DirtyExtents) and its bytes now, while a resync is required or running. */
export async function scopeView(vm: VmRecord): Promise<{ ResynchronizationScope: 'Full' | 'DirtyExtents' | null; ResynchronizationScopeBytes: number | null }> {
  if (!vm.resync || vm.state === 'InitialReplicationInProgress') return { ResynchronizationScope: null, ResynchronizationScopeBytes: null };
  return { ResynchronizationScope: vm.resync.scope ?? 'Full', ResynchronizationScopeBytes: await scopeBytesNow(vm) };
}

/**
 * Measure's CurrentTask: the resync or initial replication under way (running or suspended), how
 * far it is (bytes compared over every disk, from the running process's progress file) and its scope.
 */
export async function currentTask(rep: Replication, vm: VmRecord): Promise<CurrentTask | null> {
  if (!RESYNC_STATES.includes(vm.state) || !vm.resync) return null;
  const initial = vm.state === 'InitialReplicationInProgress';
  const p = await TaskProgress.read(rep.store.vmDir(vm.name), vm.resync.startedAt);
  const total = vm.disks.reduce((t, d) => t + d.virtualSize, 0);
  let done = 0;
  for (const d of vm.disks) {
    if (vm.resync.disksDone.includes(d.index)) done += d.virtualSize;
    else if (p?.disks[d.index] !== undefined) done += Math.min(p.disks[d.index], d.virtualSize);
  }
  const running = (await rep.resyncPid(vm.name)) !== undefined;
  return {
    Task: initial ? 'InitialReplication' : 'Resynchronization',
    State: vm.state === 'Resynchronizing' && !running ? 'ResynchronizeSuspended' : vm.state,
    Running: running,
    PercentComplete: total > 0 ? Math.floor((done * 100) / total) : 0,
    BytesCompared: done,
    BytesTotal: total,
    Scope: initial ? 'Full' : (vm.resync.scope ?? 'Full'),
    ScopeBytes: initial ? null : await scopeBytesNow(vm),
    Disk: p?.current ?? null,
    Phase: p?.phase ?? null,
    StartedAt: vm.resync.startedAt ?? null,
  };
}

export async function measureReplication(rep: Replication, name: string): Promise<Measurement> {
  const vm = await rep.store.load(name);
  const { health, details } = healthNow(rep, vm);
  const pending = await pendingBytes(vm).catch(() => 0);
  const counters = (await rep.store.counters.read())[vm.name];
  const s = vm.statistics;
  return {
    VMName: vm.name,
    State: vm.state,
    Health: health,
    CurrentTask: await currentTask(rep, vm),
    LastReplicationType: vm.lastReplicationType ?? 'None',
    InitialReplicationSize: vm.initialReplicationSize ?? 0,
    ...(await scopeView(vm)),
    LastReplicationTime: vm.lastReplicationTime,
    PendingReplicationSize: pending,
    AverageReplicationLatency: averageLatencyMs(s) / 1000,
    MaximumReplicationLatency: s.maximumReplicationLatencyMs / 1000,
    AverageReplicationSize: averageSize(s),
    MaximumReplicationSize: s.maximumReplicationSize,
    LastReplicationSize: s.lastReplicationSize,
    SuccessfulReplicationCount: s.successfulReplicationCount,
    MissedReplicationCount: s.missedReplicationCount,
    ReplicationErrors: s.replicationErrors,
    MonitoringStartTime: s.monitoringStartTime,
    MonitoringEndTime: rep.clock.now().toISOString(),
    ReplicationHealthDetails: details,
    Relationship: 'Simple',
    Counters: {
      'Resynchronized Bytes': counters?.['Resynchronized Bytes'] ?? 0,
      'Network Bytes Sent': counters?.['Network Bytes Sent'] ?? 0,
      'Replication Count': counters?.['Replication Count'] ?? 0,
      'Average Replication Size': averageSize(s),
      'Average Replication Latency': averageLatencyMs(s) / 1000,
      'Last Replication Size': s.lastReplicationSize,
      'Pending Replication Size': pending,
    },
  };
}

export interface CurrentTask {
  Task: 'Resynchronization' | 'InitialReplication';
  State: ReplicationState;
  /** A process is running it now (else it is suspended, or its process died and the service continues it). */
  Running: boolean;
  PercentComplete: number;
  BytesCompared: number;
  BytesTotal: number;
  Scope: 'Full' | 'DirtyExtents';
  ScopeBytes: number | null;
  /** The disk being compared (index), and its phase: comparing, merging, applying… */
  Disk: number | null;
  Phase: string | null;
  StartedAt: string | null;
}

export interface Measurement {
  VMName: string;
  State: ReplicationState;
  Health: ReplicationHealth;
  /** The resync or initial replication under way, with how far it is and its scope (null: none). */
  CurrentTask: CurrentTask | null;
  /** Regular after a replication cycle; None before the first. */
  LastReplicationType: 'None' | 'Regular' | 'Planned';
  /** Bytes the initial replication sent (0 before it ran). */
  InitialReplicationSize: number;
  ResynchronizationScope: 'Full' | 'DirtyExtents' | null;
  ResynchronizationScopeBytes: number | null;
  LastReplicationTime: string | null;
  PendingReplicationSize: number;
  /** Seconds. */
  AverageReplicationLatency: number;
  MaximumReplicationLatency: number;
  AverageReplicationSize: number;
  MaximumReplicationSize: number;
  LastReplicationSize: number;
  SuccessfulReplicationCount: number;
  MissedReplicationCount: number;
  ReplicationErrors: number;
  MonitoringStartTime: string;
  MonitoringEndTime: string;
  ReplicationHealthDetails: string[];
  Relationship: 'Simple';
  Counters: Record<string, number>;
}

/** Get-VMReplication's object, with Hyper-V's property names (PascalCase, states and health as names). */
export function replicationView(vm: VmRecord, health: { health: ReplicationHealth; details: string[] }) {
  const server = isReplicaAddress(vm.replica) ? parseSiteAddress(vm.replica, vmFolderName(vm.name)) : undefined;
  return {
    VMName: vm.name,
    VMId: vm.vmId,
    State: vm.state,
    Health: health.health,
    Mode: 'Primary' as const,
    FrequencySec: vm.settings.ReplicationFrequencySec,
    PrimaryServer: hostname(),
    ReplicaServer: vm.replica,
    Relationship: 'Simple' as const,
    AutoResynchronizeEnabled: vm.settings.AutoResynchronizeEnabled,
    AutoResynchronizeIntervalStart: vm.settings.AutoResynchronizeIntervalStart,
    AutoResynchronizeIntervalEnd: vm.settings.AutoResynchronizeIntervalEnd,
    PauseResynchronizeOutsideWindow: vm.settings.PauseResynchronizeOutsideWindow,
    ResynchronizeStartTime: vm.resynchronizeStartTime,
    LastReplicationTime: vm.lastReplicationTime,
    ReplicationHealthDetails: health.details,
    ResynchronizationReason: vm.resync?.reason ?? null,
    ResynchronizationScope: vm.resync && vm.state !== 'InitialReplicationInProgress' ? (vm.resync.scope ?? 'Full') : null,
    ResynchronizationScopeBytes: vm.resync && vm.state !== 'InitialReplicationInProgress' ? (vm.resync.scopeBytes ?? null) : null,
    ResynchronizationEvidence: vm.resync?.evidence ?? null,
    LastError: vm.lastError,
    ReplicatedDisks: vm.disks.map((d) => ({ Index: d.index, Path: d.path, ReplicaPath: d.replicaPath, VirtualSize: d.virtualSize, Format: d.format, Type: d.type })),
    // Get-VMReplication's own property names (| fl *), besides the short ones above.
    ReplicationState: vm.state,
    ReplicationHealth: health.health,
    ReplicationMode: 'Primary' as const,
    ReplicationRelationshipType: 'Simple' as const,
    ReplicationFrequencySec: vm.settings.ReplicationFrequencySec,
    PrimaryServerName: hostname(),
    ReplicaServerName: server ? server.host : hostname(),
    ReplicaServerPort: server ? server.port : null,
    /** Certificate: mutual TLS to a replica server; None: a directory on this machine. */
    AuthenticationType: server ? ('Certificate' as const) : ('None' as const),
    RecoveryHistory: vm.settings.RecoveryHistory ?? 0,
    InitialReplicationStartTime: vm.initialReplicationStartTime ?? null,
    BandwidthLimit: vm.network?.bandwidth ?? null,
  };
}
