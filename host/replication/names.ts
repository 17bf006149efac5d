/** The primary's replication constants: Hyper-V's defaults and limits, and the states that own tracking logs. */
import type { ReplicationState, ResyncReason } from '../replica/states.js';

/**
 * Triggers after which the differences are known to lie in the activity log's extents and the
 * unshipped logs' (beyond Hyper-V: the resync compares only those). Every other trigger can hide a
 * change anywhere, so its resync compares everything.
 */
export const DIRTY_EXTENT_REASONS: readonly ResyncReason[] = ['TrackingLogNotClosed', 'TrackingLogTooLarge'];

/** The states in which the primary keeps tracking logs (and so in which triggers are evaluated). */
export const TRACKING_STATES: readonly ReplicationState[] = [
  'InitialReplicationInProgress',
  'Replicating',
  'Suspended',
  'Error',
  'Resynchronizing',
  'ResynchronizeSuspended',
];

/** States where a resync (or the initial replication, which uses the same engine) owns the logs. */
export const RESYNC_STATES: readonly ReplicationState[] = ['InitialReplicationInProgress', 'Resynchronizing', 'ResynchronizeSuspended'];

export const FREQUENCIES = [30, 300, 900] as const;

/** Hyper-V's defaults (Msvm_ReplicationSettingData, Set-VMReplication). */
export const DEFAULTS = {
  ReplicationFrequencySec: 300,
  AutoResynchronizeEnabled: false,
  AutoResynchronizeIntervalStart: '18:30:00',
  AutoResynchronizeIntervalEnd: '06:00:00',
  /** Beyond Hyper-V: also pause a running automatic resync when its window closes. */
  PauseResynchronizeOutsideWindow: false,
} as const;

/** RecoveryHistory's default (Hyper-V's): the latest point only. Absent from a record means this. */
export const DEFAULT_RECOVERY_HISTORY = 0;

/** Unshipped tracking logs larger than this share of the VM's total virtual size require a resync. */
export const LOG_SIZE_LIMIT_RATIO = 0.5;

/** `-ResynchronizeStartTime` may be at most this far ahead. */
export const MAX_SCHEDULE_AHEAD_MS = 7 * 24 * 3600 * 1000;

export function resyncRequiredMessage(vm: string): string {
  return `Resynchronization is required for the virtual machine ${vm}. Resume replication to start resynchronization.`;
}
