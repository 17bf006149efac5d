import type { Command } from 'commander';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { showReplicaSide, type ReplicaSideFlags } from './replica-side.js';
import { healthNotes, replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';

/** Get-VMReplication: state and health as names, settings with Hyper-V's property names. */
export function register(program: Command): void {
  withHome(
    program
      .command('get-replication')
      .description('Show the replication of one VM or of all VMs (state, health, frequency, resync policy)')
      .argument('[vm]', 'VM name (default: every VM)')
      .option('--replica-path <dir>', "the replica side's view: the replicas in this local replica directory (Mode Replica)")
      .option('--replica-server <url>', "the replica side's view: the replicas on a replica server, tls://HOST:PORT (with --cert, --key, --ca)")
      .option('--cert <file>', 'with --replica-server: this side\'s certificate (PEM)')
      .option('--key <file>', 'with --replica-server: the private key of --cert (PEM)')
      .option('--ca <file>', "with --replica-server: the CA the server's certificate must be signed by (PEM)"),
  ).action(async (name: string | undefined, flags: HomeFlags & ReplicaSideFlags) => {
    if (flags.replicaPath !== undefined || flags.replicaServer !== undefined) return showReplicaSide(name, flags);
    const rep = replicationFor(flags);
    const vms = name === undefined ? await rep.list() : [await rep.get(name)];
    // The scope's bytes as they are now (a disk in bitmap mode keeps adding extents).
    const views = await Promise.all(vms.map(async (vm) => ({ ...viewOf(rep, vm), ...(await rep.scopeView(vm)) })));
    if (flags.json) printJson(name === undefined ? views : views[0]);
    else if (vms.length === 0) process.stdout.write('No virtual machine is enabled for replication.\n');
    else {
      const scopes = views.filter((v) => v.ResynchronizationScope).map((v) => `${v.VMName}: ResynchronizationScope ${v.ResynchronizationScope} (${formatSize(v.ResynchronizationScopeBytes ?? 0)})\n`);
      process.stdout.write(replicationTable(rep, vms) + healthNotes(rep, vms) + (scopes.length ? '\n' + scopes.join('') : ''));
    }
  });
}
