import type { Command } from 'commander';
import { VhdsyncError } from '../errors.js';

/** The flags every networked command shares (`resync` to a tls:// replica, `replica serve`, `enable-replication`). */
export function addNetworkFlags(cmd: Command, bandwidthWhat: string): Command {
  return cmd
    .option('--cert <file>', 'this side\'s certificate (PEM), signed by a CA the other side trusts')
    .option('--key <file>', 'the private key of --cert (PEM, unencrypted)')
    .option('--ca <file>', 'the CA certificate (PEM) the other side\'s certificate must be signed by')
    .option('--bandwidth <rate>', `${bandwidthWhat}: 8mbps, 10MB/s, unlimited ...`)
    .option('--bandwidth-schedule <windows>', 'rates by local time, e.g. "08:00-18:00=2mbps,18:00-08:00=unlimited" (outside the windows: --bandwidth)');
}

/** PowerShell's -ReplicaServerName, -ReplicaServerPort and -AuthenticationType, as options of a command. */
export function addReplicaServerFlags(cmd: Command, what: string): Command {
  return cmd
    .option('--replica-server-name <host>', `as ${what}: the replica server (instead of tls://HOST:PORT)`)
    .option('--replica-server-port <port>', 'with --replica-server-name (default 443, as Hyper-V with certificates)')
    .option('--authentication-type <type>', 'Certificate (mutual TLS), the only kind vhdsync has');
}

export interface ReplicaServerFlags {
  replicaServerName?: string;
  replicaServerPort?: string;
  authenticationType?: string;
}

/**
 * Those three flags as a tls://HOST:PORT address (`given`: the replica as the command's own argument or
 * --replica, if any; both is refused). `verb` names the command in messages.
 */
export function replicaServerFromFlags(given: string | undefined, flags: ReplicaServerFlags, verb: string): string | undefined {
  const type = flags.authenticationType?.trim().toLowerCase();
  if (type !== undefined && type !== 'certificate') {
    throw new VhdsyncError('USAGE', `--authentication-type: '${flags.authenticationType}' is not available; vhdsync authenticates with certificates only (mutual TLS): use Certificate`);
  }
  if (flags.replicaServerName === undefined) {
    if (flags.replicaServerPort !== undefined) throw new VhdsyncError('USAGE', '--replica-server-port goes with --replica-server-name');
    return given;
  }
  if (given !== undefined) throw new VhdsyncError('USAGE', `${verb}: give the replica as ${given} or as --replica-server-name, not both`);
  const port = flags.replicaServerPort ?? '443';
  if (!/^\d{1,5}$/.test(port.trim()) || Number(port) < 1 || Number(port) > 65535) throw new VhdsyncError('USAGE', `--replica-server-port: '${port}' is not a port number (1-65535)`);
  const host = flags.replicaServerName.includes(':') ? `[${flags.replicaServerName}]` : flags.replicaServerName;
  return `tls://${host}:${port.trim()}`;
}
