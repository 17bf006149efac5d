import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { anyNetworkSetting, type NetworkSettings } from '../../transport/network-settings.js';
import { addNetworkFlags } from '../network-flags.js';
import { printJson } from '../output.js';
import { replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';
import { setReplication } from '../../replication/enable.js';
import { setExtended, withExtended } from './extended.js';

interface Flags extends HomeFlags, NetworkSettings {
  frequency?: string;
  autoResynchronizeEnabled?: string;
  autoResynchronizeIntervalStart?: string;
  autoResynchronizeIntervalEnd?: string;
  pauseResynchronizeOutsideWindow?: string;
  recoveryHistory?: string;
}

/** Set-VMReplication: every value is checked before anything changes. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('set-replication')
      .description('Change the replication settings of a VM')
      .argument('<vm>', 'VM name')
      .option('--frequency <seconds>', 'ReplicationFrequencySec: 30, 300 or 900')
      .option('--auto-resynchronize-enabled <0|1>', 'AutoResynchronizeEnabled')
      .option('--auto-resynchronize-interval-start <HH:MM:SS>', 'AutoResynchronizeIntervalStart')
      .option('--auto-resynchronize-interval-end <HH:MM:SS>', 'AutoResynchronizeIntervalEnd')
      .option('--pause-resynchronize-outside-window <0|1>', 'beyond Hyper-V: pause an automatic resync when its window closes')
      .option('--recovery-history <n>', 'RecoveryHistory: hourly recovery points kept besides the latest, 0 to 24'),
  );
  addNetworkFlags(withExtended(cmd), 'for a VM replicated to a replica server: cap what it sends (unlimited removes the cap)').action(async (name: string, flags: Flags & { extended?: boolean }) => {
    if (flags.extended) return setExtended(name, flags);
    const change = {
      frequency: flags.frequency,
      autoResynchronizeEnabled: flags.autoResynchronizeEnabled,
      autoResynchronizeIntervalStart: flags.autoResynchronizeIntervalStart,
      autoResynchronizeIntervalEnd: flags.autoResynchronizeIntervalEnd,
      pauseResynchronizeOutsideWindow: flags.pauseResynchronizeOutsideWindow,
      recoveryHistory: flags.recoveryHistory,
    };
    if (Object.values(change).every((v) => v === undefined) && !anyNetworkSetting(flags)) throw new VhdsyncError('USAGE', `set-replication ${name}: nothing to change (see vhdsync set-replication --help)`);
    const rep = replicationFor(flags);
    const vm = await setReplication(rep, name, change, flags);
    if (flags.json) printJson(viewOf(rep, vm));
    else process.stdout.write(replicationTable(rep, [vm]));
  });
}
