import { Option, type Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { useSyncIo } from '../../disk/index.js';
import { VhdsyncError } from '../../errors.js';
import { EventLog } from '../../events/event-log.js';
import { CounterStore } from '../../events/counters.js';
import { parseRate, formatRate } from '../../transport/rate.js';
import { cancelResync, startResync, type ResyncResult } from '../../resync/resync.js';
import { parseSize, formatSize } from '../../units.js';
import { isReplicaAddress } from '../../transport/replica-address.js';
import { addNetworkFlags } from '../network-flags.js';
import { anyNetworkSetting, loadNetwork, type NetworkSettings } from '../../transport/network-settings.js';
import { ProgressBar, compareDetail } from '../progress.js';
import { exitWithError, printJson } from '../output.js';

export function vhdsyncHome(): string {
  return process.env.VHDSYNC_HOME ?? join(homedir(), '.vhdsync');
}

interface ResyncFlags extends NetworkSettings {
  link: string;
  latency: string;
  leaf?: string;
  compress?: boolean;
  dryRun?: boolean;
  restart?: boolean;
  cancel?: boolean;
  wait?: boolean;
  json?: boolean;
  vm?: string;
  full?: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command('resync')
    .description('Resynchronize a replica disk with its primary: compare block by block, send only what differs, through an overlay merged at the end')
    .argument('<primary-or-replica>', 'primary image (or, with --cancel, the replica)')
    .argument('[replica]', 'replica image, or tls://HOST:PORT/NAME/disk.vhd on a replica server')
    .option('--link <rate>', 'simulated link between the sites: 1gbps, 1.5mbps, 10mbit, 10MB/s, bytes/s, unlimited', 'unlimited')
    .option('--latency <ms>', 'simulated one-way latency in milliseconds', '0')
    .option('--leaf <size>', 'finest compare unit (power of two, 512 bytes to 4M; default 4K)')
    .option('--compress', 'compress the data sent (zstd, or deflate with an older replica) where that pays')
    .option('--dry-run', 'compare and report what would be sent; write nothing')
    .option('--restart', 'discard an unfinished resync of this replica and start from the beginning')
    .option('--cancel', 'cancel the unfinished resync of <replica>: delete its overlay and checkpoint, leave the replica untouched (a running resync is asked to stop)')
    .option('--wait', 'when another process is writing the replica, wait for it instead of refusing')
    .option('--full', "compare every block, even when the primary's dirty map (a crash or log overflow of its replication) names the extents that may differ")
    .option('--vm <name>', 'virtual machine name for events and counters (default: the primary file name)')
    .option('--json', 'print the result as one JSON object')
    .addOption(new Option('--no-progress', 'no progress bar').hideHelp());
  addNetworkFlags(cmd, 'cap what this side sends to a tls:// replica')
    .action(async (first: string, second: string | undefined, flags: ResyncFlags) => {
      useSyncIo(true); // this process only scans disks: see useSyncIo
      if (flags.cancel) {
        if (second !== undefined) throw new VhdsyncError('USAGE', 'resync --cancel takes only the replica image');
        const remote = isReplicaAddress(first);
        if (!remote && anyNetworkSetting(flags)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(flags)} applies to a tls://HOST:PORT/NAME/disk.vhd replica; ${first} is a local path`);
        const r = await cancelResync(first, remote ? await loadNetwork(flags, `resync --cancel ${first}`) : undefined);
        const asked = r.stopped ? `asked process ${r.stopped.pid} on ${r.stopped.host} to stop; ` : '';
        if (flags.json) printJson({ result: r.cancelled ? 'cancelled' : 'nothing to cancel', replica: first, ...r });
        else process.stdout.write(r.cancelled ? `${asked}resync of ${first} cancelled; the replica is as it was before the resync.\n` : `No resync in progress on ${first}.\n`);
        return;
      }
      if (second === undefined) throw new VhdsyncError('USAGE', 'resync needs a primary and a replica image (or --cancel <replica>)');
      const rate = parseRate(flags.link);
      const latencyMs = Number(flags.latency);
      if (!Number.isFinite(latencyMs) || latencyMs < 0) throw new VhdsyncError('USAGE', `--latency: '${flags.latency}' is not a number of milliseconds`);
      // A simulated one-way delay past a geostationary hop's (~600 ms) is a typo, and a pause waits for it.
      if (latencyMs > MAX_LATENCY_MS) throw new VhdsyncError('USAGE', `--latency: ${flags.latency} ms is more than ${MAX_LATENCY_MS} ms (a satellite link is ~600 ms one way); give the one-way delay in milliseconds`);
      const remote = isReplicaAddress(second);
      if (!remote && anyNetworkSetting(flags)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(flags)} applies to a tls://HOST:PORT/NAME/disk.vhd replica; ${second} is a local path (--link simulates a link)`);
      if (remote && (Number.isFinite(rate) || latencyMs > 0)) throw new VhdsyncError('USAGE', '--link and --latency simulate a link to a local replica; to cap a tls:// link use --bandwidth');
      const network = remote ? await loadNetwork(flags, `resync to ${second}`) : undefined;
      const leafSize = flags.leaf === undefined ? undefined : parseSize(flags.leaf, '--leaf');
      const home = vhdsyncHome();
      const events = new EventLog(join(home, 'events.jsonl'));
      const bar = new ProgressBar();
      const handle = startResync({
        primary: first,
        replica: second,
        link: { rate, latencyMs },
        network,
        leafSize,
        compress: flags.compress,
        dryRun: flags.dryRun,
        restart: flags.restart,
        scope: flags.full ? 'full' : 'auto',
        vm: flags.vm,
        wait: flags.wait === true,
        onWait: (h) => process.stderr.write(`vhdsync: ${second} is in use${h ? ` by process ${h.pid} on ${h.host} (since ${h.since})` : ''}; waiting for process ${h?.pid ?? '?'} to finish…\n`),
        smallReplicaInThread: true,
        events,
        counters: new CounterStore(join(home, 'counters.json')),
        onProgress: (p) => {
          if (p.phase === 'comparing') {
            bar.update(p.bytesCompared, p.virtualSize, compareDetail(p));
          } else if (p.phase === 'merging' && p.mergeTotal) {
            bar.update(p.mergeDone ?? 0, p.mergeTotal, 'merging');
          }
        },
      });
      // SIGINT/SIGTERM pause within ~2 s at the last finished region; a second signal stops at once (the checkpoint still holds).
      let signals = 0;
      const onSignal = () => {
        if (++signals > 1) process.exit(130);
        bar.done();
        process.stderr.write('vhdsync: pausing (again to stop now)…\n');
        handle.pause();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let result: ResyncResult;
      try {
        result = await handle.done;
      } catch (e) {
        bar.done();
        exitWithError(e, flags.json === true);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      bar.done();
      for (const w of result.warnings ?? []) process.stderr.write(`vhdsync: warning: ${w}\n`);
      if (flags.json) printJson(result);
      else printReport(first, second, result, remote ? `TLS, ${formatRate(network?.limiter?.rate ?? Infinity)}` : `${formatRate(rate)} link`);
      // Exit 0 only when the replica now equals the primary (a dry run: when it already did).
      // A resync stopped by `resync --cancel` exits 1: the replica does not equal the primary.
      process.exitCode = result.result === 'completed' && (result.identical || !result.dryRun) ? 0 : result.result === 'paused' ? 3 : 1;
    });
}

const MAX_LATENCY_MS = 2000;

function printReport(primary: string, replica: string, r: ResyncResult, link: string): void {
  const lines = [
    r.dryRun ? `Dry run: ${primary} → ${replica} (nothing written)` : `Resync ${primary} → ${replica}: ${r.result}`,
    `  virtual size     ${formatSize(r.virtualSize)} (${r.virtualSize} bytes), leaf ${formatSize(r.leafSize)}`,
    r.resumedFrom > 0 ? `  resumed from     ${formatSize(r.resumedFrom)}` : undefined,
    r.comparedAgain ? `  compared again   from the start: ${r.comparedAgain}` : undefined,
    `  compared         ${formatSize(r.bytesCompared)} in ${r.phases.compare.toFixed(2)} s`,
    `  scope            ${r.scope}${r.scope === 'DirtyExtents' ? ` (${formatSize(r.scopeBytes)})` : ''}, ${formatSize(r.bytesRead)} read from the primary`,
    `  ${r.dryRun ? 'would send      ' : 'sent            '} ${formatSize(r.bytesSent)} in ${r.blocksSent} blocks`,
    `  on the wire      ${formatSize(r.wireBytes)} (${link})`,
    r.reconnects.length > 0 ? `  reconnected      ${r.reconnects.length}× (last resumed from ${formatSize(r.reconnects[r.reconnects.length - 1].resumedFrom)})` : undefined,
    r.trackedWritesApplied > 0 ? `  tracked writes   ${r.trackedWritesApplied} applied after the merge` : undefined,
    `  time             ${r.seconds.toFixed(2)} s (merge ${r.phases.merge.toFixed(2)} s)`,
    ...r.events.map((e) => `  event ${e.id}      ${e.message}`),
    r.result === 'paused' ? '  Run the same command again to continue from the checkpoint.' : undefined,
    r.result === 'cancelled' ? '  Cancelled by another process (resync --cancel): the overlay is gone, the replica is as it was before the resync.' : undefined,
  ];
  process.stdout.write(lines.filter((l) => l !== undefined).join('\n') + '\n');
}
