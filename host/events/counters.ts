import { mkdir, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ioError, VhdsyncError } from '../errors.js';
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

  /** Every VM's counters; none when the file does not exist. A damaged file is refused in one line, never read as zeros. */
  async read(): Promise<Record<string, VmCounters>> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw ioError(this.file, e);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw this.damaged('not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw this.damaged('not an object of VMs');
    for (const [vm, c] of Object.entries(parsed)) {
      if (typeof c !== 'object' || c === null || Object.values(c).some((v) => typeof v !== 'number' || !Number.isFinite(v) || v < 0)) throw this.damaged(`the counters of '${vm}' are not counts`);
    }
    return parsed as Record<string, VmCounters>;
  }

  private damaged(what: string): VhdsyncError {
    return new VhdsyncError('STATE', `${this.file}: the counters file is damaged (${what}); the next resync or replication cycle keeps it as ${this.damagedFile} and counts from zero again`);
  }

  private get damagedFile(): string {
    return `${this.file}.damaged`;
  }

  /** Add to a VM's counters: a read-modify-write under a lock, so concurrent processes lose no count. */
  async add(vm: string, delta: Partial<VmCounters>): Promise<VmCounters> {
    await mkdir(dirname(this.file), { recursive: true });
    return withLock(`${this.file}.lock`, async () => {
      const all = await this.read().catch(async (e) => {
        if (!(e instanceof VhdsyncError && e.code === 'STATE')) throw e;
        await rename(this.file, this.damagedFile); // kept for whoever wants the old counts; never overwritten unseen
        return {} as Record<string, VmCounters>;
      });
      const cur: VmCounters = { ...{ 'Resynchronized Bytes': 0, 'Network Bytes Sent': 0, 'Network Bytes Received': 0 }, ...all[vm] };
      for (const [k, v] of Object.entries(delta) as [keyof VmCounters, number][]) cur[k] = (cur[k] ?? 0) + v;
      all[vm] = cur;
      await writeFileAtomic(this.file, JSON.stringify(all, null, 2) + '\n');
      return cur;
    }, { what: this.file });
  }
}
