/**
 * Replication statistics of the current monitoring interval (Measure-VMReplication, WMI
 * Msvm_ReplicationStatistics): counts, sizes and latencies of replication cycles. At the end of each
 * monitoring interval they are reported (event 29174) and start again.
 */
export interface ReplicationStatistics {
  monitoringStartTime: string;
  successfulReplicationCount: number;
  missedReplicationCount: number;
  replicationErrors: number;
  totalReplicationSize: number;
  maximumReplicationSize: number;
  lastReplicationSize: number;
  totalReplicationLatencyMs: number;
  maximumReplicationLatencyMs: number;
}

export function emptyStatistics(now: Date): ReplicationStatistics {
  return {
    monitoringStartTime: now.toISOString(),
    successfulReplicationCount: 0,
    missedReplicationCount: 0,
    replicationErrors: 0,
    totalReplicationSize: 0,
    maximumReplicationSize: 0,
    lastReplicationSize: 0,
    totalReplicationLatencyMs: 0,
    maximumReplicationLatencyMs: 0,
  };
}

/** Hyper-V's default monitoring interval (Set-VMReplicationServer -MonitoringInterval): 12 hours. */
export const DEFAULT_MONITORING_INTERVAL_MS = 12 * 3600 * 1000;

export function recordCycle(s: ReplicationStatistics, bytes: number, latencyMs: number): void {
  s.successfulReplicationCount++;
  s.totalReplicationSize += bytes;
  s.maximumReplicationSize = Math.max(s.maximumReplicationSize, bytes);
  s.lastReplicationSize = bytes;
  s.totalReplicationLatencyMs += latencyMs;
  s.maximumReplicationLatencyMs = Math.max(s.maximumReplicationLatencyMs, latencyMs);
}

export function averageSize(s: ReplicationStatistics): number {
  return s.successfulReplicationCount > 0 ? Math.round(s.totalReplicationSize / s.successfulReplicationCount) : 0;
}

export function averageLatencyMs(s: ReplicationStatistics): number {
  return s.successfulReplicationCount > 0 ? s.totalReplicationLatencyMs / s.successfulReplicationCount : 0;
}

/** Share of cycles missed in this interval (Hyper-V: more than 20 % is Warning). */
export function missedRatio(s: ReplicationStatistics): number {
  const all = s.successfulReplicationCount + s.missedReplicationCount;
  return all > 0 ? s.missedReplicationCount / all : 0;
}
