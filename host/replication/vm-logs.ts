import type { LogInit } from '../tracking/log.js';
import { idFromHex } from '../tracking/log.js';
import {
  createCurrentLog, currentLog, listSealedLogs, logBytes, removeLogs, sealCurrentLog, withLogLocks, type SealedLog,
} from '../tracking/log-files.js';
import type { VmDisk, VmRecord } from './store.js';

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

/** Tracking stops (Resynchronization Required): every log of the VM goes, open and sealed. */
export async function stopTracking(vm: VmRecord): Promise<void> {
  await withLogLocks(paths(vm), async () => {
    for (const d of vm.disks) await removeLogs(d.path, { sealed: true });
  });
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
