import type { RecoveryPoint } from './recovery-points.js';
import type { ResyncReason } from './states.js';

/**
 * The replica site's interface: what the replication layer asks of a VM's replica, wherever it is —
 * a directory on this machine (local-site.ts) or a folder under a replica server's root
 * (remote-site.ts, the same operations carried over mutual TLS and run there by a LocalReplicaSite).
 * The site's files are named in site-files.ts.
 */

export interface ReplicaDiskSpec {
  index: number;
  /** File name on the replica (the primary's file name). */
  name: string;
  /** Where the replica disk is when it is not `<root>/<vm>/<name>`: a reversed relationship's old primary. */
  path?: string;
  diskId: string;
  virtualSize: number;
  format: 'raw' | 'vhd' | 'vhdx';
  /** Logical sector size of the primary (512 or 4096): a VHDX replica is made with the same. */
  sectorSize: number;
}

export interface ApplyProblem {
  reason: Extract<ResyncReason, 'ReplicaLogOutOfSequence' | 'ReplicaLogInvalid'>;
  evidence: string;
}

export interface ApplyResult {
  applied: number[];
  /** Bytes of the logs applied. */
  bytes: number;
  records: number;
  lastApplied: number;
  problem?: ApplyProblem;
}

export interface RebaseOptions {
  /** `--keep-pre-resync-point`: the resync left the replica's former bytes beside it; keep them as a protected point of this time. */
  preResyncPointTime?: string;
  /** The replica of a replica (extended replication): recorded, so the site's own view says ExtendedReplica. */
  extended?: boolean;
}

/**
 * What the replication layer asks of a replica site, wherever it is: a directory on this machine
 * (LocalReplicaSite) or a directory under a replica server's root (RemoteReplicaSite, the same
 * operations carried over mutual TLS and run there by a LocalReplicaSite).
 */
export interface ReplicaSite extends FailoverSite {
  /** Where the site is, for messages: a directory or tls://HOST:PORT/NAME. */
  readonly where: string;
  /** Initial replication: an empty replica of the same format and size for every disk that has none. */
  createEmptyDisks(): Promise<void>;
  /**
   * Before a resync: the folder and every disk must be there. A resync never re-seeds a missing replica
   * (an unmounted volume would hide the outage behind a full copy); only an explicit initial replication does.
   */
  requireReplica(): Promise<void>;
  /** The replica disks already there (a seed placed by hand is used only when asked: --use-existing-replica). */
  existingDisks(): Promise<string[]>;
  /** Ship one sealed log (the file `from` on this machine). */
  receive(sequence: number, diskIndex: number, from: string): Promise<void>;
  lastApplied(): Promise<number>;
  /** After an initial replication or a resync: the replica equals the primary as of `lastApplied`. */
  rebase(lastApplied: number, opts?: RebaseOptions): Promise<void>;
  /** Apply every shipped cycle that follows the last applied one, in order. */
  apply(opts?: ApplyOptions): Promise<ApplyResult>;
  /** Drop an unfinished resync of one disk (its overlay and checkpoint); refused once its merge started. */
  cancelResync(diskIndex: number): Promise<{ cancelled: boolean }>;
}



export const FAILOVER_PHASES = ['waiting', 'completing', 'stopping'] as const;
export type FailoverPhase = (typeof FAILOVER_PHASES)[number];

/** What failover is in effect on a replica site (`<site>/failover.json`; failover.ts). */
export interface FailoverRecord {
  version: 1;
  kind: 'test' | 'planned' | 'unplanned';
  sequence: number;
  time: string;
  /** Set while the replica is being reverted in place (done again after a crash). Records of vhdsync before the failover lifecycle only. */
  reverting?: boolean;
  /**
   * A planned or unplanned failover not yet completed: `waiting` (Hyper-V's FailedOverWaitingCompletion:
   * the running copy is a view over each replica disk, `<replica disk>.failover.vhd`, the replica itself
   * is as it was); `completing` (complete-failover merges the views into the replica: the point of no
   * return, done again after a crash); `stopping` (stop-failover removes the views, done again after a
   * crash). Absent: completed, or a test failover.
   */
  phase?: FailoverPhase;
  /** The primary's state to go back to when the failover is stopped. */
  resumeState?: string;
  startedAt: string;
}

/**
 * What failover needs of a replica site (failover.ts decides; the site acts on its own files). A
 * test failover's views are `<replica disk>.test-failover.vhd`, named by the site, never by a caller.
 */
export interface FailoverSite {
  /** Where disk `index`'s replica is, for the user: a path, or tls://HOST:PORT/NAME/<file>. */
  diskLocation(index: number): string;
  /** The points every disk has, newest first; the latest is `latestTime` (the last replication time). */
  points(latestTime: string | null): Promise<RecoveryPoint[]>;
  failoverRecord(): Promise<FailoverRecord | undefined>;
  setFailoverRecord(record: FailoverRecord | null): Promise<void>;
  /** Writable views of every disk at `sequence`; returns their locations. */
  createTestViews(sequence: number): Promise<string[]>;
  /** Remove the views (those that exist); returns the locations removed. */
  removeTestViews(): Promise<string[]>;
  /** The replica disks themselves go back to `sequence` (undo logs written in place), then rebase there. */
  revertTo(sequence: number): Promise<void>;
  /** The phase of an unfinished resync of disk `index` ('comparing', 'compared', 'merging'), or null. */
  resyncPhase(index: number): Promise<string | null>;
  /** A planned or unplanned failover: writable views of every disk at `sequence` (`<disk>.failover.vhd`); returns their locations. */
  createFailoverViews(sequence: number): Promise<string[]>;
  /** Stop-VMFailover: remove the failover views (those that exist); the replica disks were never touched. Returns the locations removed. */
  removeFailoverViews(): Promise<string[]>;
  /**
   * Complete-VMFailover: merge each failover view into its replica disk (journalled, resumed after a
   * crash), delete every recovery point, drop unapplied logs and rebase at `sequence`.
   */
  commitFailover(sequence: number): Promise<void>;
}

export interface ApplyOptions {
  now?: Date;
  recoveryHistory?: number;
}

/** Receives one log: bytes in order, then commit (fsync, rename into place) or abort (nothing left). */
export interface LogWriter {
  write(bytes: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}
