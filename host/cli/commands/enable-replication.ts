import type { Command } from 'commander';
import type { NetworkSettings } from '../../transport/network-settings.js';
import { VhdsyncError } from '../../errors.js';
import { addNetworkFlags, addReplicaServerFlags, replicaServerFromFlags, type ReplicaServerFlags } from '../network-flags.js';
import { printJson } from '../output.js';
import { enableExtended, withExtended } from './extended.js';
import { healthNotes, replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';
import { enableReplication } from '../../replication/enable.js';

interface Flags extends HomeFlags, NetworkSettings, ReplicaServerFlags {
  disk?: string[];
  replica?: string;
  extended?: boolean;
  replicaPath?: string;
  recoveryHistory?: string;
  frequency?: string;
  autoResynchronizeEnabled?: string;
  autoResynchronizeIntervalStart?: string;
  autoResynchronizeIntervalEnd?: string;
  pauseResynchronizeOutsideWindow?: string;
  initialReplicationStartTime?: string;
}

/** Enable-VMReplication: a VM is a name, its primary disks and a replica directory. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('enable-replication')
      .description('Enable replication for a VM: its primary disks and a replica directory (the VM is then ReadyForInitialReplication)')
      .argument('<vm>', 'VM name')
      .option('--disk <path...>', 'primary disk image(s) of the VM (VHDX, VHD or raw; the replica is made in the same format and sector size)')
      .option('--replica <dir|tls://HOST:PORT/NAME>', 'replica directory (disk N is replicated to <dir>/<vm>/<primary file name>), or a replica server (to <root>/NAME/<primary file name> there; NAME defaults to <vm>)')
      .option('--frequency <seconds>', 'ReplicationFrequencySec: 30, 300 or 900 (default 300)')
      .option('--auto-resynchronize-enabled <0|1>', 'AutoResynchronizeEnabled (default 0)')
      .option('--auto-resynchronize-interval-start <HH:MM:SS>', 'AutoResynchronizeIntervalStart (default 18:30:00)')
      .option('--auto-resynchronize-interval-end <HH:MM:SS>', 'AutoResynchronizeIntervalEnd (default 06:00:00)')
      .option('--pause-resynchronize-outside-window <0|1>', 'beyond Hyper-V: pause an automatic resync when its window closes (default 0)')
      .option('--initial-replication-start-time <time>', 'InitialReplicationStartTime: the service starts the initial replication then, at most 7 days ahead (e.g. "2024-08-01 05:00" or "08/01/2024 05:00:00")')
      .option('--recovery-history <n>', 'with --extended: RecoveryHistory of the extended replica, 0-24 (default 0)')
      .option('--replica-path <dir>', 'with --extended: the replica directory (or replica server --root) on this machine holding the replica to extend'),
  );
  addReplicaServerFlags(withExtended(cmd), 'Enable-VMReplication');
  addNetworkFlags(cmd, 'cap what this VM sends to its replica server (logs and resyncs)').action(async (name: string, flags: Flags) => {
    const replica = replicaServerFromFlags(flags.replica, flags, `enable-replication ${name}`);
    if (replica === undefined) throw new VhdsyncError('USAGE', `enable-replication ${name}: give --replica DIR or tls://HOST:PORT/NAME (or --replica-server-name HOST)`);
    if (flags.extended) return enableExtended(name, { ...flags, replica });
    if (flags.replicaPath !== undefined || flags.recoveryHistory !== undefined) throw new VhdsyncError('USAGE', `enable-replication ${name}: ${flags.replicaPath !== undefined ? '--replica-path' : '--recovery-history'} goes with --extended (set-replication --recovery-history sets a VM's own)`);
    const rep = replicationFor(flags);
    const vm = await enableReplication(rep, {
      name,
      disks: flags.disk ?? [],
      replica,
      network: flags,
      initialReplicationStartTime: flags.initialReplicationStartTime,
      settings: {
        frequency: flags.frequency,
        autoResynchronizeEnabled: flags.autoResynchronizeEnabled,
        autoResynchronizeIntervalStart: flags.autoResynchronizeIntervalStart,
        autoResynchronizeIntervalEnd: flags.autoResynchronizeIntervalEnd,
        pauseResynchronizeOutsideWindow: flags.pauseResynchronizeOutsideWindow,
      },
    });
    if (flags.json) printJson(viewOf(rep, vm));
    else process.stdout.write(replicationTable(rep, [vm]) + healthNotes(rep, [vm]));
  });
}
