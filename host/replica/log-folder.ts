import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ioError } from '../errors.js';

/**
 * A folder of cycle logs — shipped logs waiting at a replica (`logs/`), logs kept for an extended
 * replica (`extended-logs/`): one file per cycle and disk, `<sequence, 8 digits>-<disk index>.log`.
 */
export function logName(sequence: number, diskIndex: number): string {
  return `${String(sequence).padStart(8, '0')}-${diskIndex}.log`;
}

/** The logs in `dir` by cycle, in sequence: one path per disk index (undefined where that disk's log is missing). */
export async function cycleLogs(dir: string, disks: number): Promise<Map<number, (string | undefined)[]>> {
  let names: string[] = [];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(dir, e);
  }
  const out = new Map<number, (string | undefined)[]>();
  for (const n of names) {
    const m = /^(\d+)-(\d+)\.log$/.exec(n);
    if (!m) continue;
    const seq = Number(m[1]);
    const disk = Number(m[2]);
    let row = out.get(seq);
    if (!row) out.set(seq, (row = Array.from({ length: disks }, () => undefined)));
    if (disk < disks) row[disk] = join(dir, n);
  }
  return new Map([...out.entries()].sort((a, b) => a[0] - b[0]));
}
