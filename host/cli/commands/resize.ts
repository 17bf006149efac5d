import type { Command } from 'commander';
import { parseResizeTarget, resizeImage } from '../../disk/index.js';
import { VhdsyncError } from '../../errors.js';
import { pathExists } from '../../fsutil.js';
import { checkpointPathFor, overlayPathFor } from '../../resync/paths.js';
import type { ImageFormat } from '../../disk/detect.js';
import { formatSize, parseSize } from '../../units.js';
import { formatOption } from '../format-flag.js';
import { printJson } from '../output.js';

interface ResizeFlags {
  shrink?: boolean;
  format?: ImageFormat;
  wait?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('resize')
    .description('Grow a raw, VHD or VHDX image in place, crash-safe (qemu-img resize cannot grow a VHD); shrink only a raw image or fixed VHD, with --shrink')
    .addHelpText(
      'after',
      '\nGrowing is crash-safe: a kill leaves the old size or the new one, the new part reads as zeros. Shrinking is refused\n' +
        'unless --shrink (raw and fixed VHD only; never a dynamic VHD or a VHDX). Differencing disks are refused; do not\n' +
        'resize a disk that is the parent of others. A replicated VM: with the VM off, resize the primary and its replica\n' +
        'to the same size; the next run asks for one resync, which follows the new size (resume-replication --resynchronize).\n',
    )
    .argument('<image>', 'the image to resize')
    .argument('<size>', "new size: bytes or 10G, 512M, ... (a multiple of the sector size), or +N to grow by N (shrink by N: -- -N)")
    .option('--shrink', 'allow a smaller size for a raw image or a fixed VHD: the data past the new end is lost')
    .addOption(formatOption())
    .option('--wait', 'when another process is writing the image, wait for it instead of refusing')
    .option('--json', 'print the result as JSON')
    .action(async (image: string, sizeText: string, flags: ResizeFlags) => {
      const target = parseResizeTarget(sizeText, (t) => parseSize(t, 'size'));
      const r = await resizeImage(image, target, {
        shrink: flags.shrink === true,
        format: flags.format,
        wait: flags.wait === true,
        onWait: (h) => process.stderr.write(`vhdsync: ${image} is in use${h ? ` by process ${h.pid} on ${h.host} (since ${h.since})` : ''}; waiting…\n`),
        beforeWrite: async () => {
          // A paused or interrupted resync keeps an overlay over this replica (of its current size) and a checkpoint.
          if ((await pathExists(checkpointPathFor(image))) || (await pathExists(overlayPathFor(image)))) {
            throw new VhdsyncError(
              'STATE',
              `${image}: a resynchronization of this replica is unfinished (its overlay or checkpoint is beside it); let it finish (vhdsync resync again) or cancel it (vhdsync resync --cancel ${image}) before resizing`,
            );
          }
        },
      });
      if (flags.json) {
        printJson(r);
        return;
      }
      for (const n of r.notes) process.stderr.write(`vhdsync: ${n}\n`);
      const kind = `${r.type} ${r.format === 'raw' ? 'raw image' : r.format.toUpperCase()}`;
      process.stdout.write(
        r.changed
          ? `resized ${image}: ${kind}, ${formatSize(r.oldSize)} (${r.oldSize} bytes) -> ${formatSize(r.newSize)} (${r.newSize} bytes)\n`
          : `${image}: ${kind} is already ${formatSize(r.newSize)} (${r.newSize} bytes); nothing changed\n`,
      );
    });
}
