import { VhdsyncError } from '../../errors.js';
import { describeRemoteReplicas } from '../../replica/remote-site.js';
import { describeReplicas, type ReplicaView } from '../../replica/view.js';
import { loadNetwork, type NetworkSettings } from '../../transport/network-settings.js';
import { parseSiteAddress } from '../../transport/replica-address.js';
import { printJson } from '../output.js';
import { formatTable } from './replication-common.js';

export interface ReplicaSideFlags extends NetworkSettings {
  replicaPath?: string;
  replicaServer?: string;
  json?: boolean;
}

/**
 * `get-replication [vm] --replica-path DIR | --replica-server tls://HOST:PORT`: Get-VMReplication run on
 * the replica side — Mode Replica, its own State/Health, the last applied time and the recovery points,
 * read from the replica folders themselves (no primary record needed).
 */
export async function showReplicaSide(name: string | undefined, flags: ReplicaSideFlags): Promise<void> {
  if (flags.replicaPath !== undefined && flags.replicaServer !== undefined) throw new VhdsyncError('USAGE', 'get-replication: give one of --replica-path DIR or --replica-server tls://HOST:PORT');
  let views: ReplicaView[];
  if (flags.replicaPath !== undefined) views = await describeReplicas(flags.replicaPath, name);
  else {
    // tls://HOST:PORT/NAME names the folder as the VM argument would.
    const given = /^tls:\/\/[^/]+\/([^/]+)\/?$/i.exec(flags.replicaServer!)?.[1];
    if (given !== undefined && name !== undefined && given !== name) throw new VhdsyncError('USAGE', `get-replication ${name}: --replica-server names another folder (${given})`);
    name ??= given;
    const address = parseSiteAddress(flags.replicaServer!, name ?? 'all');
    views = await describeRemoteReplicas(address, await loadNetwork(flags, `get-replication --replica-server ${flags.replicaServer}`), name);
  }
  if (flags.json) {
    printJson(name === undefined ? views : views[0]);
    return;
  }
  if (views.length === 0) {
    process.stdout.write('No replica here.\n');
    return;
  }
  let out = formatTable(
    ['VMName', 'State', 'Health', 'Mode', 'LastAppliedLogTime', 'RecoveryPoints', 'Relationship'],
    views.map((v) => [v.VMName, v.State, v.Health, v.Mode, v.LastAppliedLogTime ?? '-', v.RecoveryPoints.length, v.Relationship]),
  );
  const notes = views.flatMap((v) => v.HealthDetails.map((d) => `${v.VMName}: ${d}`));
  if (notes.length) out += '\n' + notes.join('\n') + '\n';
  if (name !== undefined && views[0].RecoveryPoints.length > 0) {
    out += '\n' + formatTable(['Time', 'Kind', 'Sequence'], views[0].RecoveryPoints.map((p) => [p.Time, p.PreResync ? `${p.Kind} (pre-resync)` : p.Kind, p.Sequence]));
  }
  process.stdout.write(out);
}
