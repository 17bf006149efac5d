import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { RunningVm } from '../../replication/running-vm.js';
import { driveWorkload } from '../../replication/workload-driver.js';
import type { WorkloadPattern } from '../../tracking/workload.js';
import { parseRate } from '../../transport/rate.js';
import { formatSize, parseSize } from '../../units.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  pattern: string;
  rate: string;
  duration: string;
  seed: string;
  bytes?: string;
}

/** "60s", "2m", "500ms", "1h" or a number of seconds. */
export function parseDuration(text: string, what = '--duration'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!m) throw new VhdsyncError('USAGE', `${what}: '${text}' is not a duration (examples: 500ms, 60s, 2m)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's').toLowerCase() as 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * unit;
}

/**
 * Run the VM: hold its disks open through the tracker and write a realistic, seeded mix at a steady
 * rate. SIGTERM/SIGINT end it cleanly (logs sealed, fingerprints recorded); SIGKILL does not.
 */
export function register(program: Command): void {
  withHome(
    program
      .command('workload')
      .description('Run a VM: write a realistic mix (fileserver, sql, random) to its disks through the tracker at a given rate')
      .argument('<vm>', 'VM name')
      .option('--pattern <name>', 'fileserver | sql | random | hot', 'fileserver')
      .option('--rate <rate>', 'bytes per second over all disks (10MB/s, 80mbps, unlimited)', '10MB/s')
      .option('--duration <time>', 'how long to run (60s, 2m, 500ms)', '60s')
      .option('--seed <n>', 'seed of the write mix (same seed, same writes)', '1')
      .option('--bytes <size>', 'stop after this many bytes (default: rate × duration)'),
  ).action(async (name: string, flags: Flags) => {
    if (!['fileserver', 'sql', 'random', 'hot'].includes(flags.pattern)) throw new VhdsyncError('USAGE', `--pattern: '${flags.pattern}' is not a pattern; use fileserver, sql, random or hot`);
    const rate = parseRate(flags.rate, '--rate');
    const durationMs = parseDuration(flags.duration);
    const seed = Number(flags.seed);
    if (!Number.isSafeInteger(seed)) throw new VhdsyncError('USAGE', `--seed: '${flags.seed}' is not an integer`);
    const bytes = flags.bytes === undefined ? undefined : parseSize(flags.bytes, '--bytes');
    const rep = replicationFor(flags);
    const vm = await RunningVm.start(rep, name);
    let stop = false;
    const onSignal = () => {
      stop = true;
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    for (const t of vm.triggers) process.stderr.write(`vhdsync: ${name}: resynchronization required: ${t.reason}: ${t.evidence}\n`);
    process.stderr.write(`vhdsync: ${name} is running (process ${process.pid}), ${flags.pattern} writes at ${flags.rate}\n`);
    let result;
    try {
      result = await driveWorkload(vm, { pattern: flags.pattern as WorkloadPattern, rate, durationMs, seed, bytes, shouldStop: () => stop });
    } finally {
      await vm.close();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    const after = await rep.get(name);
    if (flags.json) {
      printJson({
        VMName: name,
        Pattern: flags.pattern,
        Writes: result.writes,
        Bytes: result.bytes,
        Seconds: result.seconds,
        BytesPerDisk: result.perDisk,
        StoppedBySignal: result.stoppedEarly,
        State: after.state,
        Triggers: vm.triggers.map((t) => ({ Reason: t.reason, Evidence: t.evidence })),
      });
    } else {
      process.stdout.write(`${name}: ${result.writes} writes, ${formatSize(result.bytes)} in ${result.seconds.toFixed(2)} s; replication state ${after.state}\n`);
    }
  });
}
