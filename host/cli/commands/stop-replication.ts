import type { Command } from 'commander';
import { printJson } from '../output.js';
import { healthNotes, replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';
import { stopReplication } from '../../replication/control.js';

/** Stop-VMReplication: "Cancels an ongoing virtual machine resynchronization". */
export function register(program: Command): void {
  withHome(
    program
      .command('stop-replication')
      .description('Cancel the resynchronization of a VM; it stays in Resynchronization Required and the next one starts from the beginning')
      .argument('<vm>', 'VM name'),
  ).action(async (name: string, flags: HomeFlags) => {
    const rep = replicationFor(flags);
    const vm = await stopReplication(rep, name);
    if (flags.json) printJson(viewOf(rep, vm));
    else process.stdout.write(replicationTable(rep, [vm]) + healthNotes(rep, [vm]));
  });
}
