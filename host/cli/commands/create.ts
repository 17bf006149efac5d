import type { Command } from 'commander';
import { createDifferencing, createVhd, createVhdx, createVhdxDifferencing, openDisk } from '../../disk/index.js';
import { VhdsyncError } from '../../errors.js';
import { formatSize, parseSize } from '../../units.js';
import { printJson } from '../output.js';

interface CreateFlags {
  size?: string;
  type?: string;
  blockSize?: string;
  parent?: string;
  logicalSector?: string;
  physicalSector?: string;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('create')
    .description('Create an empty VHD or VHDX (by the extension .vhdx): fixed or dynamic of a given size, or a differencing disk over a parent (VHD or raw for a VHD, VHDX for a VHDX)')
    .argument('<path>', 'the new image (.vhdx: a VHDX; anything else: a VHD)')
    .option('--size <size>', 'virtual size: bytes or 512M, 1G, ... (a multiple of the sector size; taken from the parent with --parent)')
    .option('--type <type>', 'fixed or dynamic (default dynamic)')
    .option('--block-size <size>', 'block size, a power of two (VHD: default 2M; VHDX: 1M to 256M, default 32M; with --parent, the parent\'s)')
    .option('--logical-sector <bytes>', 'VHDX logical sector size: 512 (default) or 4096')
    .option('--physical-sector <bytes>', 'VHDX physical sector size: 512 or 4096 (default: the logical sector size)')
    .option('--parent <image>', 'create a differencing disk over this image')
    .option('--force', 'replace an existing file')
    .option('--json', 'print the result as JSON')
    .action(async (path: string, flags: CreateFlags) => {
      const blockSize = flags.blockSize !== undefined ? parseSize(flags.blockSize, '--block-size') : undefined;
      const overwrite = flags.force ?? false;
      const vhdx = path.toLowerCase().endsWith('.vhdx');
      const logical = sectorFlag(flags.logicalSector, '--logical-sector');
      const physical = sectorFlag(flags.physicalSector, '--physical-sector');
      if (!vhdx && (logical !== undefined || physical !== undefined)) {
        throw new VhdsyncError('USAGE', '--logical-sector and --physical-sector apply to VHDX images (a path ending in .vhdx); a VHD has 512-byte sectors');
      }
      if (flags.parent !== undefined) {
        if (flags.type !== undefined && flags.type !== 'differencing') {
          throw new VhdsyncError('USAGE', `--type ${flags.type} cannot be combined with --parent (the new disk is differencing)`);
        }
        if (logical !== undefined || physical !== undefined) {
          throw new VhdsyncError('USAGE', "a differencing disk has its parent's sector sizes (omit --logical-sector and --physical-sector)");
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
        if (vhdx) await createVhdxDifferencing(path, flags.parent, { blockSize, overwrite });
        else await createDifferencing(path, flags.parent, { blockSize, overwrite });
      } else {
        if (flags.size === undefined) throw new VhdsyncError('USAGE', 'create: --size is required (or --parent for a differencing disk)');
        const type = flags.type ?? 'dynamic';
        if (type !== 'fixed' && type !== 'dynamic') throw new VhdsyncError('USAGE', `--type must be fixed or dynamic (got '${type}')`);
        const size = parseSize(flags.size, '--size');
        if (vhdx) {
          await createVhdx(path, { size, type, blockSize, logicalSectorSize: logical, physicalSectorSize: physical, overwrite });
        } else {
          if (type === 'fixed' && blockSize !== undefined) throw new VhdsyncError('USAGE', '--block-size applies to dynamic VHDs only');
          await createVhd(path, { size, type, blockSize, overwrite });
        }
      }
      const disk = await openDisk(path, { readOnly: true });
      try {
        const summary = {
          image: path, format: disk.format, type: disk.type, virtualSize: disk.virtualSize, blockSize: disk.blockSize, sectorSize: disk.sectorSize,
          parent: disk.parent?.path ?? null,
        };
        if (flags.json) printJson(summary);
        else {
          const over = summary.parent ? ` over ${summary.parent}` : '';
          const sectors = summary.sectorSize !== 512 ? `, ${summary.sectorSize}-byte sectors` : '';
          process.stdout.write(
            `created ${path}: ${summary.type} ${summary.format.toUpperCase()}, ${formatSize(summary.virtualSize)} (${summary.virtualSize} bytes), block ${formatSize(summary.blockSize)}${sectors}${over}\n`,
          );
        }
      } finally {
        await disk.close();
      }
    });
}

function sectorFlag(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const v = parseSize(text, flag);
  if (v !== 512 && v !== 4096) throw new VhdsyncError('USAGE', `${flag} must be 512 or 4096 (got '${text}')`);
  return v;
}
