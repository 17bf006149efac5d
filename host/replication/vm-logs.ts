import type { LogInit } from '../tracking/log.js';
import {
  createCurrentLog, currentLog, listSealedLogs, logBytes, removeLogs, sealCurrentLog, withLogLocks, type SealedLog,
} from '../tracking/log-files.js';
import { readDirtyMap, removeDirtyMap } from '../tracking/dirty-map.js';
import { removeIfExists } from '../fsutil.js';
import { activityLogPathFor } from '../tracking/activity-log.js';
import { absorbIntoDirtyMap } from '../tracking/scope.js';
import { rangeBytes } from '../tracking/extents.js';
import { scopeOfMap } from '../tracking/scope.js';
import type { VmDisk, VmRecord } from './store.js';
import { idFromHex } from '../bytes.js';

/**
 * The tracking logs of a whole VM: one per disk per replication cycle, switched together under every
 * disk's lock so that a cycle is a consistent cut across the VM's disks (Hyper-V preserves write order
 * across disks). Callers hold the VM's state lock and save the record afterwards (sequences move).
 */
export function logInit(vm: VmRecord, disk: VmDisk, sequence: number): LogInit {
  return { sequence, vmId: idFromHex(vm.vmId), diskId: idFromHex(disk.diskId), diskIndex: disk.index };
}

function paths(vm: VmRecord): string[] {
  return vm.disks.map((d) => d.path);
}

/**
 * Seal every disk's open replication log (they become the pending cycle) and, when the VM is running,
 * open the next cycle's logs in the same instant. Returns the sealed sequences.
 */
export async function switchLogs(vm: VmRecord, opts: { running: boolean }): Promise<number[]> {
  return withLogLocks(paths(vm), async () => {
    const sealed = new Set<number>();
    for (const d of vm.disks) {
      const cur = await currentLog(d.path);
      if (!cur) continue;
      if (cur.header.sequence === 0) continue; // a resync's log: it is taken by the resync, never shipped
      const s = await sealCurrentLog(d.path);
      if (s) sealed.add(s.sequence);
    }
    if (opts.running) {
      const seq = vm.nextSequence++;
      for (const d of vm.disks) if (!(await currentLog(d.path))) await createCurrentLog(d.path, logInit(vm, d, seq));
    }
    return [...sealed].sort((a, b) => a - b);
  });
}

/** A running VM in a tracking state has an open log on every disk (all of one cycle). */
export async function ensureLogs(vm: VmRecord): Promise<void> {
  await withLogLocks(paths(vm), async () => {
    const heads = await Promise.all(vm.disks.map((d) => currentLog(d.path)));
    if (heads.every((h) => h)) return;
    const existing = heads.find((h) => h && h.header.sequence > 0);
    const seq = existing ? existing.header.sequence : vm.nextSequence++;
    for (const [i, d] of vm.disks.entries()) if (!heads[i]) await createCurrentLog(d.path, logInit(vm, d, seq));
  });
}

/**
 * Tracking stops (Resynchronization Required): every log of the VM goes, open and sealed. With a
 * DirtyExtents scope their extents (and the activity log's) go into each disk's dirty map first, and
 * the disks stay in bitmap mode; a log that cannot be read makes the scope Full. A Full scope drops
 * the dirty maps.
 */
export async function stopTracking(vm: VmRecord): Promise<void> {
  await withLogLocks(paths(vm), async () => {
    if (vm.resync?.scope === 'DirtyExtents') {
      let bytes = 0;
      const mapKept = vm.resync.mapsKept === true;
      try {
        for (const d of vm.disks) {
          bytes += scopeOfMap(await absorbIntoDirtyMap(d.path, { virtualSize: d.virtualSize, replica: d.replicaPath }, undefined, { mapKept }), d.virtualSize).bytes;
        }
        vm.resync.scopeBytes = bytes;
        vm.resync.mapsKept = true;
      } catch (e) {
        vm.resync.scope = 'Full';
        vm.resync.evidence = `${vm.resync.evidence}; scope Full: ${(e as Error).message}`;
      }
    }
    if (vm.resync?.scope !== 'DirtyExtents') {
      if (vm.resync) delete vm.resync.mapsKept;
      for (const d of vm.disks) await removeDirtyMap(d.path);
      if (vm.resync) vm.resync.scopeBytes = vm.disks.reduce((n, d) => n + d.virtualSize, 0);
    }
    for (const d of vm.disks) await removeLogs(d.path, { sealed: true });
  });
}

/** A resync completed (or replication is removed): the dirty maps are done with. */
export async function dropDirtyMaps(vm: VmRecord, opts: { activityLogs?: boolean } = {}): Promise<void> {
  await withLogLocks(paths(vm), async () => {
    for (const d of vm.disks) {
      await removeDirtyMap(d.path);
      if (opts.activityLogs) await removeIfExists(activityLogPathFor(d.path));
    }
  });
}

/** Bytes a resync of the VM would compare now: the dirty maps' extents, or every disk whole. */
export async function scopeBytesNow(vm: VmRecord): Promise<number> {
  const total = vm.disks.reduce((n, d) => n + d.virtualSize, 0);
  if (vm.resync?.scope !== 'DirtyExtents') return total;
  let bytes = 0;
  for (const d of vm.disks) {
    const map = await readDirtyMap(d.path).catch(() => undefined);
    if (!map) return total;
    bytes += rangeBytes(scopeOfMap(map, d.virtualSize).ranges);
  }
  return bytes;
}

/** Bytes of all the VM's tracking logs: Pending Replication Size, and the 50 % trigger's measure. */
export async function pendingBytes(vm: VmRecord): Promise<number> {
  let total = 0;
  for (const d of vm.disks) total += await logBytes(d.path);
  return total;
}

/** Sealed, unshipped cycles: sequence → one log per disk (a missing disk shows as undefined). */
export async function pendingCycles(vm: VmRecord): Promise<Map<number, (SealedLog | undefined)[]>> {
  const out = new Map<number, (SealedLog | undefined)[]>();
  for (const d of vm.disks) {
    for (const s of await listSealedLogs(d.path)) {
      let row = out.get(s.sequence);
      if (!row) out.set(s.sequence, (row = vm.disks.map(() => undefined)));
      row[d.index] = s;
    }
  }
  return new Map([...out.entries()].sort((a, b) => a[0] - b[0]));
}
