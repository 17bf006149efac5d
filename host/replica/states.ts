/**
 * Hyper-V's names for replication states, health and settings (reference/hyperv-replica.md §1.3–1.4):
 * the module-2.0 `VMReplicationState` names, always used as names, never as numbers (the numbers
 * changed between module versions and broke monitoring scripts).
 */
export const REPLICATION_STATES = [
  'Disabled',
  'ReadyForInitialReplication',
  'InitialReplicationInProgress',
  'WaitingForInitialReplication',
  'Replicating',
  'PreparedForFailover',
  'FailedOverWaitingCompletion',
  'FailedOver',
  'Suspended',
  'Error',
  'WaitingForStartResynchronize',
  'Resynchronizing',
  'ResynchronizeSuspended',
  'RecoveryInProgress',
  'FailbackInProgress',
  'FailbackComplete',
  'WaitingForUpdateCompletion',
  'UpdateError',
  'WaitingForRepurposeCompletion',
  'PreparedForSyncReplication',
  'PreparedForGroupReverseReplication',
  'FiredrillInProgress',
] as const;
export type ReplicationState = (typeof REPLICATION_STATES)[number];

export const REPLICATION_HEALTH = ['NotApplicable', 'Normal', 'Warning', 'Critical'] as const;
export type ReplicationHealth = (typeof REPLICATION_HEALTH)[number];

/**
 * Why a VM needs resynchronization: Hyper-V's six triggers (§2.3), plus an explicit request
 * (`resume-replication --resynchronize` outside Resynchronization Required).
 */
export const RESYNC_REASONS = [
  'ModifiedWhileOff',
  'TrackingLogTooLarge',
  'TrackingLogWriteFailure',
  'TrackingLogNotClosed',
  'RevertedToOlderPoint',
  'ReplicaLogOutOfSequence',
  'ReplicaLogInvalid',
  'Requested',
] as const;
export type ResyncReason = (typeof RESYNC_REASONS)[number];
