import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { failOver, prepareFailover, startFailover, type FailoverResult } from '../../replication/failover.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { startFailoverExtended, withExtended } from './extended.js';

interface Flags extends HomeFlags {
  prepare?: boolean;
  planned?: boolean;
  test?: boolean;
  unplanned?: boolean;
  point?: string;
}

/**
 * Start-VMFailover, in Hyper-V's steps: `--prepare` on the primary (-Prepare), then with no flag the
 * failover itself (planned, at the latest point), or `--unplanned` at a point, or `--test` (-AsTest).
 * `--planned` is prepare + failover in one command. A planned or unplanned failover waits for
 * complete-failover (commit) or stop-failover (roll back).
 */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('start-failover')
      .description('Fail a VM over to its replica: --prepare (primary off, ship the rest) then no flag, or --planned (both), --unplanned, or --test (a separate writable view)')
      .argument('<vm>', 'VM name')
      .option('--prepare', 'on the primary, VM off: ship what is left; the VM is PreparedForFailover (then run start-failover without a flag)')
      .option('--planned', 'prepare and fail over in one command (no data loss); complete-failover or stop-failover follows')
      .option('--unplanned', 'fail over at a recovery point now, accepting the loss of what was not replicated (cancels a resync in progress)')
      .option('--test', 'a writable differencing view of the replica at the point; replication goes on')
      .option('--point <time>', "a recovery point: 'latest' (default) or a time as get-recovery-points prints it"),
  );
  withExtended(cmd, { atSite: true }).action(async (name: string, flags: Flags & { extended?: boolean; replicaPath?: string }) => {
    if (flags.extended || flags.replicaPath !== undefined) return startFailoverExtended(name, flags);
    const kinds = (['prepare', 'planned', 'unplanned', 'test'] as const).filter((k) => flags[k]);
    if (kinds.length > 1) throw new VhdsyncError('USAGE', `start-failover ${name}: give at most one of --prepare, --planned, --unplanned, --test`);
    const rep = replicationFor(flags);
    const kind = kinds[0];
    if (kind === 'prepare') {
      if (flags.point !== undefined) throw new VhdsyncError('USAGE', `start-failover ${name} --prepare: --point belongs to the failover step (--unplanned or --test)`);
      const vm = await prepareFailover(rep, name);
      if (flags.json) printJson({ VMName: name, State: vm.state, LastReplicationTime: vm.lastReplicationTime });
      else process.stdout.write(`${name} is prepared for a planned failover: every change is on the replica (${vm.lastReplicationTime ?? 'never replicated'}).\nfail over with: vhdsync start-failover ${name}   (or cancel with: vhdsync stop-failover ${name})\n`);
      return;
    }
    const out: FailoverResult = kind === undefined ? await failOver(rep, name, { point: flags.point }) : await startFailover(rep, name, kind, { point: flags.point });
    if (flags.json) {
      printJson({ Kind: out.kind, Point: { Time: out.point.time, Kind: out.point.kind, Sequence: out.point.sequence }, Disks: out.disks, Resync: out.resync ?? null, State: out.vm.state });
      return;
    }
    const lines = [`${out.kind} failover of ${name} at ${out.point.time} (${out.point.kind}, cycle ${out.point.sequence})`];
    if (out.resync === 'cancelled') lines.push('the resynchronization in progress was cancelled (its overlay discarded); the replica is as it was before it');
    if (out.resync === 'merge-finished') lines.push('the resynchronization had started its merge; it was finished first, and its recovery points are gone');
    for (const d of out.disks) lines.push(`  ${d}`);
    if (out.kind === 'test') lines.push(`remove the test disks with: vhdsync stop-failover ${name} --test`);
    else {
      lines.push(`${name} is ${out.vm.state}: the disks above are the running copy (views over the replica, which is kept as it was)`);
      lines.push(`commit with: vhdsync complete-failover ${name}   or roll back with: vhdsync stop-failover ${name}`);
    }
    process.stdout.write(lines.join('\n') + '\n');
  });
}
