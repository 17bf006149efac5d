import type { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { VhdsyncError, ioError } from '../../errors.js';
import { ReplicaServer, type ServerEvent } from '../../replica/server.js';
import { formatRate } from '../../transport/rate.js';
import { parseListen } from '../../transport/replica-address.js';
import { addNetworkFlags } from '../network-flags.js';
import { loadNetwork, type NetworkSettings } from '../../transport/network-settings.js';

interface ServeFlags extends NetworkSettings {
  listen: string;
  root: string;
  maxActiveTransfers: string;
  stallTimeout: string;
  json?: boolean;
}

export function register(program: Command): void {
  const replica = program.command('replica').description('The replica site: serve replica disks to primaries over mutual TLS');
  const serve = replica
    .command('serve')
    .description('Serve the replica disks under --root to primaries (vhdsync resync primary.vhd tls://HOST:PORT/NAME/disk.vhd)')
    .requiredOption('--listen <host:port>', 'address to listen on, e.g. 0.0.0.0:4000 (port 0: any free port)')
    .requiredOption('--root <dir>', 'replica disks live under this directory; nothing outside it is read or written')
    .option('--max-active-transfers <n>', 'transfers served at once; more wait in a queue', '3')
    .option('--stall-timeout <seconds>', 'drop a peer that sends nothing (not even a keepalive) for this long', '60')
    .option('--json', 'log one JSON object per line');
  addNetworkFlags(serve, 'cap what the server receives from all primaries together').action(async (flags: ServeFlags) => {
    const { host, port } = parseListen(flags.listen);
    const maxActiveTransfers = Number(flags.maxActiveTransfers);
    if (!Number.isInteger(maxActiveTransfers) || maxActiveTransfers < 1) throw new VhdsyncError('USAGE', `--max-active-transfers: '${flags.maxActiveTransfers}' is not a whole number of at least 1`);
    const stallSeconds = Number(flags.stallTimeout);
    if (!Number.isFinite(stallSeconds) || stallSeconds <= 0) throw new VhdsyncError('USAGE', `--stall-timeout: '${flags.stallTimeout}' is not a number of seconds`);
    const root = resolve(flags.root);
    const st = await stat(root).catch((e) => {
      throw ioError(`--root ${root}`, e);
    });
    if (!st.isDirectory()) throw new VhdsyncError('USAGE', `--root ${root}: not a directory`);
    const { tls, limiter } = await loadNetwork(flags, 'replica serve');

    const log = (e: ServerEvent) => process.stdout.write((flags.json ? JSON.stringify({ time: new Date().toISOString(), ...e }) : `${new Date().toISOString()} ${describe(e)}`) + '\n');
    const server = await ReplicaServer.start({ host, port, root, tls, maxActiveTransfers, limiter, stallMs: stallSeconds * 1000, log });
    if (!flags.json) {
      process.stdout.write(`  mutual TLS as ${tls.subject}, clients signed by ${tls.caSubject}; ${maxActiveTransfers} transfer(s) at once; bandwidth ${formatRate(limiter?.rate ?? Infinity)}${flags.bandwidthSchedule ? ` (schedule ${flags.bandwidthSchedule})` : ''}\n`);
    }
    await new Promise<void>((done) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        // Clients are dropped; each replica keeps its checkpoint and the primary resumes later.
        void server.close().then(done);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  });
}

function describe(e: ServerEvent): string {
  switch (e.event) {
    case 'listening':
      return `replica server listening on ${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}, root ${e.root}`;
    case 'refused':
      return `refused ${e.peer}${e.target ? ` (${e.target})` : ''}: ${e.reason}`;
    case 'dropped':
      return `dropped ${e.connections} connection(s) from ${e.addresses} address(es) before 'open': ${e.reason}`;
    case 'queued':
      return `queued ${e.peer} for ${e.target} at position ${e.position}`;
    case 'started':
      return `started ${e.target} for ${e.client} at ${e.peer} (${e.active} active)`;
    case 'finished':
      return `finished ${e.target} for ${e.peer}: ${e.outcome} in ${e.seconds.toFixed(1)} s (${e.bytesReceived} bytes in, ${e.bytesSent} out)`;
  }
}
