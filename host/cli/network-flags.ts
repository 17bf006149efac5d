import type { Command } from 'commander';

/** The flags every networked command shares (`resync` to a tls:// replica, `replica serve`, `enable-replication`). */
export function addNetworkFlags(cmd: Command, bandwidthWhat: string): Command {
  return cmd
    .option('--cert <file>', 'this side\'s certificate (PEM), signed by a CA the other side trusts')
    .option('--key <file>', 'the private key of --cert (PEM, unencrypted)')
    .option('--ca <file>', 'the CA certificate (PEM) the other side\'s certificate must be signed by')
    .option('--bandwidth <rate>', `${bandwidthWhat}: 8mbps, 10MB/s, unlimited ...`)
    .option('--bandwidth-schedule <windows>', 'rates by local time, e.g. "08:00-18:00=2mbps,18:00-08:00=unlimited" (outside the windows: --bandwidth)');
}
