/** Files a resync keeps beside the disks. Named here once so that cancel, resume and tests agree. */
export function overlayPathFor(replicaPath: string): string {
  // A VHDX replica gets a differencing VHDX overlay (the disk layer picks the format from the base's content).
  return replicaPath.toLowerCase().endsWith('.vhdx') ? `${replicaPath}.resync.vhdx` : `${replicaPath}.resync.vhd`;
}

export function checkpointPathFor(replicaPath: string): string {
  return `${replicaPath}.resync.json`;
}

/** Recovery points registered with a replica (ARCHITECTURE.md "Resync" step 7: deleted after the merge). */
export function recoveryPointsDirFor(replicaPath: string): string {
  return `${replicaPath}.recovery-points`;
}


/**
 * `--keep-pre-resync-point`: the before-images a resync's merge and tracked writes overwrite in the
 * replica, kept in its recovery-point folder (the undo-log format of host/disk/undo-log.ts);
 * the replication layer adopts it as one protected point once the resync completes.
 */
export function preResyncUndoPathFor(replicaPath: string): string {
  return `${recoveryPointsDirFor(replicaPath)}/pre-resync.undo`;
}
