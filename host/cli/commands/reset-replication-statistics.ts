import type { Command } from 'commander';
import { printJson } from '../output.js';
import { matchingVms, replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { resetStatistics } from '../../replication/control.js';

/** Reset-VMReplicationStatistics: the monitoring interval's statistics start again (counters stay). */
export function register(program: Command): void {
  withHome(
    program
      .command('reset-replication-statistics')
      .description('Reset the replication statistics of a VM (measure-replication starts a new monitoring interval; the counters stay)')
      .argument('<vm>', 'VM name (any case; wildcards * and ? as in Hyper-V)'),
  ).action(async (name: string, flags: HomeFlags) => {
    const rep = replicationFor(flags);
    const out = [];
    for (const vm of await matchingVms(rep, name)) out.push(await resetStatistics(rep, vm.name));
    if (flags.json) printJson(out.map((vm) => ({ VMName: vm.name, MonitoringStartTime: vm.statistics.monitoringStartTime })));
    else for (const vm of out) process.stdout.write(`Replication statistics of ${vm.name} reset at ${vm.statistics.monitoringStartTime}.\n`);
  });
}
