import { basename } from 'node:path';
import { openDisk, type Disk } from '../disk/index.js';
import { VhdsyncError } from '../errors.js';
import { readFailover } from '../replication/failover.js';
import { failoverViewPathFor, testViewPathFor } from '../replica/site-files.js';
import { lockFile, type HeldLock } from '../writer-lock.js';
import type { Replication } from '../replication/replication.js';
import { RunningVm, type RunOptions } from '../replication/running-vm.js';
import { syncLogFs } from '../tracking/log-fs.js';
import { isReplicaAddress } from '../transport/replica-address.js';
import type { ExportTable } from './connection.js';
import { DiskExport } from './export.js';
import { NbdServer, type ListenAt } from './server.js';

/** A table of exports, each found by its index ("0") or its file name; "" is the first. */
export function exportTable(exports: DiskExport[]): ExportTable {
  return {
    list: () => exports,
    find: (name) => (name === '' ? exports[0] : exports.find((e) => e.names.includes(name))),
  };
}

export interface ServeOptions extends RunOptions {
  readOnly?: boolean;
  /** Log appends by synchronous calls (with useSyncIo: a process whose one job is the guest's I/O). */
  syncLogIo?: boolean;
  log?: (line: string) => void;
}

/** A VM served over NBD: while it lives, the VM runs (its run lock is held, its logs written by us). */
export interface ServedVm {
  server: NbdServer;
  exports: DiskExport[];
  /** The running VM; undefined for a test failover's views. */
  vm?: RunningVm;
  /** Clean shutdown: clients' requests in flight are answered, then (a running VM) logs sealed, fingerprints taken. */
  close(): Promise<void>;
}

/**
 * `vhdsync run`: the VM starts (the evidence of its last run is checked, its logs opened) and each of
 * its disks becomes an export whose every write goes through the tracker. With `readOnly` the VM still
 * runs (so its disks cannot change under the export) but clients may only read.
 */
export async function serveVm(rep: Replication, name: string, at: ListenAt, opts: ServeOptions = {}): Promise<ServedVm> {
  // NBD semantics: a write is durable after FLUSH or with FUA; the log is made durable then, first.
  const vm = await RunningVm.start(rep, name, { logFs: opts.logFs ?? (opts.syncLogIo ? syncLogFs : undefined), logSyncOnFlush: true });
  try {
    const exports = vm.disks.map(
      (d, i) =>
        new DiskExport([String(i), basename(d.path)], `disk ${i} of virtual machine ${name}`, { disk: d, writeMany: (w) => vm.writeMany(i, w), holdLog: (fn) => d.holdLog(fn) }, opts.readOnly ?? false),
    );
    const server = await NbdServer.listen(exportTable(exports), at, opts.log);
    return {
      server,
      exports,
      vm,
      async close() {
        try {
          await server.close();
        } finally {
          await vm.close();
        }
      },
    };
  } catch (e) {
    await vm.close();
    throw e;
  }
}

/**
 * `vhdsync run --test-view`: a test failover's views (start-failover --test) on this machine, exported
 * read-only so the failover can be booted and inspected while replication goes on.
 */
export async function serveTestView(rep: Replication, name: string, at: ListenAt, opts: ServeOptions = {}): Promise<ServedVm> {
  const vm = await rep.get(name);
  if (isReplicaAddress(vm.replica)) {
    throw new VhdsyncError('UNSUPPORTED', `virtual machine '${name}' replicates to a replica server (${vm.replica}); run --test-view on that machine`);
  }
  const failover = await readFailover(rep, vm);
  if (failover?.kind !== 'test') {
    throw new VhdsyncError('STATE', `virtual machine '${name}' has no test failover in effect; start one first (vhdsync start-failover ${name} --test)`);
  }
  const disks: Disk[] = [];
  try {
    for (const d of vm.disks) disks.push(await openDisk(testViewPathFor(d.replicaPath), { readOnly: true }));
    const exports = disks.map((d, i) => new DiskExport([String(i), basename(d.path)], `test failover view of disk ${i} of ${name}`, { disk: d }, true));
    const server = await NbdServer.listen(exportTable(exports), at, opts.log);
    return {
      server,
      exports,
      async close() {
        try {
          await server.close();
        } finally {
          for (const d of disks) await d.close();
        }
      },
    };
  } catch (e) {
    for (const d of disks) await d.close().catch(() => undefined);
    throw e;
  }
}

/**
 * `vhdsync run --failover-view`: a planned or unplanned failover's running copy (start-failover, not
 * yet completed) on this machine, exported writable: the failed-over VM runs from it. Each view's writer
 * lock is held while it is served, so complete-failover and stop-failover are refused meanwhile.
 */
export async function serveFailoverView(rep: Replication, name: string, at: ListenAt, opts: ServeOptions = {}): Promise<ServedVm> {
  const vm = await rep.get(name);
  if (isReplicaAddress(vm.replica)) {
    throw new VhdsyncError('UNSUPPORTED', `virtual machine '${name}' replicates to a replica server (${vm.replica}); run --failover-view on that machine`);
  }
  const failover = await readFailover(rep, vm);
  if (vm.state !== 'FailedOverWaitingCompletion' || failover?.phase !== 'waiting') {
    throw new VhdsyncError('STATE', `virtual machine '${name}' has no failover waiting for completion (it is ${vm.state}); fail over first (vhdsync start-failover ${name} --planned, or --unplanned)`);
  }
  const locks: HeldLock[] = [];
  const disks: Disk[] = [];
  const release = async () => {
    for (const d of disks) await d.close().catch(() => undefined);
    for (const l of locks.reverse()) await l.release().catch(() => undefined);
  };
  try {
    for (const d of vm.disks) {
      const view = failoverViewPathFor(d.replicaPath);
      locks.push(await lockFile(view, { what: `failed-over disk ${view}` }));
      disks.push(await openDisk(view, { readOnly: !!opts.readOnly }));
    }
    const exports = disks.map((d, i) => {
      const writeMany = opts.readOnly ? undefined : async (ws: readonly { offset: number; data: Uint8Array }[]) => {
        for (const w of ws) await d.write(w.offset, w.data);
      };
      return new DiskExport([String(i), basename(vm.disks[i].path)], `failed-over disk ${i} of ${name}`, { disk: d, writeMany }, !!opts.readOnly);
    });
    const server = await NbdServer.listen(exportTable(exports), at, opts.log);
    return {
      server,
      exports,
      async close() {
        try {
          await server.close();
          for (const d of disks) await d.flush();
        } finally {
          await release();
        }
      },
    };
  } catch (e) {
    await release();
    throw e;
  }
}
