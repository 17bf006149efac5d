import type { Command } from 'commander';
import { resolve } from 'node:path';
import { importInitialReplication } from '../../replication/offline-ir.js';
import { printJson } from '../output.js';
import { healthNotes, replicationFor, replicationTable, viewOf, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  path: string;
  replicaRoot?: string;
}

/** Import-VMInitialReplication: the replica site adopts an offline initial replication from removable media. */
export function register(program: Command): void {
  withHome(
    program
      .command('import-initial-replication')
      .description('At the replica site: adopt an offline initial replication (start-initial-replication --destination-path) from removable media; the VM then replicates')
      .argument('[vm]', 'VM name (for a VM replicated to a directory; optional with --replica-root)')
      .requiredOption('--path <dir>', 'the media: the folder given to --destination-path')
      .option('--replica-root <dir>', "on a replica server's machine: the server's --root (the primary sees the import at its next service pass)"),
  ).action(async (name: string | undefined, flags: Flags) => {
    const rep = flags.replicaRoot === undefined ? replicationFor(flags) : undefined;
    const out = await importInitialReplication(rep, { vm: name, path: flags.path, replicaRoot: flags.replicaRoot });
    if (flags.json) {
      printJson({ VMName: out.manifest.vmName, Folder: out.folder, ExportedAt: out.manifest.exportedAt, ...(out.vm && rep ? viewOf(rep, out.vm) : {}) });
      return;
    }
    process.stdout.write(`Imported the offline initial replication of ${out.manifest.vmName} (exported ${out.manifest.exportedAt}) into ${resolve(out.folder)}.\n`);
    if (out.vm && rep) process.stdout.write(replicationTable(rep, [out.vm]) + healthNotes(rep, [out.vm]));
  });
}
