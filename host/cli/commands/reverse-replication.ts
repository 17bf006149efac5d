import type { Command } from 'commander';
import { reverseReplication } from '../../replication/reverse.js';
import { printJson } from '../output.js';
import { outcomeJson, outcomeText, replicationFor, runInForeground, withHome, withLink, type HomeFlags } from './replication-common.js';

/**
 * Set-VMReplication -Reverse: after a planned failover the replica becomes the primary and the old
 * primary its replica; the new baseline is a resync (only the differences travel). Runs it in the
 * foreground. Exit status: 0 done, 3 paused (continue with resume-replication --continue).
 */
export function register(program: Command): void {
  const cmd = program
    .command('reverse-replication')
    .description('After a planned or unplanned failover: replicate from the failed-over replica back to the old primary (a resync makes the baseline)')
    .argument('<vm>', 'VM name')
    .option('--replica <dir>', "where the reversed relationship keeps its logs (default: .vhdsync-replica beside the old primary's first disk)");
  withLink(withHome(cmd)).action(async (name: string, flags: HomeFlags & { replica?: string; link?: string }) => {
    const rep = replicationFor(flags);
    await reverseReplication(rep, name, { replica: flags.replica });
    const outcome = await runInForeground((opts) => rep.runResync(name, { ...opts, restart: true, origin: 'manual' }), flags.link);
    if (flags.json) printJson(outcomeJson(rep, outcome));
    else process.stdout.write(outcomeText(rep, outcome, 'Reverse replication'));
    process.exitCode = outcome.result === 'completed' ? 0 : outcome.result === 'paused' ? 3 : 1;
  });
}
