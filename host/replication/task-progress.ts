import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import type { ResyncProgress } from '../resync/resync.js';

/**
 * How far a VM's resync (or initial replication) is, for measure-replication's CurrentTask from any
 * process: `<home>/vms/<vm>/progress.json`, written by the process running it at most once a second
 * and when it stops. `resync` is the resync's start time: the file of an earlier resync is ignored.
 */
interface ProgressFile {
  resync: string;
  /** Bytes compared so far, per disk index (a resumed run counts the regions of earlier sessions). */
  disks: Record<number, number>;
  current: number | null;
  phase: string | null;
  updatedAt: string;
}

const EVERY_MS = 1000;

export class TaskProgress {
  private state: ProgressFile;
  private last = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    resync: string,
  ) {
    this.state = { resync, disks: {}, current: null, phase: null, updatedAt: '' };
  }

  static path(dir: string): string {
    return join(dir, 'progress.json');
  }

  note(disk: number, p: ResyncProgress): void {
    this.state.disks[disk] = p.bytesCompared;
    this.state.current = disk;
    this.state.phase = p.phase;
    const now = Date.now();
    if (now - this.last < EVERY_MS) return;
    this.last = now;
    this.write();
  }

  /** Write what is known now (when the run stops), after any write in flight. */
  async flush(): Promise<void> {
    this.write();
    await this.writing;
  }

  private write(): void {
    const body = JSON.stringify({ ...this.state, updatedAt: new Date().toISOString() }) + '\n';
    // Best effort: a progress report never stops the resync.
    this.writing = this.writing.then(() => writeFileAtomic(TaskProgress.path(this.dir), body)).catch(() => undefined);
  }

  static async read(dir: string, resync: string | undefined): Promise<ProgressFile | undefined> {
    try {
      const p = JSON.parse(await readFile(TaskProgress.path(dir), 'utf8')) as ProgressFile;
      return p.resync === resync && typeof p.disks === 'object' && p.disks !== null ? p : undefined;
    } catch {
      return undefined;
    }
  }
}
