import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Hyper-V Replica's events, with the same ids and fields (reference/hyperv-replica.md §2.6):
 * 29242 when the resync compare starts, 29244 when it ends, 29174 the statistics of a monitoring
 * interval, 32315 a failed replication cycle with its retry time. Hyper-V's ids for a state change and
 * for "resynchronization required" are not public, so those two use vhdsync's own ids, 90001 and 90002.
 */
export type EventRecord =
  | {
      id: 29242;
      level: 'Information';
      time: string;
      message: string;
      vm: string;
      disks: string[];
      startBlock: number;
      endBlock: number;
      /** What the compare covers: every block, or the dirty extents (scopeBytes of them). */
      scope?: 'Full' | 'DirtyExtents';
      scopeBytes?: number;
    }
  | {
      id: 29244;
      level: 'Information' | 'Warning' | 'Error';
      time: string;
      message: string;
      vm: string;
      disk: string;
      blocksSent: number;
      /** Time taken by the compare, over every session of this resync (it may have been paused and continued). */
      seconds: number;
      /** This session's part of `seconds` (absent in records written before it existed). */
      sessionSeconds?: number;
      result: 'completed' | 'paused' | 'cancelled' | 'failed';
      scope?: 'Full' | 'DirtyExtents';
      /** Bytes read from the primary disk. */
      bytesRead?: number;
    }
  | {
      id: 29174;
      level: 'Information';
      time: string;
      message: string;
      vm: string;
      monitoringStartTime: string;
      monitoringEndTime: string;
      successfulReplicationCount: number;
      missedReplicationCount: number;
      replicationErrors: number;
      averageReplicationSize: number;
      maximumReplicationSize: number;
      averageReplicationLatencySeconds: number;
      maximumReplicationLatencySeconds: number;
    }
  | {
      id: 32315;
      level: 'Warning' | 'Error';
      time: string;
      message: string;
      vm: string;
      error: string;
      attempt: number;
      retryTime: string;
    }
  | {
      id: 90001;
      level: 'Information' | 'Warning' | 'Error';
      time: string;
      message: string;
      vm: string;
      from: string;
      to: string;
    }
  | {
      id: 90002;
      level: 'Error';
      time: string;
      message: string;
      vm: string;
      reason: string;
      evidence: string;
    };

export type EventInput = EventRecord extends infer E ? (E extends EventRecord ? Omit<E, 'time' | 'message'> : never) : never;

/** Collects emitted events in memory and, when given a file, appends each as one JSON line. */
export class EventLog {
  readonly records: EventRecord[] = [];
  private readonly listeners: ((e: EventRecord) => void)[] = [];

  constructor(private readonly file?: string) {}

  onEvent(listener: (e: EventRecord) => void): void {
    this.listeners.push(listener);
  }

  async emit(input: EventInput): Promise<EventRecord> {
    const record = { ...input, time: new Date().toISOString(), message: describe(input) } as EventRecord;
    this.records.push(record);
    for (const l of this.listeners) l(record);
    if (this.file) {
      await mkdir(dirname(this.file), { recursive: true });
      await appendFile(this.file, JSON.stringify(record) + '\n');
    }
    return record;
  }
}

function scopeText(scope: string, bytes: number | undefined): string {
  return bytes === undefined ? scope : `${scope} (${bytes} bytes)`;
}

function describe(e: EventInput): string {
  switch (e.id) {
    case 29242:
      return `Resynchronization started for virtual machine '${e.vm}' (disks: ${e.disks.join(', ')}), starting block ${e.startBlock}, ending block ${e.endBlock}${e.scope ? `, scope ${scopeText(e.scope, e.scopeBytes)}` : ''}.`;
    case 29244:
      return `Resynchronization of '${e.disk}' for virtual machine '${e.vm}' ${e.result}: ${e.blocksSent} blocks sent in ${e.seconds.toFixed(1)} s${e.sessionSeconds !== undefined && Math.abs(e.sessionSeconds - e.seconds) > 1e-9 ? ` in total (${e.sessionSeconds.toFixed(1)} s in this session)` : ''}${e.scope ? ` (scope ${e.scope}${e.bytesRead !== undefined ? `, ${e.bytesRead} bytes read` : ''})` : ''}.`;
    case 29174:
      return (
        `Replication statistics for virtual machine '${e.vm}' from ${e.monitoringStartTime} to ${e.monitoringEndTime}: ` +
        `${e.successfulReplicationCount} successful, ${e.missedReplicationCount} missed, ${e.replicationErrors} errors; ` +
        `average size ${e.averageReplicationSize} bytes, maximum ${e.maximumReplicationSize} bytes; ` +
        `average latency ${e.averageReplicationLatencySeconds.toFixed(1)} s, maximum ${e.maximumReplicationLatencySeconds.toFixed(1)} s.`
      );
    case 32315:
      return `Replication of changes failed for virtual machine '${e.vm}' (${e.error}). Replication will be retried after ${e.retryTime} (attempt ${e.attempt}).`;
    case 90001:
      return `Replication state of virtual machine '${e.vm}' changed from ${e.from} to ${e.to}.`;
    case 90002:
      return `Resynchronization is required for the virtual machine ${e.vm}. Resume replication to start resynchronization. Reason: ${e.reason}: ${e.evidence}`;
  }
}

/** Every event stored in a JSON-lines event file, oldest first (a damaged line is skipped). */
export async function readEventLog(file: string): Promise<EventRecord[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: EventRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as EventRecord);
    } catch {
      // A line torn by a crash mid-append.
    }
  }
  return out;
}
