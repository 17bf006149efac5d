import type { Command } from 'commander';
import { printJson } from '../output.js';
import { outcomeJson, outcomeText, replicationFor, runInForeground, withHome, withLink, type HomeFlags } from './replication-common.js';

/** Start-VMInitialReplication: the replica disks are created and filled; then the VM is Replicating. */
export function register(program: Command): void {
  const cmd = program
    .command('start-initial-replication')
    .description('Create the replica disks of a VM and copy what the primaries hold (writes made meanwhile are tracked and follow)')
    .argument('<vm>', 'VM name')
    .option('--again', 'the replica was lost: build a new one from nothing (a resync never re-seeds a missing replica)');
  withLink(withHome(cmd)).action(async (name: string, flags: HomeFlags & { link?: string; again?: boolean }) => {
    const rep = replicationFor(flags);
    const outcome = await runInForeground((opts) => rep.startInitialReplication(name, { ...opts, again: flags.again }), flags.link);
    if (flags.json) printJson(outcomeJson(rep, outcome));
    else process.stdout.write(outcomeText(rep, outcome, 'Initial replication'));
    process.exitCode = outcome.result === 'completed' ? 0 : outcome.result === 'paused' ? 3 : 1;
  });
}
