import type { Command } from 'commander';
import { completeFailover } from '../../replication/failover.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { completeFailoverExtended, withExtended } from './extended.js';

/**
 * Complete-VMFailover: commits a planned or unplanned failover. The failed-over disks become the replica
 * disks themselves (their views are merged in: the point of no return, resumed if interrupted), the
 * other recovery points are deleted; the VM is FailedOver (reverse-replication replicates back).
 */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('complete-failover')
      .description('Commit a planned or unplanned failover: the failed-over disks become the replica disks; the other recovery points are deleted')
      .argument('<vm>', 'VM name'),
  );
  withExtended(cmd, { atSite: true }).action(async (name: string, flags: HomeFlags & { extended?: boolean; replicaPath?: string }) => {
    if (flags.extended || flags.replicaPath !== undefined) return completeFailoverExtended(name, flags);
    const out = await completeFailover(replicationFor(flags), name);
    if (flags.json) {
      printJson({ Kind: out.kind, Point: { Time: out.point.time, Sequence: out.point.sequence }, Disks: out.disks, State: out.vm.state });
      return;
    }
    process.stdout.write(`${out.kind} failover of ${name} completed (point of ${out.point.time}); ${name} is ${out.vm.state}; its disks:\n${out.disks.map((d) => `  ${d}\n`).join('')}replicate back with: vhdsync reverse-replication ${name}\n`);
  });
}
