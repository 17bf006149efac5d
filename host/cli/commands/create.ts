import type { Command } from 'commander';
import { createDifferencing, createVhd, openDisk } from '../../disk/index.js';
import { VhdsyncError } from '../../errors.js';
import { formatSize, parseSize } from '../../units.js';
import { printJson } from '../output.js';

interface CreateFlags {
  size?: string;
  type?: string;
  blockSize?: string;
  parent?: string;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('create')
    .description('Create an empty VHD: fixed or dynamic of a given size, or a differencing disk over a parent (VHD or raw)')
    .argument('<path>', 'the new image')
    .option('--size <size>', 'virtual size: bytes or 512M, 1G, ... (a multiple of 512; taken from the parent with --parent)')
    .option('--type <type>', 'fixed or dynamic (default dynamic)')
    .option('--block-size <size>', 'dynamic block size, a power of two (default 2M; with --parent, the parent\'s)')
    .option('--parent <image>', 'create a differencing disk over this image')
    .option('--force', 'replace an existing file')
    .option('--json', 'print the result as JSON')
    .action(async (path: string, flags: CreateFlags) => {
      const blockSize = flags.blockSize !== undefined ? parseSize(flags.blockSize, '--block-size') : undefined;
      const overwrite = flags.force ?? false;
      if (flags.parent !== undefined) {
        if (flags.type !== undefined && flags.type !== 'differencing') {
          throw new VhdsyncError('USAGE', `--type ${flags.type} cannot be combined with --parent (the new disk is differencing)`);
        }
        if (flags.size !== undefined) {
          const size = parseSize(flags.size, '--size');
          const parent = await openDisk(flags.parent, { readOnly: true });
          const parentSize = parent.virtualSize;
          await parent.close();
          if (size !== parentSize) {
            throw new VhdsyncError('USAGE', `--size ${size} differs from the parent's virtual size ${parentSize}; a differencing disk has its parent's size (omit --size)`);
          }
        }
        await createDifferencing(path, flags.parent, { blockSize, overwrite });
      } else {
        if (flags.size === undefined) throw new VhdsyncError('USAGE', 'create: --size is required (or --parent for a differencing disk)');
        const type = flags.type ?? 'dynamic';
        if (type !== 'fixed' && type !== 'dynamic') throw new VhdsyncError('USAGE', `--type must be fixed or dynamic (got '${type}')`);
        if (type === 'fixed' && blockSize !== undefined) throw new VhdsyncError('USAGE', '--block-size applies to dynamic disks only');
        await createVhd(path, { size: parseSize(flags.size, '--size'), type, blockSize, overwrite });
      }
      const disk = await openDisk(path, { readOnly: true });
      try {
        const summary = { image: path, format: disk.format, type: disk.type, virtualSize: disk.virtualSize, blockSize: disk.blockSize, parent: disk.parent?.path ?? null };
        if (flags.json) printJson(summary);
        else {
          const over = summary.parent ? ` over ${summary.parent}` : '';
          process.stdout.write(`created ${path}: ${summary.type} VHD, ${formatSize(summary.virtualSize)} (${summary.virtualSize} bytes), block ${formatSize(summary.blockSize)}${over}\n`);
        }
      } finally {
        await disk.close();
      }
    });
}
