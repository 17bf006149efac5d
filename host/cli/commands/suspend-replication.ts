import type { Command } from 'commander';
import { printJson } from '../output.js';
import { healthNotes, replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';
import { suspendReplication } from '../../replication/control.js';
import { suspendExtended, withExtended } from './extended.js';

/** Suspend-VMReplication: pauses replication (tracking goes on), or pauses a running resync. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('suspend-replication')
      .description('Pause replication of a VM (changes are kept and sent on resume), or pause its resynchronization')
      .argument('<vm>', 'VM name'),
  );
  withExtended(cmd).action(async (name: string, flags: HomeFlags & { extended?: boolean }) => {
    if (flags.extended) return suspendExtended(name, flags);
    const rep = replicationFor(flags);
    const vm = await suspendReplication(rep, name);
    if (flags.json) printJson(viewOf(rep, vm));
    else process.stdout.write(replicationTable(rep, [vm]) + healthNotes(rep, [vm]));
  });
}
