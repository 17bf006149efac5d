import type { Command } from 'commander';
import { resolve } from 'node:path';
import { useSyncIo } from '../../disk/index.js';
import { VhdsyncError } from '../../errors.js';
import type { ListenAt } from '../../nbd/server.js';
import { serveFailoverView, serveTestView, serveVm } from '../../nbd/vm-exports.js';
import { parseListen } from '../../transport/replica-address.js';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  socket?: string;
  listen?: string;
  readOnly?: boolean;
  testView?: boolean;
  failoverView?: boolean;
}

/**
 * `vhdsync run <vm>`: the VM runs while this process lives, its disks served over NBD (qemu, qemu-io,
 * nbdcopy, the kernel's nbd client) with every write tracked. SIGTERM, SIGINT or `vhdsync stop-vm`
 * shut it down cleanly; a SIGKILL is a host crash (the next start finds TrackingLogNotClosed).
 */
export function register(program: Command): void {
  withHome(
    program
      .command('run')
      .description("Run a VM: serve its disks as NBD exports (by index '0' and by file name), every write through the tracker")
      .argument('<vm>', 'VM name')
      .option('--socket <path>', 'listen on this Unix socket (nbd+unix:///0?socket=PATH)')
      .option('--listen <host:port>', 'listen on TCP, e.g. 127.0.0.1:10809 (nbd://HOST:PORT/0)')
      .option('--read-only', 'clients may only read (the VM still runs, so nothing else writes its disks)')
      .option('--test-view', "serve the test failover's views (start-failover --test) read-only instead of the primary disks")
      .option('--failover-view', "serve a failover's running copy (start-failover, not yet completed) writable: the failed-over VM runs from it"),
  ).action(async (name: string, flags: Flags) => {
    if ((flags.socket === undefined) === (flags.listen === undefined)) throw new VhdsyncError('USAGE', 'run needs exactly one of --socket PATH or --listen HOST:PORT');
    const at: ListenAt = flags.socket !== undefined ? { socket: resolve(flags.socket) } : parseListen(flags.listen!);
    // This process's one job is the guest's disk I/O: positioned reads and writes without a thread-pool
    // round trip each (see useSyncIo) serve a queue-depth client faster, on a page-cache hit above all.
    const syncIo = process.env.VHDSYNC_NBD_ASYNC_IO !== '1';
    useSyncIo(syncIo);
    const rep = replicationFor(flags);
    const log = (line: string) => process.stderr.write(`vhdsync: ${line}\n`);
    if (flags.testView && flags.failoverView) throw new VhdsyncError('USAGE', 'run: give at most one of --test-view, --failover-view');
    const served = flags.testView
      ? await serveTestView(rep, name, at, { log })
      : flags.failoverView
        ? await serveFailoverView(rep, name, at, { log, readOnly: flags.readOnly })
        : await serveVm(rep, name, at, { readOnly: flags.readOnly, log, syncLogIo: syncIo });
    const exports = served.exports.map((e) => ({ Name: e.names[0], File: e.names[1], Size: e.size, ReadOnly: e.readOnly, Uri: served.server.uri(e.names[0]) }));
    for (const t of served.vm?.triggers ?? []) log(`${name}: resynchronization required: ${t.reason}: ${t.evidence}`);
    if (flags.json) printJson({ VMName: name, ProcessId: process.pid, TestView: !!flags.testView, FailoverView: !!flags.failoverView, Exports: exports });
    else {
      for (const e of exports) process.stdout.write(`export ${e.Name} (${e.File}, ${formatSize(e.Size)}${e.ReadOnly ? ', read-only' : ''}): ${e.Uri}\n`);
    }
    log(`${name} is running (process ${process.pid}); stop it with vhdsync stop-vm ${name}, SIGTERM or Ctrl-C`);
    await new Promise<void>((done) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        done();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await served.close();
    if (flags.testView || flags.failoverView) {
      log(`${name}: ${flags.testView ? 'test failover views' : 'failed-over disks'} no longer served`);
      return;
    }
    const after = await rep.get(name);
    log(`${name} shut down cleanly; replication state ${after.state}`);
    process.exit(0);
  });
}
