import type { Command } from 'commander';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { removeReplication } from '../../replication/enable.js';
import { removeExtended, withExtended } from './extended.js';

/** Remove-VMReplication: forget a VM (its tracking logs go; replica files stay where they are). */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('remove-replication')
      .description('Remove replication for a VM: its state and tracking logs are deleted; the disks and replicas stay')
      .argument('<vm>', 'VM name'),
  );
  withExtended(cmd).action(async (name: string, flags: HomeFlags & { extended?: boolean }) => {
    if (flags.extended) return removeExtended(name, flags);
    const { warnings } = await removeReplication(replicationFor(flags), name);
    if (flags.json) printJson({ VMName: name, State: 'Disabled', Warnings: warnings });
    else {
      for (const w of warnings) process.stderr.write(`vhdsync: warning: ${w}\n`);
      process.stdout.write(`Replication of ${name} removed.\n`);
    }
  });
}
