import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { VhdsyncError, ioError } from '../../errors.js';
import { RunningVm } from '../../replication/running-vm.js';
import { parseSize } from '../../units.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  disk: string;
  offset: string;
  length?: string;
  pattern?: string;
  from?: string;
}

/** One tracked write to a VM's disk: the VM runs for the length of the write and shuts down cleanly. */
export function register(program: Command): void {
  withHome(
    program
      .command('write')
      .description('Make one tracked write to a disk of a VM (the VM runs for that write and shuts down cleanly)')
      .argument('<vm>', 'VM name')
      .option('--disk <n>', 'disk index (0 = the first --disk given to enable-replication)', '0')
      .requiredOption('--offset <bytes>', 'where to write (bytes; K/M/G suffixes)')
      .option('--length <bytes>', 'how many bytes (with --pattern; default: the whole --from file)')
      .option('--pattern <byte>', 'fill with this byte, e.g. 0xAB')
      .option('--from <file>', 'write the content of this file'),
  ).action(async (name: string, flags: Flags) => {
    const disk = Number(flags.disk);
    if (!Number.isSafeInteger(disk) || disk < 0) throw new VhdsyncError('USAGE', `--disk: '${flags.disk}' is not a disk index`);
    const offset = parseSize(flags.offset, '--offset');
    if ((flags.pattern === undefined) === (flags.from === undefined)) throw new VhdsyncError('USAGE', 'write needs exactly one of --pattern 0xAB or --from FILE');
    let data: Uint8Array;
    if (flags.pattern !== undefined) {
      const byte = Number(flags.pattern);
      if (!Number.isInteger(byte) || byte < 0 || byte > 255) throw new VhdsyncError('USAGE', `--pattern: '${flags.pattern}' is not a byte (0 to 255, or 0x00 to 0xFF)`);
      if (flags.length === undefined) throw new VhdsyncError('USAGE', '--pattern needs --length');
      data = new Uint8Array(parseSize(flags.length, '--length')).fill(byte);
    } else {
      data = new Uint8Array(await readFile(flags.from!).catch((e) => {
        throw ioError(flags.from!, e);
      }));
      if (flags.length !== undefined) data = data.subarray(0, parseSize(flags.length, '--length'));
    }
    if (data.byteLength === 0) throw new VhdsyncError('USAGE', 'nothing to write (length 0)');
    const rep = replicationFor(flags);
    const vm = await RunningVm.start(rep, name);
    // A signal during the write must not cut it short: the VM shuts down cleanly right after.
    const ignore = () => undefined;
    process.on('SIGINT', ignore);
    process.on('SIGTERM', ignore);
    try {
      await vm.write(disk, offset, data);
    } finally {
      await vm.close();
      process.off('SIGINT', ignore);
      process.off('SIGTERM', ignore);
    }
    const after = await rep.get(name);
    if (flags.json) {
      printJson({ VMName: name, Disk: disk, Offset: offset, Length: data.byteLength, State: after.state, Triggers: vm.triggers.map((t) => ({ Reason: t.reason, Evidence: t.evidence })) });
    } else {
      for (const t of vm.triggers) process.stderr.write(`vhdsync: ${name}: resynchronization required: ${t.reason}: ${t.evidence}\n`);
      process.stdout.write(`${name}: wrote ${data.byteLength} bytes at ${offset} on disk ${disk}; replication state ${after.state}\n`);
    }
  });
}
