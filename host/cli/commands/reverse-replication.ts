import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { reverseFromReplica, reverseReplication } from '../../replication/reverse.js';
import { anyNetworkSetting, type NetworkSettings } from '../../transport/network-settings.js';
import { addNetworkFlags } from '../network-flags.js';
import { printJson } from '../output.js';
import { outcomeJson, outcomeText, replicationFor, runInForeground, withHome, withLink, type HomeFlags } from './replication-common.js';
import { runResync } from '../../replication/resync-run.js';

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
    .option('--replica <dir>', "where the reversed relationship keeps its logs (default: .vhdsync-replica beside the old primary's first disk); with --replica-path: the old primary's side, tls://HOST:PORT/NAME (or a directory)")
    .option('--replica-path <dir>', "run where the failed-over replica is (a replica server's --root, or a replica directory): its <vm>/ folder becomes the primary of a VM in this home");
  addNetworkFlags(withLink(withHome(cmd)), 'with --replica-path and a tls:// --replica: cap what the reversed VM sends').action(async (name: string, flags: HomeFlags & NetworkSettings & { replica?: string; replicaPath?: string; link?: string }) => {
    const rep = replicationFor(flags);
    if (flags.replicaPath !== undefined) {
      if (flags.replica === undefined) throw new VhdsyncError('USAGE', `reverse-replication ${name} --replica-path: give --replica tls://HOST:PORT/NAME, the old primary's side (a replica server there serves its disks as NAME/<file>)`);
      await reverseFromReplica(rep, name, { replicaPath: flags.replicaPath, replica: flags.replica, network: flags });
    } else {
      const net = anyNetworkSetting(flags);
      if (net) throw new VhdsyncError('USAGE', `reverse-replication ${name}: ${net} applies with --replica-path and a tls:// --replica`);
      await reverseReplication(rep, name, { replica: flags.replica });
    }
    const outcome = await runInForeground((opts) => runResync(rep, name, { ...opts, restart: true, origin: 'manual' }), flags.link);
    if (flags.json) printJson(outcomeJson(rep, outcome));
    else process.stdout.write(outcomeText(rep, outcome, 'Reverse replication'));
    process.exitCode = outcome.result === 'completed' ? 0 : outcome.result === 'paused' ? 3 : 1;
  });
}
