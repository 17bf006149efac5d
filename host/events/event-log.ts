import { appendFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Hyper-V Replica's resync events, with the same ids and fields (reference/hyperv-replica.md §3):
 * 29242 when the resync compare starts, 29244 when it ends.
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
    }
  | {
      id: 29244;
      level: 'Information' | 'Warning' | 'Error';
      time: string;
      message: string;
      vm: string;
      disk: string;
      blocksSent: number;
      seconds: number;
      result: 'completed' | 'paused' | 'cancelled' | 'failed';
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

function describe(e: EventInput): string {
  if (e.id === 29242) {
    return `Resynchronization started for virtual machine '${e.vm}' (disks: ${e.disks.join(', ')}), starting block ${e.startBlock}, ending block ${e.endBlock}.`;
  }
  return `Resynchronization of '${e.disk}' for virtual machine '${e.vm}' ${e.result}: ${e.blocksSent} blocks sent in ${e.seconds.toFixed(1)} s.`;
}
