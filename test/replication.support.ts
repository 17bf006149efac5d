import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { openDisk } from '../host/disk/index.js';
import { Replication } from '../host/replication/replication.js';
import type { Clock } from '../host/replication/schedule.js';
import type { LinkShape } from '../host/transport/memory-link.js';
import { randomBytes } from './support/files.js';
import { enableReplication } from '../host/replication/enable.js';
import { startInitialReplication } from '../host/replication/resync-run.js';

export const MiB = 1024 * 1024;

/** A mutable clock for the scheduler and the service: tests set the time, nothing sleeps. */
export class FakeClock implements Clock {
  constructor(public t: Date) {}
  now(): Date {
    return new Date(this.t);
  }
  set(d: Date): void {
    this.t = d;
  }
  advance(ms: number): void {
    this.t = new Date(this.t.getTime() + ms);
  }
}

export async function rawDisk(path: string, size: number, seed = 0): Promise<string> {
  await writeFile(path, new Uint8Array(0));
  await truncate(path, size);
  if (seed) {
    const fh = await open(path, 'r+');
    for (let off = 0; off < size; off += 4 * MiB) await fh.write(randomBytes(64 * 1024, seed + off / MiB), 0, 64 * 1024, off);
    await fh.close();
  }
  return path;
}

export function vhdDisk(path: string, size: number): string {
  execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', path, String(size)]);
  return path;
}

/** A VM with its disks in `dir`, replicated to `dir/replica`, initial replication done. */
export async function replicatedVm(
  dir: string,
  name: string,
  disks: string[],
  opts: { clock?: Clock; link?: LinkShape; initial?: boolean; settings?: Record<string, string | number | boolean> } = {},
): Promise<Replication> {
  const rep = new Replication(join(dir, 'home'), { clock: opts.clock, link: opts.link });
  await enableReplication(rep, { name, disks, replica: join(dir, 'replica'), settings: opts.settings });
  if (opts.initial !== false) {
    const ir = await startInitialReplication(rep, name);
    if (ir.result !== 'completed') throw new Error(`initial replication ${ir.result}`);
  }
  return rep;
}

export async function fileBytes(p: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(p));
}

/** Each image, read through our disk layer (a test failover's views are differencing VHDs), equals its file. */
export async function sameContents(images: string[], files: string[]): Promise<boolean> {
  for (const [i, p] of images.entries()) {
    const want = new Uint8Array(await readFile(files[i]));
    const disk = await openDisk(p, { readOnly: true });
    const got = new Uint8Array(disk.virtualSize);
    await disk.read(0, got);
    await disk.close();
    if (Buffer.compare(got, want) !== 0) return false;
  }
  return true;
}
