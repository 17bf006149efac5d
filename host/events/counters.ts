import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import { withLock } from '../pid-lock.js';

/**
 * Performance counters with Hyper-V's names and semantics (`\Hyper-V Replica VM(*)\Resynchronized Bytes`
 * is cumulative). Persisted as JSON so the cumulative values survive process restarts.
 */
export interface VmCounters {
  'Resynchronized Bytes': number;
  'Network Bytes Sent': number;
  'Network Bytes Received': number;
  /** Bytes a resync read from the primary disk (a scoped resync reads only its dirty extents). */
  'Resynchronization Bytes Read'?: number;
  /** Replication cycles applied on the replica (host/replication). */
  'Replication Count'?: number;
}

export class CounterStore {
  constructor(private readonly file: string) {}

  async read(): Promise<Record<string, VmCounters>> {
    try {
      const parsed = JSON.parse(await readFile(this.file, 'utf8'));
      return typeof parsed === 'object' && parsed !== null ? parsed : {};
    } catch {
      return {};
    }
  }

  /** Add to a VM's counters: a read-modify-write under a lock, so concurrent processes lose no count. */
  async add(vm: string, delta: Partial<VmCounters>): Promise<VmCounters> {
    await mkdir(dirname(this.file), { recursive: true });
    return withLock(`${this.file}.lock`, async () => {
      const all = await this.read();
      const cur: VmCounters = { ...{ 'Resynchronized Bytes': 0, 'Network Bytes Sent': 0, 'Network Bytes Received': 0 }, ...all[vm] };
      for (const [k, v] of Object.entries(delta) as [keyof VmCounters, number][]) cur[k] = (cur[k] ?? 0) + v;
      all[vm] = cur;
      await writeFileAtomic(this.file, JSON.stringify(all, null, 2) + '\n');
      return cur;
    }, { what: this.file });
  }
}
