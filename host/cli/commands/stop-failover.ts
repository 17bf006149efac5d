import type { Command } from 'commander';
import { stopFailover } from '../../replication/failover.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { stopFailoverExtended, withExtended } from './extended.js';

/**
 * Stop-VMFailover: ends a test failover (its disks are removed; replication was never disturbed), rolls
 * back a planned or unplanned failover not yet completed (the replica is as it was; replication
 * resumes), or cancels a prepare.
 */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('stop-failover')
      .description('Roll back a failover not yet completed (test, planned, unplanned) or a prepare; the replica is as it was')
      .argument('<vm>', 'VM name')
      .option('--test', 'only a test failover (refused if the failover in effect is another kind)'),
  );
  withExtended(cmd, { atSite: true }).action(async (name: string, flags: HomeFlags & { test?: boolean; extended?: boolean; replicaPath?: string }) => {
    if (flags.extended || flags.replicaPath !== undefined) return stopFailoverExtended(name, flags);
    const out = await stopFailover(replicationFor(flags), name, flags.test ? 'test' : undefined);
    if (flags.json) {
      printJson(flags.test ? { Removed: out.removed } : { Kind: out.kind, Removed: out.removed, State: out.vm.state });
      return;
    }
    const head = out.kind === 'test' ? `test failover of ${name} stopped` : out.kind === 'prepared' ? `the planned failover of ${name} is cancelled; ${name} is ${out.vm.state}` : `${out.kind} failover of ${name} stopped: the replica is as it was; ${name} is ${out.vm.state}`;
    process.stdout.write(`${head}${out.removed.length ? `; removed:\n${out.removed.map((r) => `  ${r}\n`).join('')}` : '\n'}`);
  });
}
