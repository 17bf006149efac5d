import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { REPLICATION_HEALTH, REPLICATION_STATES } from '../../replica/states.js';
import { certificateThumbprint } from '../../replication/connection-test.js';
import { isNamePattern } from '../../replica/vm-name.js';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { showReplicaSide, type ReplicaSideFlags } from './replica-side.js';
import { formatList, healthNotes, matchingVms, replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';
import { healthNow, scopeView } from '../../replication/views.js';
import { getExtended, relationshipFlag, withExtended } from './extended.js';

interface Flags extends HomeFlags {
  list?: boolean;
  replicationState?: string;
  health?: string;
}

/** A state or health name in any case, as PowerShell takes an enum value; else one line naming the choices. */
function enumValue<T extends string>(text: string | undefined, all: readonly T[], flag: string): T | undefined {
  if (text === undefined) return undefined;
  const hit = all.find((x) => x.toLowerCase() === text.trim().toLowerCase());
  if (!hit) throw new VhdsyncError('USAGE', `${flag}: '${text}' is not one of ${all.join(', ')}`);
  return hit;
}

/** Get-VMReplication: state and health as names, settings with Hyper-V's property names. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('get-replication')
      .description('Show the replication of one VM or of all VMs (state, health, frequency, resync policy); --list shows every property')
      .argument('[vm]', "VM name (any case), or a wildcard as in Hyper-V: 'WEB*', 'RESYNC?VM' (default: every VM)")
      .option('--list', 'every property, one per line (as Get-VMReplication | Format-List *)')
      .option('--replication-state <state>', 'only VMs in this state (ReplicationState: Replicating, WaitingForStartResynchronize, ...)')
      .option('--health <health>', 'only VMs of this health (ReplicationHealth: Normal, Warning, Critical)')
      .option('--replica-path <dir>', "the replica side's view: the replicas in this local replica directory (Mode Replica)")
      .option('--replica-server <url>', "the replica side's view: the replicas on a replica server, tls://HOST:PORT (with --cert, --key, --ca)")
      .option('--cert <file>', 'with --replica-server: this side\'s certificate (PEM)')
      .option('--key <file>', 'with --replica-server: the private key of --cert (PEM)')
      .option('--ca <file>', "with --replica-server: the CA the server's certificate must be signed by (PEM)")
      .option('--replication-relationship-type <type>', 'Simple (default) or Extended (as --extended)'),
  );
  withExtended(cmd).action(async (name: string | undefined, flags: Flags & ReplicaSideFlags & { extended?: boolean; replicationRelationshipType?: string }) => {
    if (relationshipFlag(flags)) return getExtended(name, flags);
    if (flags.replicaPath !== undefined || flags.replicaServer !== undefined) return showReplicaSide(name, flags);
    const state = enumValue(flags.replicationState, REPLICATION_STATES, '--replication-state');
    const health = enumValue(flags.health, REPLICATION_HEALTH, '--health');
    const rep = replicationFor(flags);
    const vms = (await matchingVms(rep, name)).filter((vm) => (state === undefined || vm.state === state) && (health === undefined || healthNow(rep, vm).health === health));
    // The scope's bytes as they are now (a disk in bitmap mode keeps adding extents).
    const views = await Promise.all(
      vms.map(async (vm) => ({
        ...viewOf(rep, vm),
        ...(await scopeView(vm)),
        CertificateThumbprint: await certificateThumbprint(vm.network?.cert),
      })),
    );
    const single = name !== undefined && !isNamePattern(name) && state === undefined && health === undefined;
    if (flags.json) printJson(single ? views[0] : views);
    else if (vms.length === 0) process.stdout.write(name === undefined && state === undefined && health === undefined ? 'No virtual machine is enabled for replication.\n' : 'No virtual machine matches.\n');
    else if (flags.list) process.stdout.write(formatList(views.map((v) => ({ ...v, ReplicatedDisks: v.ReplicatedDisks.map((d) => d.Path) }))));
    else {
      const scopes = views.filter((v) => v.ResynchronizationScope).map((v) => `${v.VMName}: ResynchronizationScope ${v.ResynchronizationScope} (${formatSize(v.ResynchronizationScopeBytes ?? 0)})\n`);
      process.stdout.write(replicationTable(rep, vms) + healthNotes(rep, vms) + (scopes.length ? '\n' + scopes.join('') : ''));
    }
  });
}
