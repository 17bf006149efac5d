import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { startFailover, type FailoverKind } from '../../replication/failover.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  planned?: boolean;
  test?: boolean;
  unplanned?: boolean;
  point?: string;
}

/** Start-VMFailover: test (-AsTest), planned (-Prepare then failover) or unplanned, at a recovery point. */
export function register(program: Command): void {
  withHome(
    program
      .command('start-failover')
      .description('Fail a VM over to its replica: --test (a separate writable view), --planned, or --unplanned')
      .argument('<vm>', 'VM name')
      .option('--test', 'a writable differencing view of the replica at the point; replication goes on')
      .option('--planned', 'the primary is off: ship what is left, fail over with no data loss')
      .option('--unplanned', 'the replica becomes the VM at the point now (cancels a resync in progress)')
      .option('--point <time>', "a recovery point: 'latest' (default) or a time as get-recovery-points prints it"),
  ).action(async (name: string, flags: Flags) => {
    const kinds = (['test', 'planned', 'unplanned'] as const).filter((k) => flags[k]);
    if (kinds.length !== 1) throw new VhdsyncError('USAGE', `start-failover ${name}: give exactly one of --test, --planned, --unplanned`);
    const out = await startFailover(replicationFor(flags), name, kinds[0] as FailoverKind, { point: flags.point });
    if (flags.json) {
      printJson({ Kind: out.kind, Point: { Time: out.point.time, Kind: out.point.kind, Sequence: out.point.sequence }, Disks: out.disks, Resync: out.resync ?? null, State: out.vm.state });
      return;
    }
    const lines = [`${out.kind} failover of ${name} at ${out.point.time} (${out.point.kind}, cycle ${out.point.sequence})`];
    if (out.resync === 'cancelled') lines.push('the resynchronization in progress was cancelled (its overlay discarded); the replica is as it was before it');
    if (out.resync === 'merge-finished') lines.push('the resynchronization had started its merge; it was finished first, and its recovery points are gone');
    for (const d of out.disks) lines.push(`  ${d}`);
    if (out.kind === 'test') lines.push(`remove the test disks with: vhdsync stop-failover ${name} --test`);
    process.stdout.write(lines.join('\n') + '\n');
  });
}
