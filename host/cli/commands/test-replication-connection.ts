import type { Command } from 'commander';
import { testReplicationConnection } from '../../replication/connection-test.js';
import { addReplicaServerFlags, replicaServerFromFlags, type ReplicaServerFlags } from '../network-flags.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags, ReplicaServerFlags {
  vm?: string;
  cert?: string;
  key?: string;
  ca?: string;
}

/** Test-VMReplicationConnection: what enable-replication checks, without enabling anything. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('test-replication-connection')
      .description('Check a replica before enabling replication (or a VM\'s replica): reach the replica server, mutual TLS, the folder; or that a replica directory can be written')
      .argument('[replica]', 'a replica directory, or a replica server tls://HOST:PORT[/NAME]')
      .option('--vm <name>', "test this VM's own replica, with its certificates")
      .option('--cert <file>', "this side's certificate (PEM), for a replica server")
      .option('--key <file>', 'the private key of --cert (PEM, unencrypted)')
      .option('--ca <file>', "the CA certificate (PEM) the server's certificate must be signed by"),
  );
  addReplicaServerFlags(cmd, 'Test-VMReplicationConnection').action(async (given: string | undefined, flags: Flags) => {
    const replica = replicaServerFromFlags(given, flags, 'test-replication-connection');
    const out = await testReplicationConnection(replicationFor(flags), { replica, vm: flags.vm, network: { cert: flags.cert, key: flags.key, ca: flags.ca } });
    if (flags.json) printJson(out);
    else process.stdout.write(`${out.Message}\n`);
  });
}
