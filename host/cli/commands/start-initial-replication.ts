import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { exportInitialReplication } from '../../replication/offline-ir.js';
import { shellWord } from '../../replica/vm-name.js';
import { printJson } from '../output.js';
import {
  healthNotes, outcomeJson, outcomeText, replicationFor, replicationTable, runInForeground, viewOf, withHome, withLink, type HomeFlags,
} from './replication-common.js';
import { scheduleInitialReplication, startInitialReplication } from '../../replication/resync-run.js';
import { startInitialExtended, withExtended } from './extended.js';

interface Flags extends HomeFlags {
  link?: string;
  again?: boolean;
  useExistingReplica?: boolean;
  initialReplicationStartTime?: string;
  destinationPath?: string;
}

/**
 * Start-VMInitialReplication: the replica disks are created and filled; then the VM is Replicating.
 * With --initial-replication-start-time it is only scheduled (the service starts it); with
 * --use-existing-replica the disks already at the replica site are made equal by a resync.
 */
export function register(program: Command): void {
  const cmd = program
    .command('start-initial-replication')
    .description('Create the replica disks of a VM and copy what the primaries hold (writes made meanwhile are tracked and follow)')
    .argument('<vm>', 'VM name')
    .option('--again', 'the replica was lost: build a new one from nothing (a resync never re-seeds a missing replica)')
    .option('--use-existing-replica', 'replica disks already at the replica site (a copy, a restored backup) are the initial copy: a resynchronization compares them and sends only the differences')
    .option('--destination-path <dir>', 'offline initial replication: export the replica disks into DIR (removable media) for import-initial-replication at the replica site; writes made meanwhile follow as normal cycles')
    .option('--initial-replication-start-time <time>', 'do not start now: the service starts it then, at most 7 days ahead (e.g. "2024-08-01 05:00" or "08/01/2024 05:00:00")');
  withExtended(withLink(withHome(cmd))).action(async (name: string, flags: Flags & { extended?: boolean }) => {
    if (flags.extended) return startInitialExtended(name, flags);
    const rep = replicationFor(flags);
    if (flags.initialReplicationStartTime !== undefined) {
      const vm = await scheduleInitialReplication(rep, name, flags.initialReplicationStartTime);
      if (flags.json) printJson(viewOf(rep, vm));
      else process.stdout.write(replicationTable(rep, [vm]) + healthNotes(rep, [vm]));
      return;
    }
    if (flags.destinationPath !== undefined && (flags.again || flags.useExistingReplica)) throw new VhdsyncError('USAGE', '--destination-path exports a new initial copy: not with --again or --use-existing-replica');
    const outcome = await runInForeground(
      (opts) => (flags.destinationPath !== undefined ? exportInitialReplication(rep, name, flags.destinationPath, opts) : startInitialReplication(rep, name, { ...opts, again: flags.again, useExistingReplica: flags.useExistingReplica })),
      flags.link,
    );
    if (flags.destinationPath !== undefined) {
      const o = outcome.vm.offlineInitialReplication;
      if (flags.json) printJson({ ...outcomeJson(rep, outcome), DestinationPath: o?.path ?? null, ExportedAt: o?.exportedAt ?? null });
      else {
        process.stdout.write(outcomeText(rep, outcome, `Offline initial replication (export to ${flags.destinationPath})`));
        if (outcome.result === 'completed') process.stdout.write(`import it at the replica site with: vhdsync import-initial-replication ${shellWord(outcome.vm.name)} --path DIR\n`);
      }
      process.exitCode = outcome.result === 'completed' ? 0 : outcome.result === 'paused' ? 3 : 1;
      return;
    }
    if (flags.json) printJson(outcomeJson(rep, outcome));
    else process.stdout.write(outcomeText(rep, outcome, flags.useExistingReplica ? 'Initial replication (resynchronized from the existing replica)' : 'Initial replication'));
    process.exitCode = outcome.result === 'completed' ? 0 : outcome.result === 'paused' ? 3 : 1;
  });
}
