import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { testReplicationConnection } from '../../replication/connection-test.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  vm?: string;
  replicaServerName?: string;
  replicaServerPort?: string;
  authenticationType?: string;
  cert?: string;
  key?: string;
  ca?: string;
}

/** Test-VMReplicationConnection: what enable-replication checks, without enabling anything. */
export function register(program: Command): void {
  withHome(
    program
      .command('test-replication-connection')
      .description('Check a replica before enabling replication (or a VM\'s replica): reach the replica server, mutual TLS, the folder; or that a replica directory can be written')
      .argument('[replica]', 'a replica directory, or a replica server tls://HOST:PORT[/NAME]')
      .option('--vm <name>', "test this VM's own replica, with its certificates")
      .option('--replica-server-name <host>', 'as Test-VMReplicationConnection: the server (instead of tls://HOST:PORT)')
      .option('--replica-server-port <port>', 'with --replica-server-name (default 443, as Hyper-V with certificates)')
      .option('--authentication-type <type>', 'Certificate (mutual TLS), the only kind vhdsync has')
      .option('--cert <file>', "this side's certificate (PEM), for a replica server")
      .option('--key <file>', 'the private key of --cert (PEM, unencrypted)')
      .option('--ca <file>', "the CA certificate (PEM) the server's certificate must be signed by"),
  ).action(async (given: string | undefined, flags: Flags) => {
    const replica = serverFromFlags(given, flags);
    const out = await testReplicationConnection(replicationFor(flags), { replica, vm: flags.vm, network: { cert: flags.cert, key: flags.key, ca: flags.ca } });
    if (flags.json) printJson(out);
    else process.stdout.write(`${out.Message}\n`);
  });
}

/** Test-VMReplicationConnection's own parameters (-ReplicaServerName, -ReplicaServerPort, -AuthenticationType) as a tls:// address. */
function serverFromFlags(given: string | undefined, flags: Flags): string | undefined {
  const type = flags.authenticationType?.trim().toLowerCase();
  if (type !== undefined && type !== 'certificate') {
    throw new VhdsyncError('USAGE', `--authentication-type: '${flags.authenticationType}' is not available; vhdsync authenticates with certificates only (mutual TLS): use Certificate`);
  }
  if (flags.replicaServerName === undefined) {
    if (flags.replicaServerPort !== undefined) throw new VhdsyncError('USAGE', '--replica-server-port goes with --replica-server-name');
    return given;
  }
  if (given !== undefined) throw new VhdsyncError('USAGE', `test-replication-connection: give the replica as ${given} or as --replica-server-name, not both`);
  const host = flags.replicaServerName.includes(':') ? `[${flags.replicaServerName}]` : flags.replicaServerName;
  return `tls://${host}:${flags.replicaServerPort ?? '443'}`;
}
