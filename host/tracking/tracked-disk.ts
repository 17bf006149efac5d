import { stat } from 'node:fs/promises';
import type { Disk } from '../disk/disk.js';
import { openDisk } from '../disk/index.js';
import { appendRecord } from './log.js';

/** Where the tracking log of a primary disk lives (beside it). */
export function trackingLogPathFor(primaryPath: string): string {
  return `${primaryPath}.vhdsync-track`;
}

/**
 * Open a primary disk for writing through the tracker: while a tracking log exists beside the disk
 * (a resync or replication is tracking it), every write is appended to the log — durably, before the
 * disk sees it — so it can be replayed on the replica afterwards.
 */
export async function openTrackedDisk(path: string): Promise<Disk> {
  return new TrackedDisk(await openDisk(path), trackingLogPathFor(path));
}

class TrackedDisk implements Disk {
  constructor(
    private readonly inner: Disk,
    private readonly log: string,
  ) {}
  get path() { return this.inner.path; }
  get format() { return this.inner.format; }
  get type() { return this.inner.type; }
  get virtualSize() { return this.inner.virtualSize; }
  get blockSize() { return this.inner.blockSize; }
  get sectorSize() { return this.inner.sectorSize; }
  get blockCount() { return this.inner.blockCount; }
  get readOnly() { return this.inner.readOnly; }
  get parent() { return this.inner.parent; }
  blockStatus(index: number) { return this.inner.blockStatus(index); }
  read(offset: number, into: Uint8Array) { return this.inner.read(offset, into); }
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (await exists(this.log)) await appendRecord(this.log, offset, data);
    await this.inner.write(offset, data);
  }
  flush() { return this.inner.flush(); }
  close() { return this.inner.close(); }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
